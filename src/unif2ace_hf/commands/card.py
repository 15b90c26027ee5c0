"""`unif2ace card`: write a model card (README.md) from `unif2ace eval` result files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "card", help="write a model card (README.md) from `unif2ace eval` JSON results (one file per split)"
    )
    parser.add_argument(
        "--eval", dest="eval_files", action="append", default=[], metavar="JSON", help="repeat for more splits"
    )
    parser.add_argument("--output", required=True, help="where to write the card, e.g. MODEL_DIR/README.md")
    parser.add_argument("--repo-id", default="REPO_ID", help="the Hub repo id used in the card's examples")
    parser.add_argument("--model-name", help="the card's title and model-index name (default: the repo name)")
    parser.add_argument("--base-model", action="append", help="Hub id of the model this one was trained from")
    parser.add_argument("--dataset", action="append", help="Hub id of a training data set (default: synthface)")
    parser.add_argument("--license", default="apache-2.0")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub.model_card import load_eval_files, model_card_from_eval

    try:
        results = load_eval_files(args.eval_files)
        card = model_card_from_eval(
            results or None,
            repo_id=args.repo_id,
            model_name=args.model_name,
            base_model=args.base_model,
            datasets=args.dataset,
            license=args.license,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    card.save(str(output))
    measured = f"{len(results)} evaluation file(s)" if results else "no evaluation results (marked as not measured)"
    print(f"wrote a model card with {measured} -> {output}")
    return 0
