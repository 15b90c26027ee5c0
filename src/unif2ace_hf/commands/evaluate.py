"""`unif2ace eval`: score a model on a SynthFace split (understanding and generation) into JSON and markdown."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score a model on a SynthFace split: VQA exact match, caption attributes, judged generation",
        description="Writes OUTPUT (JSON: understanding and generation sections) and OUTPUT with .md (a table), "
        "and prints the table.",
    )
    parser.add_argument("--model", required=True, help="model folder, or 'default' for unif2ace_hf.DEFAULT_MODEL")
    parser.add_argument("--data", required=True, help="SynthFace folder (from `unif2ace data synthface`)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--num-examples", type=int, default=None, help="score the first N faces (default: all)")
    parser.add_argument("--num-inference-steps", type=int, default=12, help="generation steps (default 12)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batch (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the model runs, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--skip-generation", action="store_true", help="understanding only")
    parser.add_argument("--skip-understanding", action="store_true", help="generation only")
    parser.add_argument("--images-dir", default=None, help="also save the generated faces here as PNGs")
    parser.add_argument(
        "--predictions",
        default=None,
        help="also write every question, caption and the model's answer here (JSON lines), to read errors one by one",
    )
    parser.set_defaults(func=run_eval)


def _check(args: argparse.Namespace) -> None:
    if args.num_examples is not None and args.num_examples < 1:
        raise ValueError(f"--num-examples: must be >= 1, got {args.num_examples}")
    if args.num_inference_steps < 1:
        raise ValueError(f"--num-inference-steps: must be >= 1, got {args.num_inference_steps}")
    if args.guidance_scale < 0:
        raise ValueError(f"--guidance-scale: must be >= 0, got {args.guidance_scale}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.predictions and args.skip_understanding:
        raise ValueError("--predictions: records understanding answers, which --skip-understanding turns off")
    if args.skip_generation and args.skip_understanding:
        raise ValueError("--skip-generation and --skip-understanding: nothing left to score")
    if not Path(args.data).is_dir():
        raise ValueError(f"--data: {args.data!r} is not a folder")
    _check_device(args.device)


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {name!r} asked for, but torch sees no CUDA device")


def _load_rows(data: str, split: str, limit: int | None) -> list[dict]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(data, split=split)
    except ValueError as error:
        raise ValueError(f"--split: {split!r} cannot be loaded from {data!r}: {error}") from error
    missing = [c for c in ("image", "caption", "attributes") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"--data: split {split!r} lacks the column(s) {missing}; is it a SynthFace folder?")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return [dataset[i] for i in range(len(dataset))]


def run_eval(args: argparse.Namespace) -> int:
    try:
        _check(args)
        rows = _load_rows(args.data, args.split, args.num_examples)
        if not rows:
            raise ValueError(f"--split: {args.split!r} of {args.data!r} is empty")
        from .. import DEFAULT_MODEL
        from ..evaluation.attribute_judge import AttributeJudge
        from ..evaluation.model_eval import evaluate_generation, evaluate_understanding, markdown_table
        from ..pipelines.pipeline_unif2ace import UniF2acePipeline

        path = DEFAULT_MODEL if args.model == "default" else args.model
        if path is None or not Path(path).is_dir():
            raise ValueError(f"--model: {args.model!r} is not a model folder")
        pipe = UniF2acePipeline.from_pretrained(path).to(args.device)
    except ValueError as error:
        print(f"unif2ace eval: error: {error}", file=sys.stderr)
        return 2
    pipe.set_progress_bar_config(disable=True)
    results = {"model": str(args.model), "split": args.split, "num_examples": len(rows)}
    started = time.perf_counter()
    if not args.skip_understanding:
        results["understanding"], records = evaluate_understanding(
            pipe.model, pipe.processor, rows, seed=args.seed, batch_size=args.batch_size
        )
        if args.predictions:
            predictions = Path(args.predictions)
            predictions.parent.mkdir(parents=True, exist_ok=True)
            predictions.write_text("".join(json.dumps(record) + "\n" for record in records))
    if not args.skip_generation:
        results["generation"], images = evaluate_generation(
            pipe,
            rows,
            AttributeJudge.load_default(),
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        if args.images_dir:
            folder = Path(args.images_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for row, image in zip(rows, images):
                image.save(folder / f"{row.get('id', len(list(folder.iterdir())))}.png")
    results["seconds"] = round(time.perf_counter() - started, 1)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    output.with_suffix(".md").write_text(table)
    print(table)
    return 0
