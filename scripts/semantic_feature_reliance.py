"""Which answers a model reads from its semantic encoder: understanding scored as usual, then again with every
face's semantic features swapped for another face's (docs/default_model.md, issue 8).

The image codes stay the face's own, so an answer that survives the swap was read from the codes (or guessed from
the question); one that breaks was read from the semantic features. Reported per question kind (open, presence,
value, reasoning) and for captions. Faces are matched to their features by nearest neighbour, because the encoder
sees each image once per question, in batches of mixed faces.

    python scripts/semantic_feature_reliance.py --data SYNTHFACE_DIR [--model default|DIR] [--split test]
        [--num-examples 64] [--output reliance.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from unif2ace_hf import DEFAULT_MODEL
from unif2ace_hf.commands.evaluate import _load_rows
from unif2ace_hf.evaluation.model_eval import evaluate_understanding
from unif2ace_hf.pipelines.pipeline_unif2ace import UniF2acePipeline


def per_kind(records: list[dict]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        if record["kind"] == "vqa":
            counts[record["question_kind"]][0] += record["correct"]
            counts[record["question_kind"]][1] += 1
    return dict(counts)


def swap_semantic_features(model, processor, images: list) -> torch.utils.hooks.RemovableHandle:
    """Make the model's semantic encoder return, for each image, the features of the face half the list away."""
    encoder = model.semantic_encoder
    with torch.no_grad():
        own = torch.cat([encoder(processor.image_processor([image])["pixel_values"]) for image in images])
    flat = own.flatten(1)
    shift = max(1, len(images) // 2)

    def hook(module, inputs, output):
        nearest = torch.cdist(output.flatten(1).to(flat.dtype), flat).argmin(dim=1)
        return own[(nearest + shift) % len(images)].to(output.dtype)

    return encoder.register_forward_hook(hook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model folder, or 'default' (unif2ace_hf.DEFAULT_MODEL)")
    parser.add_argument("--data", required=True, help="SynthFace folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-examples", type=int, default=64)
    parser.add_argument("--output", default=None, help="also write the counts here (JSON)")
    args = parser.parse_args(argv)
    path = DEFAULT_MODEL if args.model == "default" else args.model
    if path is None or not Path(path).is_dir():
        parser.error(f"--model: {args.model!r} is not a model folder")
    pipe = UniF2acePipeline.from_pretrained(path)
    if pipe.model.semantic_encoder is None:
        parser.error(f"--model: {args.model!r} has no semantic encoder")
    rows = _load_rows(args.data, args.split, args.num_examples)
    if len(rows) < 2:
        parser.error("--num-examples: swapping features needs at least two faces")

    own = evaluate_understanding(pipe.model, pipe.processor, rows)
    handle = swap_semantic_features(pipe.model, pipe.processor, [row["image"] for row in rows])
    try:
        swapped = evaluate_understanding(pipe.model, pipe.processor, rows)
    finally:
        handle.remove()
    report = {}
    print("| features | VQA (mean over categories) | open | presence | value | reasoning | caption precision |")
    print("|---|---|---|---|---|---|---|")
    for name, (scores, records) in (("own", own), ("another face's", swapped)):
        kinds = per_kind(records)
        report[name] = {
            "vqa_exact_match": scores["vqa_exact_match"],
            "caption_attribute_precision": scores["caption_attribute_precision"],
            "per_kind": kinds,
        }
        cells = " | ".join(f"{kinds[k][0]}/{kinds[k][1]}" for k in ("open", "presence", "value", "reasoning"))
        print(f"| {name} | {scores['vqa_exact_match']:.3f} | {cells} | {scores['caption_attribute_precision']:.3f} |")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
