"""Where a training step of the default recipe spends its time on a GPU: the check to run first on a lent GPU,
before any long training run (docs/default_model.md, "six minutes of an H200": 0.78 s per step at batch 128).

One step is the trainer's: the collator's mixed batch (real SynthFace captions and questions, random image codes and
semantic features of the right shapes), the objective under bf16 autocast, backward, clipping, and the recipe's
optimizers (Muon for the hidden matrices, fused AdamW for the rest). Reported per step (median of `--steps` after
warm-ups): wall time of the forward, the backward and the optimizer (each closed by a device synchronise), the
kernels launched and their summed GPU time (so the idle share of the step), and on CUDA the host reads that
synchronise with the device (`torch.cuda.set_sync_debug_mode`), with the code lines that issue them. On a CPU it
runs as a dry run (no kernels, no sync counts).

    python benchmarks/gpu_profile_train_step.py --device cuda [--batch-size 128] [--output gpu_profile.json]
    .venv/bin/python benchmarks/gpu_profile_train_step.py --device cpu --batch-size 4 --steps 1   # dry run
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import step_loss, with_semantic_features  # noqa: E402
from unif2ace_hf.data.synthface.builder import generate_rows  # noqa: E402
from unif2ace_hf.training.codes_cache import CODES_COLUMN  # noqa: E402
from unif2ace_hf.training.collator import TrainingCollator  # noqa: E402
from unif2ace_hf.training.model_setup import build_model  # noqa: E402
from unif2ace_hf.training.objective import TrainingObjective  # noqa: E402
from unif2ace_hf.training.optimizers import make_training_optimizers  # noqa: E402
from unif2ace_hf.training.recipes import load_recipe  # noqa: E402


def training_batch(model, processor, scheduler, recipe: dict, size: int) -> dict[str, torch.Tensor]:
    """The collator's batch of `size` rows, as the trainer builds it (codes and features random, text real)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index, row in enumerate(generate_rows("train", size, size=64, seed=0)):
        codes = torch.randint(0, processor.codebook_size, (processor.num_image_tokens,), generator=generator)
        rows.append({CODES_COLUMN: codes, "caption": row["caption"], "qa": row["qa"], "_epoch": 0, "_index": index})
    rows = with_semantic_features(model, rows)
    data = recipe["data"]
    collator = TrainingCollator(
        processor,
        scheduler,
        seed=0,
        t2i_fraction=data["t2i_fraction"],
        caption_dropout=data["caption_dropout"],
        caption_qa_fraction=data["caption_qa_fraction"],
        max_answer_length=data["max_answer_length"],
        questions_per_image=5,
    )
    return collator(rows)


class SyncCounter:
    """Counts CUDA host synchronisations by the code line that issued them (sync debug mode 'warn')."""

    def __init__(self) -> None:
        self.lines: collections.Counter[str] = collections.Counter()

    def __enter__(self) -> SyncCounter:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")  # every sync, not the first per line
        torch.cuda.set_sync_debug_mode("warn")
        self._showwarning, warnings.showwarning = warnings.showwarning, self._record
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        frames = [f for f in traceback.extract_stack()[:-1] if "unif2ace_hf" in f.filename or "torch/" in f.filename]
        ours = [f for f in frames if "unif2ace_hf" in f.filename]
        frame = (ours or frames or [None])[-1]
        self.lines[f"{frame.filename.split('src/')[-1]}:{frame.lineno}" if frame else "?"] += 1

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode(0)
        warnings.showwarning = self._showwarning
        self._catch.__exit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output", default="gpu_profile_train_step.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    recipe = load_recipe("tiny-synthface")
    model, processor, scheduler = build_model(recipe)
    started = time.perf_counter()
    batch = training_batch(model, processor, scheduler, recipe, args.batch_size)
    collate_ms = round(1000 * (time.perf_counter() - started), 1)  # rows, features and collator: an upper bound
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    objective = TrainingObjective(model, recipe["loss"]["d3diff_alpha"], recipe["loss"]["masking_schedule"]).to(device)
    optimizers = make_training_optimizers(objective, recipe["training"])
    trainable = [p for p in objective.parameters() if p.requires_grad]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step(times: dict[str, list[float]] | None = None) -> None:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cuda else nullcontext()
        marks = [time.perf_counter()]
        with autocast:
            loss = step_loss(objective, batch)
        sync()
        marks.append(time.perf_counter())
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
        marks.append(time.perf_counter())
        if times is not None:
            for name, start, end in zip(("forward", "backward", "optimizer"), marks, marks[1:]):
                times[name].append(end - start)

    for _ in range(2):
        step()
    times: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(args.steps):
        step(times)
    ms = {name: round(1000 * statistics.median(values), 1) for name, values in times.items()}

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
    kernels = [e for e in prof.events() if cuda and e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.device_time for e in kernels) / 1000 if kernels else 0.0
    results = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "sequence_length": int(batch["input_ids"].shape[1]),
        "ms_per_step": ms,
        "ms_total": round(sum(ms.values()), 1),
        "kernels_per_step": len(kernels),
        "kernel_ms_per_step": round(kernel_ms, 1),
        "gpu_idle_share": round(1 - kernel_ms / sum(ms.values()), 3) if kernels else None,
        "top_kernels": collections.Counter(e.name[:80] for e in kernels).most_common(15),
        # where the host's time goes when the GPU idles: the ops with the largest self CPU time
        "top_cpu_ops_ms": [
            (e.key[:60], e.count, round(e.self_cpu_time_total / 1000, 1))
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]
        ],
        "collate_ms": collate_ms,
    }
    if cuda:
        with SyncCounter() as counter:
            step()
        results["host_syncs_per_step"] = sum(counter.lines.values())
        results["host_sync_lines"] = counter.lines.most_common(25)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k not in ("top_kernels", "host_sync_lines")}, indent=2))


if __name__ == "__main__":
    main()
