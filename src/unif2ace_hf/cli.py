"""The `unif2ace` command: one sub-command module per job under `unif2ace_hf.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `register(subparsers)`, which adds its sub-command(s) and sets `func` on the parser.
COMMAND_MODULES = (
    "unif2ace_hf.commands.card",
    "unif2ace_hf.commands.convert",
    "unif2ace_hf.commands.data",
    "unif2ace_hf.commands.demo",
    "unif2ace_hf.commands.evaluate",
    "unif2ace_hf.commands.tokenizer",
    "unif2ace_hf.commands.text_tokenizer",
    "unif2ace_hf.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unif2ace", description="UniF²ace on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
