import datasets
import pytest
from PIL import Image

from unif2ace_hf.cli import main
from unif2ace_hf.data import face_features
from unif2ace_hf.data.synthface import CATEGORIES, build_synthface, make_row, novel_pairs_in, split_sizes

SPLITS = ["train", "validation", "test", "novel"]
CACHE = {}  # a private datasets cache, so tests never write to the user's


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthface") / "ds"
    CACHE["dir"] = str(tmp_path_factory.mktemp("hf-cache"))
    code = main(
        [
            "data",
            "synthface",
            "--num-images",
            "30",
            "--size",
            "48",
            "--seed",
            "3",
            "--output-dir",
            str(out),
            "--rows-per-shard",
            "10",
        ]
    )
    assert code == 0
    return out


def test_cli_writes_shards_and_card(cli_output):
    shards = sorted(p.name for p in (cli_output / "data").iterdir())
    assert "train-00000-of-00003.parquet" in shards and "novel-00000-of-00001.parquet" in shards
    card = (cli_output / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "dataset_info:" in card
    assert "license: apache-2.0" in card and "| appearance / hair | `hair_color` |" in card


def test_load_dataset_round_trip(cli_output):
    ds = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])
    assert list(ds) == SPLITS
    assert {k: len(v) for k, v in ds.items()} == split_sizes(30)
    for split in SPLITS:
        assert ds[split].features == face_features()
    row = ds["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (48, 48)
    assert set(row["attributes"]) == set(CATEGORIES)
    assert row["qa"] and set(row["qa"][0]) == {"question", "answer"}
    assert all(novel_pairs_in(r["attributes"]) for r in ds["novel"])
    assert not any(novel_pairs_in(r["attributes"]) for s in ("train", "validation", "test") for r in ds[s])


def test_cli_output_equals_in_process_build(cli_output):
    on_disk = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])
    in_memory = build_synthface(30, size=48, seed=3)
    assert isinstance(in_memory, datasets.DatasetDict)
    for split in SPLITS:
        a, b = on_disk[split], in_memory[split]
        assert (
            a["id"] == b["id"]
            and a["caption"] == b["caption"]
            and a["qa"] == b["qa"]
            and a["attributes"] == b["attributes"]
        )
        assert [x.tobytes() for x in a["image"]] == [x.tobytes() for x in b["image"]]


def test_streaming_load(cli_output):
    stream = datasets.load_dataset(str(cli_output), streaming=True, cache_dir=CACHE["dir"])
    assert isinstance(stream, datasets.IterableDatasetDict) and list(stream) == SPLITS
    row = next(iter(stream["novel"]))
    assert isinstance(row["image"], Image.Image) and row["id"] == "synthface-novel-0000000"
    assert len(list(stream["train"])) == split_sizes(30)["train"]


def test_same_seed_same_rows_different_seed_different_rows():
    assert make_row(1, "train", 5, 32) == make_row(1, "train", 5, 32)
    assert make_row(1, "train", 5, 32)["caption"] != make_row(2, "train", 5, 32)["caption"]


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["data", "synthface", "--num-images", "2", "--output-dir", str(tmp_path / "a")]) == 2
    assert "num_images" in capsys.readouterr().err
    assert main(["data", "synthface", "--num-images", "8", "--size", "4", "--output-dir", str(tmp_path / "b")]) == 2
    assert "size" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["data", "synthface", "--num-images", "8", "--output-dir", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_contact_sheet_shows_rows_with_captions():
    from unif2ace_hf.data.synthface.grid import make_grid

    sheet = make_grid(num=3, size=32, columns=2)
    assert sheet.size == (2 * 300, 2 * (32 + 12 + 15 * 14))
    assert len(sheet.getcolors(1 << 20)) > 50  # faces and text, not a blank page


def test_cli_balanced_yes_no_changes_only_the_questions(cli_output, tmp_path):
    out = tmp_path / "balanced"
    args = ["data", "synthface", "--num-images", "30", "--size", "48", "--seed", "3", "--output-dir", str(out)]
    assert main(args + ["--balanced-yes-no", "--rows-per-shard", "10"]) == 0
    natural = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])["train"]
    balanced = datasets.load_dataset(str(out), cache_dir=CACHE["dir"])["train"]
    for column in ("id", "caption", "attributes"):
        assert natural[column] == balanced[column]
    assert (
        natural.cast_column("image", datasets.Image(decode=False))["image"]
        == balanced.cast_column("image", datasets.Image(decode=False))["image"]
    )
    assert natural["qa"] != balanced["qa"]
    answers = [pair["answer"] for qa in balanced["qa"] for pair in qa if pair["answer"] in ("yes", "no")]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6
    card = (out / "README.md").read_text()
    assert "--balanced-yes-no" in card and "Yes/no mix of this copy: balanced" in card
    assert "Yes/no mix of this copy: natural" in (cli_output / "README.md").read_text()


