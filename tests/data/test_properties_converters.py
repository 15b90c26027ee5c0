"""Property-based tests (hypothesis) for the UniF²ace-130K converters: randomly mutated LLaVA and caption rows.

Every row either converts to exactly what the documented format says, or stops the conversion with a
`MalformedRowError` naming the file and that row; with `skip_bad_rows=True` the bad rows are counted, never lost.
The validity oracle below is written from the format description in `unif2ace_130k.py`'s docstring, not from its
code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unif2ace_hf.data import MalformedRowError
from unif2ace_hf.data.synthface.taxonomy import CATEGORIES
from unif2ace_hf.data.unif2ace_130k import read_rows

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
IMAGES = [f"images/face{i}.png" for i in range(4)]

GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
TEXT = st.text(min_size=0, max_size=30)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    for i, name in enumerate(IMAGES):
        (folder / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (12, 10), (40 * i, 90, 200)).save(folder / name)
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def turns(pairs: int):
    return st.lists(st.tuples(TEXT, TEXT), min_size=pairs, max_size=pairs).map(
        lambda qa: [t for q, a in qa for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
    )


BASE_ROW = st.one_of(
    st.fixed_dictionaries(
        {"image": st.sampled_from(IMAGES), "conversations": st.integers(1, 2).flatmap(turns)},
        optional={"id": st.text(max_size=8) | st.integers(), "attributes": st.just({"hair_color": "red"})},
    ),
    st.fixed_dictionaries(
        {"image": st.sampled_from(IMAGES), "caption": TEXT},
        optional={"id": st.text(max_size=8) | st.integers()},
    ),
)
MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(["id", "image", "conversations", "caption", "attributes"])),
    st.tuples(st.just("set"), st.sampled_from(["id", "image", "conversations", "caption", "attributes"]), GARBAGE),
    st.tuples(
        st.just("set"),
        st.just("image"),
        st.sampled_from(["images/missing.png", "images/broken.png", "x" * 300, "a\x00b", "\ud800.png"]),
    ),  # fmt: skip
    st.tuples(st.just("set"), st.text(max_size=6), GARBAGE),  # an extra key: ignored
    st.tuples(st.just("turn"), st.integers(0, 3), st.sampled_from(["from", "value"]), GARBAGE),
    st.tuples(st.just("drop_turn"), st.integers(0, 3)),
    st.tuples(st.just("whole"), GARBAGE),  # the record itself is not an object
)


def mutate(row: dict, mutations: list[tuple]) -> object:
    record: object = json.loads(json.dumps(row))
    for mutation in mutations:
        if not isinstance(record, dict):
            break
        kind = mutation[0]
        if kind == "delete":
            record.pop(mutation[1], None)
        elif kind == "set":
            record[mutation[1]] = mutation[2]
        elif kind in ("turn", "drop_turn") and isinstance(record.get("conversations"), list):
            conversation = record["conversations"]
            if mutation[1] < len(conversation):
                if kind == "drop_turn":
                    del conversation[mutation[1]]
                elif isinstance(conversation[mutation[1]], dict):
                    conversation[mutation[1]][mutation[2]] = mutation[3]
        elif kind == "whole":
            record = mutation[1]
    return record


def is_text(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected(record, root: Path, row_number: int) -> dict | None:
    """What the format says this record becomes (None: it is malformed)."""
    if not isinstance(record, dict):
        return None
    row_id = record.get("id")
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, (str, int)) or not is_text(str(row_id))):  # fmt: skip
        return None
    image = record.get("image")
    if not isinstance(image, str) or image not in IMAGES:  # only these name a readable image
        return None
    if "conversations" not in record and "caption" not in record:
        return None
    qa, caption = [], None
    if "conversations" in record:
        conversation = record["conversations"]
        if not isinstance(conversation, list) or not conversation or len(conversation) % 2:
            return None
        for index, turn in enumerate(conversation):
            if not isinstance(turn, dict) or not is_text(turn.get("value")):
                return None
            if turn.get("from") != ("human" if index % 2 == 0 else "gpt"):
                return None
        qa = [
            {"question": q["value"].replace("<image>", "").strip(), "answer": a["value"].strip()}
            for q, a in zip(conversation[::2], conversation[1::2])
        ]
    if "caption" in record:
        if not is_text(record["caption"]) or not record["caption"].strip():
            return None
        caption = record["caption"].strip()
    attributes = record.get("attributes")
    attributes = {} if attributes is None else attributes
    if not isinstance(attributes, dict) or set(attributes) - set(CATEGORIES):
        return None
    if any(v is not None and not is_text(v) for v in attributes.values()):
        return None
    return {
        "id": str(row_id) if row_id is not None else Path(image).stem,
        "caption": caption,
        "qa": qa,
        "attributes": {c: attributes.get(c) for c in CATEGORIES},
        "image_path": (root / image).resolve(),
    }


def write(root: Path, records: list, suffix: str, name: str) -> Path:
    path = root / f"{name}{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def fallback_id(suffix: str, index: int) -> str:
    return f"line {index + 1}" if suffix == ".jsonl" else f"index {index}"


def as_dict(row) -> dict:
    return {
        "id": row.id,
        "caption": row.caption,
        "qa": row.qa,
        "attributes": row.attributes,
        "image_path": row.image_path,
    }


@SETTINGS
@given(
    row=BASE_ROW,
    mutations=st.lists(MUTATION, max_size=3),
    suffix=st.sampled_from([".json", ".jsonl"]),
)
def test_each_mutated_row_converts_exactly_or_is_named(root, row, mutations, suffix):
    record = mutate(row, mutations)
    file = write(root, [record], suffix, "train")
    want = expected(record, root, 0)
    try:
        by_split, report = read_rows(file)
    except MalformedRowError as error:
        assert want is None, f"a valid row was refused: {error}"
        assert error.file == str(file) and str(file) in str(error)
        own_id = record.get("id") if isinstance(record, dict) else None
        named = {fallback_id(suffix, 0)} | ({str(own_id)} if isinstance(own_id, (str, int)) else set())
        assert error.row_id in named, f"the error names {error.row_id!r}, not the row"
        assert f"row {error.row_id}: {error.kind}: " in str(error)
        return
    assert want is not None, f"a malformed row was accepted: {record!r}"
    assert report.rows == {"train": 1} and not report.skipped
    assert as_dict(by_split["train"][0]) == want


@SETTINGS
@given(
    rows=st.lists(st.tuples(BASE_ROW, st.lists(MUTATION, max_size=2)), min_size=1, max_size=len(IMAGES)),
    suffix=st.sampled_from([".json", ".jsonl"]),
)
def test_skipping_bad_rows_keeps_every_good_row_and_counts_the_rest(root, rows, suffix):
    records = []
    for index, (row, mutations) in enumerate(rows):
        row = {**row, "image": IMAGES[index]}  # one image per row: rows about one image would be merged
        row.pop("id", None)
        records.append(mutate(row, mutations))
    file = write(root, records, suffix, "train")
    wants = [expected(r, root, i) for i, r in enumerate(records)]
    good = [w for w in wants if w is not None]
    try:
        by_split, report = read_rows(file, skip_bad_rows=True)
    except ValueError as error:
        assert not good and "no valid rows left" in str(error)
        return
    assert sorted((as_dict(r) for r in by_split["train"]), key=str) == sorted(good, key=str)
    assert len(report.skipped) == len(wants) - len(good)
    assert "skipped" in report.summary()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_broken_json_is_named(root, suffix):
    file = root / f"test{suffix}"
    file.write_text('{"image": "images/face0.png", "caption": "ok"}\n{"image": \n', encoding="utf-8")
    with pytest.raises(MalformedRowError, match=r"row (line 2|\(whole file\)): invalid json"):
        read_rows(file)
