import json

import datasets
import pytest
from PIL import Image

from unif2ace_hf.cli import main
from unif2ace_hf.data import MalformedRowError, convert_unif2ace_130k, face_features, load_unif2ace_130k
from unif2ace_hf.data.synthface import write_synthface


def _image(path, color=(200, 120, 90)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), color).save(path)
    return path.name


def _llava(root, name="train.json"):
    _image(root / "images" / "a.png")
    _image(root / "images" / "b.jpg", (10, 20, 30))
    records = [
        {
            "id": "face-a",
            "image": "images/a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat color is her hair?"},
                {"from": "gpt", "value": "Her hair is red."},
                {"from": "human", "value": "Is she smiling?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {
            "id": "face-b",
            "image": "images/b.jpg",
            "conversations": [
                {"from": "human", "value": "Describe the face.<image>"},
                {"from": "gpt", "value": "A man."},
            ],
        },
    ]
    (root / name).write_text(json.dumps(records))


def _captions(root, name="test.jsonl"):
    _image(root / "imgs" / "c.png", (1, 2, 3))
    _image(root / "images" / "a.png")
    lines = [{"image": "imgs/c.png", "caption": "A young woman with freckles."}]
    (root / name).write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def _load(folder, tmp_path):
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))


def test_llava_fixture_converts(tmp_path):
    src = tmp_path / "src"
    _llava(src)
    report = convert_unif2ace_130k(src, tmp_path / "out")
    assert report.rows == {"train": 2} and not report.skipped
    ds = _load(tmp_path / "out", tmp_path)
    assert ds["train"].features == face_features()
    rows = {r["id"]: r for r in ds["train"]}
    assert rows["face-a"]["qa"] == [
        {"question": "What color is her hair?", "answer": "Her hair is red."},
        {"question": "Is she smiling?", "answer": "Yes."},
    ]
    assert rows["face-b"]["qa"][0]["question"] == "Describe the face."
    assert rows["face-a"]["caption"] is None and rows["face-a"]["attributes"]["hair_color"] is None
    assert rows["face-b"]["image"].size == (24, 20)


def test_caption_fixture_converts_with_split_from_file_name(tmp_path):
    src = tmp_path / "src"
    _captions(src)
    assert main(["data", "convert", str(src), "--output-dir", str(tmp_path / "out")]) == 0
    ds = _load(tmp_path / "out", tmp_path)
    assert list(ds) == ["test"]
    assert ds["test"][0]["caption"] == "A young woman with freckles." and ds["test"][0]["id"] == "c"
    assert "configs:" in (tmp_path / "out" / "README.md").read_text()


def test_caption_and_conversation_rows_of_one_image_merge(tmp_path):
    src = tmp_path / "src"
    _llava(src)
    (src / "train_captions.jsonl").write_text(json.dumps({"image": "images/a.png", "caption": "Red hair."}) + "\n")
    ds = load_unif2ace_130k(src)
    row = next(r for r in ds["train"] if r["id"] == "face-a")
    assert row["caption"] == "Red hair." and len(row["qa"]) == 2 and len(ds["train"]) == 2


def test_synthface_parquet_converts(tmp_path):
    write_synthface(tmp_path / "sf", 8, size=32, seed=1)
    report = convert_unif2ace_130k(tmp_path / "sf" / "data", tmp_path / "out")
    assert report.rows == {"train": 5, "validation": 1, "test": 1, "novel": 1}
    converted, original = _load(tmp_path / "out", tmp_path), _load(tmp_path / "sf", tmp_path)
    assert converted["train"]["attributes"] == original["train"]["attributes"]
    assert converted["novel"]["caption"] == original["novel"]["caption"]


BAD_ROWS = {
    "missing image": {"id": "r1", "image": "images/nope.png", "caption": "x"},
    "unreadable image": {"id": "r2", "image": "images/broken.png", "caption": "x"},
    "missing field": {"id": "r3", "image": "images/a.png"},
    "non-alternating turns": {
        "id": "r4",
        "image": "images/a.png",
        "conversations": [{"from": "human", "value": "<image> Q1"}, {"from": "human", "value": "Q2"}],
    },
}


def _bad_source(root, kind):
    _llava(root)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "extra.jsonl").write_text(json.dumps(BAD_ROWS[kind]) + "\n")


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_each_malformed_row_stops_with_its_id_and_file(tmp_path, kind):
    src = tmp_path / "src"
    _bad_source(src, kind)
    row_id = BAD_ROWS[kind]["id"]
    with pytest.raises(MalformedRowError, match=rf"extra\.jsonl: row {row_id}: {kind}") as info:
        convert_unif2ace_130k(src, tmp_path / "out")
    assert info.value.kind == kind and info.value.row_id == row_id
    assert not (tmp_path / "out").exists()


def test_invalid_json_line_names_the_line(tmp_path):
    src = tmp_path / "src"
    _llava(src)
    (src / "extra.jsonl").write_text(json.dumps(BAD_ROWS["missing image"]) + "\n{not json\n")
    with pytest.raises(MalformedRowError, match=r"extra\.jsonl: row r1: missing image"):
        load_unif2ace_130k(src)
    report = convert_unif2ace_130k(src, tmp_path / "out", skip_bad_rows=True)
    assert [e.row_id for e in report.skipped] == ["r1", "line 2"]


def test_cli_stops_on_bad_row_and_skip_bad_rows_counts_them(tmp_path, capsys):
    src = tmp_path / "src"
    _llava(src)
    (src / "images" / "broken.png").write_bytes(b"garbage")
    (src / "extra.jsonl").write_text("\n".join(json.dumps(r) for r in BAD_ROWS.values()) + "\n")
    assert main(["data", "convert", str(src), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "extra.jsonl: row r1: missing image" in err and "--skip-bad-rows" in err

    assert main(["data", "convert", str(src), "--output-dir", str(tmp_path / "out2"), "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "converted 2 rows (train: 2)" in out
    assert (
        "skipped 4 bad rows (missing field: 1, missing image: 1, non-alternating turns: 1, unreadable image: 1)" in out
    )
    for row_id in ("r1", "r2", "r3", "r4"):
        assert f"row {row_id}:" in out
    assert len(_load(tmp_path / "out2", tmp_path)["train"]) == 2


def test_bad_source_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="source"):
        load_unif2ace_130k(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .json"):
        load_unif2ace_130k(tmp_path / "empty")


def test_a_broken_json_file_is_reported_as_a_whole(tmp_path):
    src = tmp_path / "src"
    _llava(src)
    (src / "broken.json").write_text("[{not json")
    with pytest.raises(MalformedRowError, match=r"broken\.json: row \(whole file\): invalid json"):
        load_unif2ace_130k(src)
    report = convert_unif2ace_130k(src, tmp_path / "out", skip_bad_rows=True)
    assert report.rows == {"train": 2} and report.skipped_by_kind == {"invalid json": 1}


def test_two_different_captions_for_one_image_are_a_bad_row(tmp_path):
    src = tmp_path / "src"
    _captions(src)
    lines = [
        {"image": "imgs/c.png", "caption": "One text."},
        {"id": "dup", "image": "imgs/c.png", "caption": "Another."},
    ]
    (src / "test.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(MalformedRowError, match=r"test\.jsonl: row dup: duplicate"):
        load_unif2ace_130k(src)