def test_cli_per_question_balance_and_bad_modes(cli_output, tmp_path, capsys):
    out = tmp_path / "per-question"
    args = ["data", "synthface", "--num-images", "30", "--size", "48", "--seed", "3", "--output-dir", str(out)]
    assert main(args + ["--balanced-yes-no", "per-question", "--value-pairs", "1"]) == 0
    natural = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])["train"]
    per_question = datasets.load_dataset(str(out), cache_dir=CACHE["dir"])["train"]
    assert natural["caption"] == per_question["caption"] and natural["qa"] != per_question["qa"]
    card = (out / "README.md").read_text()
    assert "--balanced-yes-no per-question --value-pairs 1" in card and "balanced per question" in card
    with pytest.raises(SystemExit):
        main(args[:-1] + [str(tmp_path / "bad"), "--balanced-yes-no", "sometimes"])
    assert "--balanced-yes-no" in capsys.readouterr().err


def test_cli_yes_no_questions_sets_the_count_and_names_bad_values(cli_output, tmp_path, capsys):
    out = tmp_path / "more"
    args = ["data", "synthface", "--num-images", "30", "--size", "48", "--seed", "3", "--output-dir", str(out)]
    assert main(args + ["--balanced-yes-no", "--yes-no-questions", "6"]) == 0
    natural = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])["train"]
    more = datasets.load_dataset(str(out), cache_dir=CACHE["dir"])["train"]
    assert natural["caption"] == more["caption"]
    for qa in more["qa"]:
        assert sum(pair["answer"] in ("yes", "no") for pair in qa) == 6
    assert "--yes-no-questions 6" in (out / "README.md").read_text()
    assert main(args[:-1] + [str(tmp_path / "bad"), "--yes-no-questions", "-1"]) == 2
    assert "yes_no_questions" in capsys.readouterr().err


def test_cli_value_pairs_ask_values_both_ways_and_name_bad_values(cli_output, tmp_path, capsys):
    out = tmp_path / "pairs"
    args = ["data", "synthface", "--num-images", "30", "--size", "48", "--seed", "3", "--output-dir", str(out)]
    assert main(args + ["--balanced-yes-no", "--value-pairs", "2"]) == 0
    natural = datasets.load_dataset(str(cli_output), cache_dir=CACHE["dir"])["train"]
    paired = datasets.load_dataset(str(out), cache_dir=CACHE["dir"])["train"]
    assert natural["caption"] == paired["caption"]
    for qa in paired["qa"]:
        assert sum(pair["answer"] in ("yes", "no") for pair in qa) == 3 + 4
    card = (out / "README.md").read_text()
    assert "--value-pairs 2" in card and "Value pairs per face: 2" in card
    assert main(args[:-1] + [str(tmp_path / "bad"), "--value-pairs", "-2"]) == 2
    assert "value_pairs" in capsys.readouterr().err
