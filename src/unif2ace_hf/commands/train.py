"""`unif2ace train`: train or fine-tune UniF²ace from a recipe (joint understanding + generation, accelerate).

Runs under `accelerate launch` unchanged (e.g. `accelerate launch --num_processes 2 --cpu -m unif2ace_hf.cli train
...`).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune UniF2ace from a recipe (tiny-synthface, lora-finetune, or a YAML file)",
        description="Recipes: shipped names (tiny-synthface: from scratch; lora-finetune: LoRA on --init-from) or a "
        "YAML file (which may `extends:` a shipped recipe). Writes OUTPUT_DIR/metrics.jsonl (one row per step), "
        "OUTPUT_DIR/checkpoint-<step>/ and OUTPUT_DIR/final/.",
    )
    parser.add_argument("--recipe", required=True, help="recipe name or YAML file")
    parser.add_argument("--data", default=None, help="datasets folder (e.g. from `unif2ace data synthface`)")
    parser.add_argument("--output-dir", required=True, help="checkpoints, metrics.jsonl and final/")
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    parser.add_argument("--init-from", default=None, help="checkpoint folder to start from, or 'default'")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="resume from the latest checkpoint in --output-dir, or from the given checkpoint folder",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one recipe value (VALUE parsed as JSON when possible), e.g. --set training.batch_size=4",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)


def _overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected SECTION.KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parsed
    if args.data is not None:
        overrides.setdefault("data", {})["path"] = args.data
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps: must be >= 1, got {args.max_steps}")
        overrides.setdefault("training", {})["max_steps"] = args.max_steps
    if args.init_from is not None:
        overrides["init_from"] = args.init_from
        # the recipe's from-scratch settings do not apply to a checkpoint (an explicit --set still reaches the
        # trainer, which refuses it with a message)
        overrides["model"] = None
        overrides.setdefault("semantic_encoder", None)
    if args.no_progress:
        overrides.setdefault("training", {})["progress"] = False
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from ..training.recipes import load_recipe
    from ..training.trainer import UniF2aceTrainer

    try:
        recipe = load_recipe(args.recipe, _overrides(args))
        trainer = UniF2aceTrainer(recipe, args.output_dir, resume_from=args.resume)
    except ValueError as error:
        print(f"unif2ace train: error: {error}", file=sys.stderr)
        return 2
    final = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"trained {trainer.step} steps; model in {final}")
    return 0
