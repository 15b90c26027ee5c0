"""Understanding supervision per second of training: one question per understanding row against packed rows.

A packed row (`data.questions_per_image`) puts several SynthFace questions after one image; each sees only the image
and itself, so it gives the losses of separate rows while the 256 image tokens (most of a row) are computed once.
A step is the trainer's: the collator's mixed batch, the objective, backward, clipping and AdamW, on the
tiny-synthface model (the default model's architecture), batch 16, real SynthFace captions and questions with random
codes. Reported: step time, and per second the answered questions (segments), supervised answer tokens and
text-to-image rows. Variants run interleaved in one process on copies of one initialisation.

    .venv/bin/python benchmarks/bench_packed_questions.py [--repeats 6] [--threads 2] [--output benchmarks/results_packed_questions.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

from bench_common import interleaved_samples, machine_info
from bench_train import train_step, with_semantic_features
from unif2ace_hf.data.synthface.builder import generate_rows
from unif2ace_hf.training.collator import TrainingCollator
from unif2ace_hf.training.model_setup import build_model
from unif2ace_hf.training.objective import TrainingObjective
from unif2ace_hf.training.recipes import load_recipe

VARIANTS = {
    # name: collator settings (the first is the recipe's; the second the packed stage of docs/default_model.md)
    "one_question": dict(t2i_fraction=0.5, caption_qa_fraction=0.2, questions_per_image=1),
    "packed_4_t2i_0.56": dict(t2i_fraction=0.5625, caption_qa_fraction=0.5, questions_per_image=4),
    "packed_4": dict(t2i_fraction=0.5, caption_qa_fraction=0.5, questions_per_image=4),
    "packed_8": dict(t2i_fraction=0.5, caption_qa_fraction=0.5, questions_per_image=8),
}


def synthface_rows(processor, count: int) -> list[dict]:
    """Rows as the trainer hands them to the collator: real captions and questions, random codes."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index, row in enumerate(generate_rows("train", count, size=64, seed=0)):
        codes = torch.randint(0, processor.codebook_size, (processor.num_image_tokens,), generator=generator)
        rows.append({"codes": codes.tolist(), "caption": row["caption"], "qa": row["qa"], "_epoch": 0, "_index": index})
    return rows


def batch_counts(batch: dict) -> dict[str, int]:
    segments = batch.get("segment_ids")
    mmu_rows = batch["mask_ratio"] == 0
    questions = int(segments.amax(dim=1)[mmu_rows].sum()) if segments is not None else int(mmu_rows.sum())
    return {
        "questions": questions,
        "answer_tokens": int(batch["num_mmu_tokens"]),
        "t2i_rows": int((~mmu_rows).sum()),
        "length": int(batch["input_ids"].shape[1]),
    }


def make_step(objective, batches: list[dict]):
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5, fused=True)
    position = [0]

    def step() -> None:
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        train_step(objective, optimizer, batch, torch.float32)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results_packed_questions.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor, scheduler = build_model(load_recipe("tiny-synthface"))
    model.vq_model.requires_grad_(False)
    rows = with_semantic_features(model, synthface_rows(processor, args.batch_size * 4))
    steps, counts = {}, {}
    for name, settings in VARIANTS.items():
        collator = TrainingCollator(processor, scheduler, seed=0, **settings)
        batches = [collator(rows[i : i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]
        per_batch = [batch_counts(batch) for batch in batches]
        counts[name] = {key: statistics.mean(c[key] for c in per_batch) for key in per_batch[0]}
        steps[name] = make_step(TrainingObjective(copy.deepcopy(model)).train(), batches)
    samples = interleaved_samples(steps, args.repeats)
    base = "one_question"
    rows_out = []
    for name in VARIANTS:
        seconds = statistics.median(samples[name])
        row = {"variant": name, **VARIANTS[name], "step_s": seconds, **counts[name]}
        row["questions_per_s"] = counts[name]["questions"] / seconds
        row["answer_tokens_per_s"] = counts[name]["answer_tokens"] / seconds
        row["t2i_rows_per_s"] = counts[name]["t2i_rows"] / seconds
        rows_out.append(row)
    for row in rows_out:
        row["questions_per_s_vs_one_question"] = row["questions_per_s"] / rows_out[0]["questions_per_s"]
    result = {
        "machine": machine_info(args.threads),
        "batch_size": args.batch_size,
        "baseline": base,
        "rows": rows_out,
        "samples_s": samples,
    }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'variant':20s} {'step (s)':>9s} {'length':>7s} {'questions/s':>12s} {'vs one':>7s} {'t2i rows/s':>11s}")
    for row in rows_out:
        print(
            f"{row['variant']:20s} {row['step_s']:9.3f} {row['length']:7.0f} {row['questions_per_s']:12.1f} "
            f"{row['questions_per_s_vs_one_question']:7.2f} {row['t2i_rows_per_s']:11.1f}"
        )


if __name__ == "__main__":
    main()
