"""Loading and converting real face data in the layouts UniF²ace-130K-style sets are published in.

Supported sources (a folder, searched recursively, or a single annotation file):

- LLaVA-style conversation JSON/JSONL: `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}`,
  the first human turn usually carrying an `<image>` tag;
- caption JSON/JSONL: `{"image", "caption"}` (optionally `"id"`);
- parquet files with SynthFace's columns (`id`, `image`, `caption`, `qa`, `attributes`).

Rows about the same image are merged (its caption plus every question-answer pair). The split comes from
the file or folder name (`train`, `validation`/`val`/`dev`, `test`, `novel`; otherwise `train`). Any
malformed row stops the conversion with a `MalformedRowError` naming the file and row; with
`skip_bad_rows=True` it is skipped and counted in the `ConversionReport` instead. Never silently.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict
from PIL import Image

from .features import face_features
from .publish import SPLIT_ORDER, write_dataset
from .synthface.taxonomy import CATEGORIES

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "novel": "novel",
}


class MalformedRowError(ValueError):
    """A source row that cannot be converted; names the file, the row and what is wrong."""

    def __init__(self, file: str | Path, row_id: str, kind: str, detail: str):
        self.file, self.row_id, self.kind, self.detail = str(file), row_id, kind, detail
        super().__init__(f"{file}: row {row_id}: {kind}: {detail}")


@dataclass
class ConversionReport:
    """What a conversion kept and what it skipped (only non-empty with `skip_bad_rows=True`)."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[MalformedRowError] = field(default_factory=list)

    @property
    def skipped_by_kind(self) -> Counter:
        return Counter(error.kind for error in self.skipped)

    def summary(self) -> str:
        kept = ", ".join(f"{split}: {n}" for split, n in self.rows.items()) or "none"
        lines = [f"converted {sum(self.rows.values())} rows ({kept})"]
        if self.skipped:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.skipped_by_kind.items()))
            lines.append(f"skipped {len(self.skipped)} bad rows ({kinds})")
            lines.extend(f"  - {error}" for error in self.skipped)
        else:
            lines.append("skipped 0 bad rows")
        return "\n".join(lines)


@dataclass
class _Row:
    id: str
    split: str
    file: str
    image_path: Path | None = None
    image_bytes: bytes | None = None
    caption: str | None = None
    qa: list[dict[str, str]] = field(default_factory=list)
    attributes: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(CATEGORIES))


def _split_of(path: Path, root: Path) -> str:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts[-1:]
    for part in reversed(parts):
        stem = part.split(".")[0].lower()
        for token in (stem, stem.split("-")[0], stem.split("_")[0]):
            if token in _SPLIT_ALIASES:
                return _SPLIT_ALIASES[token]
    return "train"


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(fallback row id, record) for every record of a JSON or JSONL file; bad JSON becomes a bad row."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(line)
                except (json.JSONDecodeError, RecursionError) as error:
                    yield f"line {number}", MalformedRowError(path, f"line {number}", "invalid json", str(error))
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise MalformedRowError(path, "(whole file)", "invalid json", str(error)) from None
    if not isinstance(data, list):
        raise MalformedRowError(
            path, "(whole file)", "invalid json", "a .json annotation file must hold a list of records"
        )
    for index, record in enumerate(data):
        yield f"index {index}", record


