"""`unif2ace data ...`: write SynthFace, convert UniF²ace-130K-style data, train the attribute judge."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its sub-commands (`synthface`, `convert`, `train-judge`)."""
    data = subparsers.add_parser("data", help="build, convert and publish face data sets")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: _help(data))

    synthface = commands.add_parser(
        "synthface", help="render SynthFace as parquet shards plus a dataset card (load with datasets.load_dataset)"
    )
    synthface.add_argument("--num-images", type=int, required=True, help="rows over all four splits (>= 4)")
    synthface.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    synthface.add_argument("--seed", type=int, default=0, help="same seed -> identical data")
    synthface.add_argument("--output-dir", required=True, help="new or empty folder")
    synthface.add_argument("--rows-per-shard", type=int, default=1000)
    synthface.add_argument(
        "--balanced-yes-no",
        nargs="?",
        const="pooled",
        default=False,
        choices=["pooled", "per-question"],
        help="training data: 'pooled' (the flag alone): half of each face's yes/no questions are answered yes; "
        "'per-question': each presence question is answered yes on half of the faces it is asked about, so the "
        "question alone never predicts the answer (default: the natural mix, which leans to no and is what "
        "evaluation uses)",
    )
    synthface.add_argument(
        "--yes-no-questions",
        type=int,
        default=3,
        help="yes/no questions per face (default 3, next to 3 open and 2 reasoning questions; evaluation uses 3)",
    )
    synthface.add_argument(
        "--value-pairs",
        type=int,
        default=0,
        help="training data: N value categories per face asked both ways (true and false value), on top of the "
        "yes/no questions, which then ask about presence only (default 0: off)",
    )
    synthface.set_defaults(func=run_synthface)

    convert = commands.add_parser(
        "convert", help="convert LLaVA/caption JSON(L) or parquet face data to parquet + card"
    )
    convert.add_argument("source", help="folder (searched recursively) or annotation file")
    convert.add_argument("--output-dir", required=True, help="new or empty folder")
    convert.add_argument(
        "--skip-bad-rows", action="store_true", help="skip malformed rows and report them instead of stopping"
    )
    convert.add_argument("--rows-per-shard", type=int, default=1000)
    convert.set_defaults(func=run_convert)

    from ..evaluation.train_judge import build_parser

    build_parser(
        commands.add_parser("train-judge", help="train the SynthFace attribute judge and report held-out accuracy")
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_synthface(args: argparse.Namespace) -> int:
    from ..data.synthface.builder import split_sizes, write_synthface

    try:
        sizes = split_sizes(args.num_images)
        write_synthface(
            args.output_dir,
            args.num_images,
            size=args.size,
            seed=args.seed,
            rows_per_shard=args.rows_per_shard,
            balanced_yes_no=args.balanced_yes_no,
            yes_no_questions=args.yes_no_questions,
            value_pairs=args.value_pairs,
        )
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote SynthFace to {args.output_dir}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..data.unif2ace_130k import MalformedRowError, convert_unif2ace_130k

    try:
        report = convert_unif2ace_130k(
            args.source, args.output_dir, skip_bad_rows=args.skip_bad_rows, rows_per_shard=args.rows_per_shard
        )
    except MalformedRowError as error:
        print(f"error: {error}\n(use --skip-bad-rows to skip malformed rows and count them)", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {args.output_dir}")
    return 0
