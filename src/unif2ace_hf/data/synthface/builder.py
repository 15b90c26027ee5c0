"""Building SynthFace rows and splits: in process as a `DatasetDict`, or on disk as parquet shards + card."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from ..features import face_features
from ..publish import write_dataset
from .captions import make_caption
from .qa import NUM_YES_NO_QUESTIONS, check_balance, make_qa
from .render import render
from .sampler import NOVEL_PAIRS
from .sampler import sample_attributes as _sample
from .taxonomy import GROUPS, TAXONOMY, num_values

SPLIT_FRACTIONS = {"validation": 0.05, "test": 0.05, "novel": 0.10}  # train gets the rest


def split_sizes(num_images: int) -> dict[str, int]:
    """How `num_images` are divided over train/validation/test/novel (each held-out split gets at least one)."""
    if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 4:
        raise ValueError(f"`num_images` must be an integer >= 4 (one per split), got {num_images!r}.")
    sizes = {split: max(1, round(num_images * fraction)) for split, fraction in SPLIT_FRACTIONS.items()}
    return {"train": num_images - sum(sizes.values()), **sizes}


def row_rng(seed: int, split: str, index: int) -> random.Random:
    """Each row has its own random stream, so rows do not depend on sharding or on other splits."""
    return random.Random(f"synthface/{seed}/{split}/{index}")


def make_row(
    seed: int,
    split: str,
    index: int,
    size: int,
    **question_mix: Any,
) -> dict[str, Any]:
    """One dataset row: id, PNG image, caption, question-answer pairs and the exact attributes.

    `question_mix` are `make_qa`'s options (`balanced_yes_no`, `num_yes_no`, `value_pairs`). The questions are drawn
    last, so the mix changes only the `qa` column, never the image or caption.
    """
    rng = row_rng(seed, split, index)
    attributes = _sample(rng, novel=split == "novel")
    image = render(attributes, size=size, seed=rng.getrandbits(31))
    caption, _ = make_caption(attributes, rng)
    qa = [{"question": p.question, "answer": p.answer} for p in make_qa(attributes, rng, **question_mix)]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    row_id = f"synthface-{split}-{index:07d}"
    return {
        "id": row_id,
        "image": {"bytes": buffer.getvalue(), "path": f"{row_id}.png"},
        "caption": caption,
        "qa": qa,
        "attributes": attributes,
    }


def _check(size: int, seed: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 1024:
        raise ValueError(f"`size` must be an integer between 16 and 1024, got {size!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")


def _question_mix(balanced_yes_no: bool | str, yes_no_questions: int, value_pairs: int) -> dict[str, Any]:
    """The builders' question options, checked once, as `make_qa` keyword arguments."""
    check_balance(balanced_yes_no)
    for name, count in (("yes_no_questions", yes_no_questions), ("value_pairs", value_pairs)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, got {count!r}.")
    return {"balanced_yes_no": balanced_yes_no, "num_yes_no": yes_no_questions, "value_pairs": value_pairs}


def generate_rows(
    split: str,
    num_rows: int,
    size: int = 64,
    seed: int = 0,
    **question_mix: Any,
) -> Iterator[dict[str, Any]]:
    """Yield `num_rows` rows of `split` (`question_mix`: `make_qa`'s options)."""
    if split not in ("train", "validation", "test", "novel"):
        raise ValueError(f"`split` must be train, validation, test or novel, got {split!r}.")
    for index in range(num_rows):
        yield make_row(seed, split, index, size, **question_mix)


def build_synthface(
    num_images: int,
    size: int = 64,
    seed: int = 0,
    balanced_yes_no: bool | str = False,
    yes_no_questions: int = NUM_YES_NO_QUESTIONS,
    value_pairs: int = 0,
) -> DatasetDict:
    """Build SynthFace in memory (datasets 5 has no loading scripts; this is the in-process entry point)."""
    _check(size, seed)
    mix = _question_mix(balanced_yes_no, yes_no_questions, value_pairs)
    features = face_features()
    return DatasetDict(
        {
            split: Dataset.from_list(list(generate_rows(split, n, size, seed, **mix)), features=features)
            for split, n in split_sizes(num_images).items()
        }
    )


def taxonomy_table() -> str:
    """The taxonomy as a markdown table (for the dataset card and the docs)."""
    lines = ["| group | category | values |", "|---|---|---|"]
    for category, values in TAXONOMY.items():
        lines.append(f"| {GROUPS[category]} | `{category}` | {', '.join(values)} |")
    return "\n".join(lines)


def novel_pairs_table() -> str:
    return "\n".join(f"- `{a}={av}` together with `{b}={bv}`" for (a, av), (b, bv) in NOVEL_PAIRS)


def write_synthface(
    output_dir: str | Path,
    num_images: int,
    size: int = 64,
    seed: int = 0,
    rows_per_shard: int = 1000,
    balanced_yes_no: bool | str = False,
    yes_no_questions: int = NUM_YES_NO_QUESTIONS,
    value_pairs: int = 0,
) -> Path:
    """Write SynthFace to `output_dir` as parquet shards and a dataset card; `load_dataset(output_dir)` reads it."""
    _check(size, seed)
    mix = _question_mix(balanced_yes_no, yes_no_questions, value_pairs)
    sizes = split_sizes(num_images)
    splits = {
        split: (n, lambda split=split, n=n: generate_rows(split, n, size, seed, **mix)) for split, n in sizes.items()
    }
    return write_dataset(
        output_dir,
        splits,
        face_features(),
        card_template="synthface_card.md",
        card_fields={
            "license": "apache-2.0",
            "pretty_name": "SynthFace",
            "language": ["en"],
            "task_categories": ["text-to-image", "visual-question-answering", "image-to-text"],
            "tags": ["faces", "synthetic", "fine-grained", "unif2ace"],
            "size_categories": [_size_category(num_images)],
        },
        template_kwargs={
            "num_images": num_images,
            "image_size": size,
            "seed": seed,
            "num_categories": len(TAXONOMY),
            "num_values": num_values(),
            "taxonomy_table": taxonomy_table(),
            "novel_pairs": novel_pairs_table(),
            "command": f"unif2ace data synthface --num-images {num_images} --size {size} --seed {seed}"
            + (" --balanced-yes-no" if balanced_yes_no else "")
            + (" per-question" if balanced_yes_no == "per-question" else "")
            + (f" --yes-no-questions {yes_no_questions}" if yes_no_questions != NUM_YES_NO_QUESTIONS else "")
            + (f" --value-pairs {value_pairs}" if value_pairs else "")
            + " --output-dir DIR",
            "yes_no_mix": (
                "balanced per question (each presence question is answered yes on half of the faces it is asked about)"
                if balanced_yes_no == "per-question"
                else "balanced (half of the yes/no answers are yes)"
                if balanced_yes_no
                else "natural"
            ),
            "yes_no_questions": yes_no_questions,
            "value_pairs": value_pairs,
        },
        rows_per_shard=rows_per_shard,
    )


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"
