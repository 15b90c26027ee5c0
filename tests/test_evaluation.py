"""`unif2ace eval`: the caption parser, answer normalisation, the JSON and markdown it writes, and bad input."""

import json
import random

import pytest
import torch
from datasets import load_dataset

from unif2ace_hf.cli import main as cli_main
from unif2ace_hf.data.synthface import make_caption, sample_attributes
from unif2ace_hf.evaluation.caption_parser import parse_caption
from unif2ace_hf.evaluation.model_eval import normalise_answer


def test_parser_reads_exactly_what_reference_captions_say():
    for index in range(600):
        rng = random.Random(index)
        attributes = sample_attributes(rng, novel=index % 4 == 0)
        caption, said = make_caption(attributes, rng)
        assert parse_caption(caption) == {c: attributes[c] for c in said}, caption


def test_parser_reads_words_only_in_their_slot():
    found = parse_caption("They have blue eyes and a short beard. The person looks sad and is glaring. Blue sky.")
    assert found == {"eye_color": "blue", "eyes": "open", "beard": "short", "emotion": "sad", "action": "glaring"}
    assert parse_caption("") == {} and parse_caption("short blue thin") == {}
    assert parse_caption("They have long wavy ginger hair.") == {
        "hair_length": "long",
        "hair_texture": "wavy",
        "hair_color": "red",
    }


def test_answers_are_compared_without_case_spaces_or_final_stop():
    assert normalise_answer("  Yes, the  Person is SMILING. ") == normalise_answer("yes, the person is smiling")
    assert normalise_answer("blue") != normalise_answer("green")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import tiny_checkpoint
    from unif2ace_hf import UniF2aceMaskGITScheduler, UniF2acePipeline

    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    folder = tmp_path_factory.mktemp("tiny-model")
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    UniF2acePipeline(model=model, processor=processor, scheduler=scheduler).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def synthface_dir(tmp_path_factory):
    from unif2ace_hf.data.synthface import write_synthface

    folder = tmp_path_factory.mktemp("synthface")
    write_synthface(folder, num_images=40, size=64, seed=3)
    return folder


def test_eval_writes_every_metric_and_a_table(tmp_path, capsys, tiny_model_dir, synthface_dir):
    output = tmp_path / "eval" / "test.json"
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(synthface_dir), "--split", "test"]
    argv += ["--output", str(output), "--num-examples", "2", "--num-inference-steps", "2", "--batch-size", "4"]
    argv += ["--predictions", str(tmp_path / "eval" / "answers.jsonl")]
    assert cli_main(argv) == 0
    results = json.loads(output.read_text())
    assert results["split"] == "test" and results["num_examples"] == 2
    understanding, generation = results["understanding"], results["generation"]
    for key in ("vqa_exact_match", "caption_attribute_precision", "caption_attribute_recall"):
        assert 0.0 <= understanding[key] <= 1.0
    assert understanding["num_questions"] >= 2 * 4 and "reasoning" in understanding["per_category"]
    assert set(understanding["per_category"]) - {"reasoning"} <= set(sample_attributes(random.Random(0)))
    assert 0.0 <= generation["judge_attribute_accuracy"] <= 1.0 and 0.0 <= generation["diversity"] <= 1.0
    assert generation["per_category"] and all(0.0 <= v <= 1.0 for v in generation["per_category"].values())
    table = output.with_suffix(".md").read_text()
    assert "| vqa_exact_match |" in table and "| judge_attribute_accuracy |" in table
    assert table in capsys.readouterr().out

    # the predictions file holds exactly the answers the scores were computed from
    records = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    questions = [r for r in records if r["kind"] == "vqa"]
    captions = [r for r in records if r["kind"] == "caption"]
    assert len(questions) == understanding["num_questions"] and len(captions) == 2
    for category, accuracy in understanding["per_category"].items():
        marks = [r["correct"] for r in questions if r["category"] == category]
        assert accuracy == pytest.approx(sum(marks) / len(marks))
    for r in questions:
        assert r["correct"] == (normalise_answer(r["prediction"]) == normalise_answer(r["answer"]))
        assert r["question_kind"] in ("open", "presence", "value", "reasoning")
        assert (r["question_kind"] == "reasoning") == (r["category"] == "reasoning")
    rows = load_dataset(str(synthface_dir), split="test")
    for r, row in zip(captions, rows):
        claimed = parse_caption(r["prediction"])
        assert r["reference"] == row["caption"]
        assert r["wrong_attributes"] == sorted(c for c, v in claimed.items() if row["attributes"][c] != v)


def test_eval_bad_input_names_the_argument(tmp_path, capsys, tiny_model_dir, synthface_dir):
    base = ["eval", "--data", str(synthface_dir), "--output", str(tmp_path / "x.json")]
    assert cli_main([*base, "--model", str(tmp_path / "nope")]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(tiny_model_dir), "--num-examples", "0"]) == 2
    assert "--num-examples" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(tiny_model_dir), "--split", "nosuchsplit"]) == 2
    assert "--split" in capsys.readouterr().err
    assert cli_main(["eval", "--model", "default", "--data", str(tmp_path / "none"), "--output", "x.json"]) == 2
    assert "--data" in capsys.readouterr().err
    only_generation = ["--model", str(tiny_model_dir), "--skip-understanding", "--predictions", "p.jsonl"]
    assert cli_main([*base, *only_generation]) == 2
    assert "--predictions" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(tiny_model_dir), "--device", "nosuchdevice"]) == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main([*base, "--model", str(tiny_model_dir), "--device", "cuda"]) == 2
        assert "--device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_demo_hair_mask_covers_the_hair_only():
    from unif2ace_hf.data.synthface import default_attributes, render
    from unif2ace_hf.demo_showcase import hair_mask

    attributes = {**default_attributes(), "hair_color": "black", "hair_length": "long"}
    mask = hair_mask(attributes, 64, seed=1)
    covered = sum(v > 0 for v in mask.getdata()) / (64 * 64)
    assert 0.05 < covered < 0.6
    # outside the mask, changing the hair colour changes nothing
    a, b = render(attributes, 64, seed=1), render({**attributes, "hair_color": "red"}, 64, seed=1)
    outside = [pa != pb for pa, pb, m in zip(a.getdata(), b.getdata(), mask.getdata()) if m == 0]
    assert sum(outside) / max(1, len(outside)) < 0.01
