"""`unif2ace demo`: what `make demo` runs (the default model end to end, then the Show-o conversion check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate, edit and answer with the default model; write PNGs and index.html",
        description="Faces from detailed captions, a hair-colour edit, answers about them and about a real "
        "photograph, then the Show-o conversion check. Offline; about a minute on a laptop CPU.",
    )
    parser.add_argument("--output-dir", default="demo_outputs", help="where the PNGs and index.html go")
    parser.add_argument("--model", default="default", help="model folder, or 'default' (unif2ace_hf.DEFAULT_MODEL)")
    parser.add_argument("--skip-conversion", action="store_true", help="leave out the Show-o conversion check")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import main

    if args.model != "default" and not Path(args.model).is_dir():
        print(f"unif2ace demo: error: --model: {args.model!r} is not a model folder", file=sys.stderr)
        return 2
    main(output_dir=args.output_dir, model=args.model, conversion=not args.skip_conversion)
    return 0
