"""Measure a UniF²ace model on a SynthFace split: fine-grained VQA, captions, and text-to-face generation.

Understanding: each face gets SynthFace's own question mix (open, yes/no and reasoning questions drawn from its exact
attributes with a fixed seed), answered greedily and scored by exact match after normalising case, spaces and the
final full stop; accuracy is reported per attribute category (reasoning questions as one "reasoning" category) and
as their mean. Captions are read back with `parse_caption` and scored against the exact attributes (precision) and
against what the split's reference caption says (recall). Generation: each reference caption is the prompt; the
attribute judge reads the generated face and is scored on the categories the caption mentions. Diversity is the
share of image codes that differ between two seeds of the same prompt.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from ..data.synthface.qa import make_qa
from .attribute_judge import AttributeJudge
from .caption_parser import parse_caption

REASONING = "reasoning"


def normalise_answer(text: str) -> str:
    """Case, inner spaces and a final full stop do not count against an answer."""
    return " ".join(str(text).lower().split()).rstrip(".").strip()


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _per_category(hits: dict[str, list[bool]]) -> dict[str, float]:
    return {category: _mean([float(h) for h in hits[category]]) for category in sorted(hits)}


@torch.no_grad()
def generate_text(
    model, processor, images: Sequence, questions: Sequence[str | None], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy answers (or captions, where the question is None), a batch of left-padded prompts at a time."""
    texts: list[str] = []
    special = model.config.non_text_token_ids()
    for start in range(0, len(images), batch_size):
        inputs = processor.build_mmu_inputs(
            list(images[start : start + batch_size]), list(questions[start : start + batch_size])
        )
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        sequences = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, suppress_tokens=special)
        new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
        texts.extend(text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True))
    return texts


def evaluate_understanding(
    model, processor, rows: Sequence[dict[str, Any]], seed: int = 0, batch_size: int = 32, caption_tokens: int = 160
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores, and one record per question and per caption (what was asked, the truth, what the model said), so a
    low score can be read answer by answer."""
    images, questions, answers, categories, faces, question_kinds = [], [], [], [], [], []
    for index, row in enumerate(rows):
        for pair in make_qa(row["attributes"], random.Random(seed * 1_000_003 + index)):
            images.append(row["image"])
            questions.append(pair.question)
            answers.append(pair.answer)
            categories.append(REASONING if pair.kind == "reasoning" else pair.category)
            faces.append(row.get("id", index))
            question_kinds.append(pair.kind)
    longest = max((len(processor.tokenizer(a)["input_ids"]) for a in answers), default=1)
    predicted = generate_text(model, processor, images, questions, longest + 4, batch_size)
    hits: dict[str, list[bool]] = defaultdict(list)
    records: list[dict[str, Any]] = []
    for face, category, question_kind, question, answer, guess in zip(
        faces, categories, question_kinds, questions, answers, predicted
    ):
        correct = normalise_answer(guess) == normalise_answer(answer)
        hits[category].append(correct)
        records.append(
            {
                "kind": "vqa",
                "face": face,
                "category": category,
                "question_kind": question_kind,  # open, presence, value or reasoning
                "question": question,
                "answer": answer,
                "prediction": guess,
                "correct": correct,
            }
        )
    per_category = _per_category(hits)

    captions = generate_text(
        model, processor, [r["image"] for r in rows], [None] * len(rows), caption_tokens, batch_size
    )
    asserted = correct = mentioned = recalled = 0
    for index, (row, caption) in enumerate(zip(rows, captions)):
        truth, said, claimed = row["attributes"], parse_caption(row["caption"]), parse_caption(caption)
        asserted += len(claimed)
        correct += sum(truth[c] == v for c, v in claimed.items())
        mentioned += len(said)
        recalled += sum(claimed.get(c) == v for c, v in said.items())
        records.append(
            {
                "kind": "caption",
                "face": row.get("id", index),
                "reference": row["caption"],
                "prediction": caption,
                "wrong_attributes": sorted(c for c, v in claimed.items() if truth[c] != v),
            }
        )
    summary = {
        "vqa_exact_match": _mean(list(per_category.values())),
        "vqa_exact_match_micro": _mean([float(h) for v in hits.values() for h in v]),
        "num_questions": len(questions),
        "per_category": per_category,
        "caption_attribute_precision": correct / asserted if asserted else 0.0,
        "caption_attribute_recall": recalled / mentioned if mentioned else 0.0,
        "caption_examples": [{"reference": r["caption"], "generated": c} for r, c in list(zip(rows, captions))[:3]],
    }
    return summary, records


def evaluate_generation(
    pipe,
    rows: Sequence[dict[str, Any]],
    judge: AttributeJudge,
    num_inference_steps: int = 12,
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 16,
    diversity_prompts: int = 16,
) -> tuple[dict[str, Any], list]:
    prompts = [row["caption"] for row in rows]
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images.extend(
            pipe(
                chunk,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generators,
            ).images
        )
    judged = judge(images)
    hits: dict[str, list[bool]] = defaultdict(list)
    for row, reading in zip(rows, judged):
        for category, value in parse_caption(row["caption"]).items():
            hits[category].append(reading[category] == value)
    per_category = _per_category(hits)

    # Diversity: two more seeds for the first prompts; the share of codes that differ between them.
    probe = prompts[:diversity_prompts]
    codes = [
        pipe(
            probe,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator().manual_seed(10_000 * k + seed + i) for i in range(len(probe))],
            output_type="codes",
        ).images
        for k in (1, 2)
    ]
    diversity = float((codes[0] != codes[1]).float().mean()) if probe else float("nan")
    results = {
        "judge_attribute_accuracy": _mean(list(per_category.values())),
        "judge_attribute_accuracy_micro": _mean([float(h) for v in hits.values() for h in v]),
        "per_category": per_category,
        "diversity": diversity,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
    }
    return results, images


def markdown_table(results: dict[str, Any]) -> str:
    """The headline numbers and per-category accuracies as a markdown table."""
    und, gen = results.get("understanding", {}), results.get("generation", {})
    lines = [
        f"**{results.get('model', '')}** on SynthFace `{results.get('split', '')}` ({results.get('num_examples')} faces)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for section, keys in (
        (und, ("vqa_exact_match", "vqa_exact_match_micro", "caption_attribute_precision", "caption_attribute_recall")),
        (gen, ("judge_attribute_accuracy", "judge_attribute_accuracy_micro", "diversity")),
    ):
        lines += [f"| {key} | {section[key]:.3f} |" for key in keys if key in section]
    categories = sorted(set(und.get("per_category", {})) | set(gen.get("per_category", {})))
    if categories:
        lines += ["", "| category | VQA exact match | generation (judge) |", "|---|---|---|"]
        for category in categories:
            cells = [section.get("per_category", {}).get(category) for section in (und, gen)]
            lines.append(f"| {category} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate_generation", "evaluate_understanding", "generate_text", "markdown_table", "normalise_answer"]
