"""`unif2ace train-text-tokenizer`: the default model's byte-level BPE, trained on a face dataset's captions and QA."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-text-tokenizer",
        help="train a byte-level BPE on the captions, questions and answers of a SynthFace/UniF2ace-130K-style dataset",
    )
    parser.add_argument("--data", required=True, help="dataset folder loadable with datasets.load_dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--vocab-size", type=int, default=2048, help="BPE merges + 256 bytes (Show-o's specials come on top)"
    )
    parser.set_defaults(func=run)


def dataset_texts(rows) -> Iterator[str]:
    """Every caption, question and answer of the rows (the text the model will read and write)."""
    for row in rows:
        if row.get("caption"):
            yield row["caption"]
        for pair in row.get("qa") or []:
            yield pair["question"]
            yield pair["answer"]


def run(args: argparse.Namespace) -> int:
    from datasets import load_dataset

    from unif2ace_hf.tokenization_unif2ace import train_byte_level_bpe

    if args.vocab_size < 300:
        raise ValueError(f"--vocab-size: {args.vocab_size} is too small (the byte alphabet alone is 256)")
    rows = load_dataset(args.data, split=args.split)
    rows = rows.remove_columns([c for c in ("image", "attributes") if c in rows.column_names])  # text only
    tokenizer = train_byte_level_bpe(dataset_texts(rows), vocab_size=args.vocab_size)
    tokenizer.save_pretrained(args.output_dir)
    sample = next(dataset_texts(rows.select(range(1))), "")
    print(f"trained a byte-level BPE of {len(tokenizer)} tokens on {len(rows)} rows -> {args.output_dir}")
    print(f"example: {sample[:80]!r} -> {len(tokenizer(sample)['input_ids'])} tokens")
    return 0
