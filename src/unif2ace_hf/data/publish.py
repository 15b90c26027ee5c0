"""Writing a face dataset as Hub-style parquet shards plus a `README.md` dataset card.

The layout is what `Dataset.push_to_hub` produces (`data/{split}-{i:05d}-of-{n:05d}.parquet` and YAML
`configs:` / `dataset_info:`), so `datasets.load_dataset(folder)` and `upload_folder` both work on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import Dataset, DatasetInfo, Features
from datasets.splits import SplitDict, SplitInfo
from huggingface_hub import DatasetCard, DatasetCardData

SPLIT_ORDER = ("train", "validation", "test", "novel")


def card_template_path(name: str) -> str:
    """Path of a dataset card template shipped with the package (`data/card_templates/{name}`)."""
    path = resources.files("unif2ace_hf.data").joinpath("card_templates").joinpath(name)
    if not path.is_file():
        raise FileNotFoundError(f"Dataset card template {name!r} is not installed at {path}.")
    return str(path)


def write_split(
    rows: Iterable[dict[str, Any]], num_rows: int, split: str, output_dir: Path, features: Features, rows_per_shard: int
) -> int:
    """Write `num_rows` rows of one split as parquet shards; return the number of bytes written."""
    num_shards = max(1, math.ceil(num_rows / rows_per_shard))
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    written, total_bytes, shard, buffer = 0, 0, 0, []

    def flush() -> int:
        path = data_dir / f"{split}-{shard:05d}-of-{num_shards:05d}.parquet"
        # The arrow table carries the features in its schema metadata, so the Image type survives in parquet.
        pq.write_table(Dataset.from_list(buffer, features=features).data.table, str(path))
        return path.stat().st_size

    for row in rows:
        buffer.append(row)
        written += 1
        if len(buffer) == rows_per_shard:
            total_bytes += flush()
            shard, buffer = shard + 1, []
    if buffer or written == 0:
        total_bytes += flush()
    if written != num_rows:
        raise RuntimeError(f"Split {split!r} produced {written} rows, expected {num_rows}.")
    return total_bytes


def dataset_card_data(
    features: Features, split_sizes: Mapping[str, int], split_bytes: Mapping[str, int], **card_fields: Any
) -> DatasetCardData:
    """Card metadata with `configs:` pointing at the shards and `dataset_info:` describing the features."""
    splits = SplitDict()
    for split in split_sizes:
        splits.add(SplitInfo(name=split, num_examples=split_sizes[split], num_bytes=split_bytes.get(split, 0)))
    info = DatasetInfo(features=features, splits=splits)._to_yaml_dict()
    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in split_sizes],
        }
    ]
    return DatasetCardData(configs=configs, dataset_info=info, **card_fields)


def write_dataset(
    output_dir: str | Path,
    splits: Mapping[str, tuple[int, Callable[[], Iterable[dict[str, Any]]]]],
    features: Features,
    card_template: str,
    card_fields: Mapping[str, Any],
    template_kwargs: Mapping[str, Any],
    rows_per_shard: int = 1000,
) -> Path:
    """Write every split (`name -> (num_rows, make_rows)`) and render the card from `card_template`."""
    if rows_per_shard < 1:
        raise ValueError(f"`rows_per_shard` must be >= 1, got {rows_per_shard}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"`output_dir` {output_dir} exists and is not empty; choose a new folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    sizes, nbytes = {}, {}
    for split, (num_rows, make_rows) in splits.items():
        nbytes[split] = write_split(make_rows(), num_rows, split, output_dir, features, rows_per_shard)
        sizes[split] = num_rows
    card_data = dataset_card_data(features, sizes, nbytes, **card_fields)
    card = DatasetCard.from_template(
        card_data, template_path=card_template_path(card_template), split_sizes=sizes, **template_kwargs
    )
    card.save(str(output_dir / "README.md"))
    return output_dir