def _check_image(path: Path, file: Path, row_id: str) -> None:
    try:
        exists = path.is_file()
    except (OSError, ValueError) as error:  # e.g. a name too long for the file system
        raise MalformedRowError(file, row_id, "missing image", f"`image` is not a usable path: {error}") from None
    if not exists:
        raise MalformedRowError(file, row_id, "missing image", f"{path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, EOFError, struct.error, ...
        raise MalformedRowError(file, row_id, "unreadable image", f"{path}: {error}") from None


def _check_image_bytes(data: Any, file: Path, row_id: str) -> None:
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise MalformedRowError(file, row_id, "missing image", "the image column holds no bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, EOFError, struct.error, ...
        raise MalformedRowError(file, row_id, "unreadable image", str(error)) from None


def _attributes(record: dict, file: Path, row_id: str) -> dict[str, str | None]:
    values = record.get("attributes")
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise MalformedRowError(file, row_id, "bad value", "`attributes` must be an object")
    unknown = sorted(set(values) - set(CATEGORIES))
    if unknown:
        raise MalformedRowError(file, row_id, "bad value", f"unknown attribute categories: {', '.join(unknown)}")
    bad = [k for k, v in values.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise MalformedRowError(file, row_id, "bad value", f"attribute values must be strings: {', '.join(bad)}")
    for category, value in values.items():
        if value is not None:
            _check_unicode(value, file, row_id, f"attribute {category}")
    return {category: values.get(category) for category in CATEGORIES}


def _qa_from_conversations(turns: Any, file: Path, row_id: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise MalformedRowError(file, row_id, "missing field", "`conversations` must be a non-empty list")
    pairs = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or "from" not in turn:
            raise MalformedRowError(file, row_id, "missing field", f"turn {index} needs `from` and a string `value`")
        expected = "human" if index % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise MalformedRowError(
                file, row_id, "non-alternating turns", f"turn {index} is from {turn['from']!r}, expected {expected!r}"
            )
    if len(turns) % 2:
        raise MalformedRowError(file, row_id, "non-alternating turns", "the last human turn has no gpt answer")
    for index, (question, answer) in enumerate(zip(turns[::2], turns[1::2])):
        text = question["value"].replace(IMAGE_TOKEN, "").strip()
        pair = {"question": text, "answer": answer["value"].strip()}
        for key, value in pair.items():
            _check_unicode(value, file, row_id, f"turn {2 * index + (key == 'answer')}")
        pairs.append(pair)
    return pairs


def _check_unicode(text: str, file: Path, row_id: str, where: str) -> None:
    """JSON can carry lone surrogates (`"\\ud800"`), which no UTF-8 file (parquet, arrow) can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedRowError(file, row_id, "bad value", f"{where} is not valid Unicode: {error.reason}") from None


def _resolve(image: str, file: Path, root: Path, row_id: str) -> Path:
    if "\x00" in image:
        raise MalformedRowError(file, row_id, "missing field", "`image` (a path) contains a NUL character")
    try:
        for base in (file.parent, root):
            candidate = (base / image).resolve()
            if candidate.exists():
                return candidate
        return (file.parent / image).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # too long, a symlink loop, not encodable, ...
        raise MalformedRowError(file, row_id, "missing image", f"`image` is not a usable path: {error}") from None


def _json_row(record: Any, fallback_id: str, file: Path, root: Path, split: str) -> _Row:
    if not isinstance(record, dict):
        raise MalformedRowError(file, fallback_id, "missing field", "a record must be a JSON object")
    row_id = record.get("id")
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, (str, int))):
        raise MalformedRowError(file, fallback_id, "bad value", "`id` must be a string or an integer")
    row_id = fallback_id if row_id is None else str(row_id)
    _check_unicode(row_id, file, fallback_id, "`id`")
    if not isinstance(record.get("image"), str) or not record["image"]:
        raise MalformedRowError(file, row_id, "missing field", "`image` (a path) is required")
    path = _resolve(record["image"], file, root, row_id)
    if "conversations" not in record and "caption" not in record:
        raise MalformedRowError(file, row_id, "missing field", "a record needs `conversations` or `caption`")
    qa, caption = [], None
    if "conversations" in record:
        qa = _qa_from_conversations(record["conversations"], file, row_id)
    if "caption" in record:  # kept next to `conversations` too: nothing is dropped
        if not isinstance(record["caption"], str) or not record["caption"].strip():
            raise MalformedRowError(file, row_id, "missing field", "`caption` must be a non-empty string")
        caption = record["caption"].strip()
        _check_unicode(caption, file, row_id, "`caption`")
    attributes = _attributes(record, file, row_id)
    _check_image(path, file, row_id)
    if record.get("id") is None:
        row_id = path.stem
    return _Row(row_id, split, str(file), image_path=path, caption=caption, qa=qa, attributes=attributes)


def _parquet_rows(file: Path, root: Path) -> Iterator[_Row | MalformedRowError]:
    table = pq.read_table(file)
    missing = [c for c in ("id", "image") if c not in table.column_names]
    if missing:
        raise MalformedRowError(file, "(whole file)", "missing field", f"parquet columns missing: {', '.join(missing)}")
    split = _split_of(file, root)
    for index, record in enumerate(table.to_pylist()):
        row_id = str(record["id"]) if record.get("id") is not None else f"index {index}"
        try:
            image = record.get("image")
            data = image.get("bytes") if isinstance(image, dict) else image
            _check_image_bytes(data, file, row_id)
            qa = record.get("qa") or []
            if not all(
                isinstance(p, dict) and isinstance(p.get("question"), str) and isinstance(p.get("answer"), str)
                for p in qa
            ):
                raise MalformedRowError(
                    file, row_id, "missing field", "every `qa` item needs string `question` and `answer`"
                )
            caption = record.get("caption")
            if caption is not None and not isinstance(caption, str):
                raise MalformedRowError(file, row_id, "bad value", "`caption` must be a string")
            attributes = _attributes(record, file, row_id)
            yield _Row(
                row_id, split, str(file), image_bytes=bytes(data), caption=caption, qa=list(qa), attributes=attributes
            )
        except MalformedRowError as error:
            yield error


def _merge(rows: dict[Any, _Row], row: _Row, key: Any) -> None:
    if key not in rows:
        rows[key] = row
        return
    kept = rows[key]
    if row.caption is not None and kept.caption is not None and row.caption != kept.caption:
        raise MalformedRowError(
            row.file, row.id, "duplicate", f"a second, different caption for {row.image_path or row.id}"
        )
    kept.caption = kept.caption if kept.caption is not None else row.caption
    kept.qa.extend(row.qa)
    for category, value in row.attributes.items():
        if kept.attributes[category] is None:
            kept.attributes[category] = value


def read_rows(source: str | Path, skip_bad_rows: bool = False) -> tuple[dict[str, list[_Row]], ConversionReport]:
    """Read and validate every row of `source`; return rows per split and the report."""
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"`source` {root} does not exist.")
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet"))
    )
    if not files:
        raise ValueError(f"`source` {root} holds no .json, .jsonl or .parquet annotation files.")
    base = root.parent if root.is_file() else root
    report = ConversionReport()
    merged: dict[Any, _Row] = {}

    def bad(error: MalformedRowError) -> None:
        if not skip_bad_rows:
            raise error
        report.skipped.append(error)

    for file in files:
        try:  # errors about a whole file (not JSON, no `id`/`image` columns) land here
            if file.suffix == ".parquet":
                for item in _parquet_rows(file, base):
                    try:
                        if isinstance(item, MalformedRowError):
                            raise item
                        _merge(merged, item, ("parquet", item.split, item.id))
                    except MalformedRowError as error:
                        bad(error)
                continue
            split = _split_of(file, base)
            for fallback_id, record in _records(file):
                try:
                    if isinstance(record, MalformedRowError):
                        raise record
                    row = _json_row(record, fallback_id, file, base, split)
                    _merge(merged, row, (split, row.image_path))
                except MalformedRowError as error:
                    bad(error)
        except MalformedRowError as error:
            bad(error)

    by_split: dict[str, list[_Row]] = {}
    for row in merged.values():
        by_split.setdefault(row.split, []).append(row)
    by_split = {split: by_split[split] for split in SPLIT_ORDER if split in by_split}
    report.rows = {split: len(rows) for split, rows in by_split.items()}
    if not by_split:
        raise ValueError(f"`source` {root}: no valid rows left to convert.\n{report.summary()}")
    return by_split, report


def _to_example(row: _Row) -> dict[str, Any]:
    data = row.image_bytes if row.image_bytes is not None else row.image_path.read_bytes()
    name = row.image_path.name if row.image_path is not None else f"{row.id}.png"
    return {
        "id": row.id,
        "image": {"bytes": data, "path": name},
        "caption": row.caption,
        "qa": row.qa,
        "attributes": row.attributes,
    }


def load_unif2ace_130k(source: str | Path, skip_bad_rows: bool = False) -> DatasetDict:
    """Load UniF²ace-130K-style data into a `DatasetDict` with the SynthFace features."""
    by_split, report = read_rows(source, skip_bad_rows)
    if report.skipped:
        logger.warning(report.summary())
    features = face_features()
    return DatasetDict(
        {
            split: Dataset.from_list([_to_example(r) for r in rows], features=features)
            for split, rows in by_split.items()
        }
    )


def convert_unif2ace_130k(
    source: str | Path, output_dir: str | Path, skip_bad_rows: bool = False, rows_per_shard: int = 1000
) -> ConversionReport:
    """Publish UniF²ace-130K-style data as parquet shards plus a dataset card in `output_dir`."""
    by_split, report = read_rows(source, skip_bad_rows)
    write_dataset(
        output_dir,
        {split: (len(rows), lambda rows=rows: map(_to_example, rows)) for split, rows in by_split.items()},
        face_features(),
        card_template="unif2ace_130k_card.md",
        card_fields={
            "license": "other",
            "pretty_name": "UniF²ace-130K-style face data",
            "language": ["en"],
            "task_categories": ["text-to-image", "visual-question-answering", "image-to-text"],
            "tags": ["faces", "fine-grained", "unif2ace"],
        },
        template_kwargs={"source": Path(source).name, "skipped": len(report.skipped)},
        rows_per_shard=rows_per_shard,
    )
    return report
