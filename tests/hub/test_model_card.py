"""Model cards from `unif2ace eval` results: metadata and model-index validated offline with huggingface_hub's card
classes, the unmeasured card, bad results named, the `unif2ace card` command, and cards written by save_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard

from tiny_models import tiny_checkpoint
from unif2ace_hf import FaceUnderstandingPipeline, UniF2aceMaskGITScheduler, UniF2acePipeline
from unif2ace_hf.cli import main
from unif2ace_hf.hub import model_card_from_eval

TEST_RESULTS = {
    "model": "runs/tiny",
    "split": "test",
    "num_examples": 200,
    "understanding": {
        "vqa_exact_match": 0.5125,
        "per_category": {"hair_colour": 0.75, "eyebrows": 0.25},
        "caption_attribute_precision": 0.8,
        "caption_attribute_recall": 0.4,
    },
    "generation": {"judge_attribute_accuracy": 0.375, "per_category": {"hair_colour": 0.5}, "diversity": 0.21},
}
NOVEL_RESULTS = {
    **TEST_RESULTS,
    "split": "novel",
    "num_examples": 50,
    "understanding": {**TEST_RESULTS["understanding"], "vqa_exact_match": 0.3333},
}


def test_card_metadata_and_model_index_come_from_the_results():
    card = model_card_from_eval(
        [TEST_RESULTS, NOVEL_RESULTS], repo_id="me/unif2ace-tiny", base_model="showlab/show-o", datasets=["me/faces"]
    )
    parsed = ModelCard(str(card))  # the text the Hub stores, parsed again
    data = parsed.data
    assert data.library_name == "transformers" and data.pipeline_tag == "any-to-any"
    assert data.license == "apache-2.0" and data.base_model == ["showlab/show-o"] and data.datasets == ["me/faces"]
    assert {"unif2ace", "face", "custom_code"} <= set(data.tags)
    assert data.model_name == "unif2ace-tiny"
    results = {(r.dataset_split, r.task_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert all(isinstance(r, EvalResult) for r in data.eval_results)
    assert len(results) == 2 * 5
    assert results[("test", "visual-question-answering", "exact_match")] == 0.5125
    assert results[("novel", "visual-question-answering", "exact_match")] == 0.3333
    assert results[("test", "visual-question-answering", "recall")] == 0.4
    assert results[("novel", "text-to-image", "accuracy")] == 0.375
    assert results[("test", "text-to-image", "diversity")] == 0.21
    assert {r.dataset_type for r in data.eval_results} == {"synthface"}
    # the tables: a row per split, and per-category values (a category one section lacks shows a dash)
    assert "| `test` | 200 | 0.512 | 0.800 | 0.400 | 0.375 | 0.210 |" in parsed.text
    assert "| `novel` | 50 | 0.333 |" in parsed.text
    assert "| `eyebrows` | 0.250 | — | 0.250 | — |" in parsed.text
    assert 'UniF2acePipeline.from_pretrained("me/unif2ace-tiny")' in parsed.text
    assert "Not measured" not in parsed.text
    assert "(evaluated model: `runs/tiny`)" in parsed.text


def test_a_local_model_path_is_not_published():
    results = {**TEST_RESULTS, "model": "/home/someone/experiments/runs/tiny-face"}
    text = str(model_card_from_eval(results))
    assert "(evaluated model: `tiny-face`)" in text and "/home/someone" not in text


def test_unmeasured_metrics_and_missing_sections_are_left_out():
    """`unif2ace eval` writes NaN for a metric it could not measure (e.g. diversity without prompts to compare)."""
    understanding_only = {key: value for key, value in TEST_RESULTS.items() if key != "generation"}
    partial = {**NOVEL_RESULTS, "generation": {**NOVEL_RESULTS["generation"], "diversity": float("nan")}}
    card = ModelCard(str(model_card_from_eval(json.loads(json.dumps([understanding_only, partial])))))
    measured = {(r.dataset_split, r.metric_type) for r in card.data.eval_results}
    assert ("test", "accuracy") not in measured and ("novel", "diversity") not in measured
    assert {("test", "exact_match"), ("novel", "accuracy")} <= measured
    assert "| `test` | 200 | 0.512 | 0.800 | 0.400 | — | — |" in card.text
    assert "| `novel` | 50 | 0.333 | 0.800 | 0.400 | 0.375 | — |" in card.text


def test_card_without_results_validates_and_says_not_measured():
    card = ModelCard(str(model_card_from_eval(None, repo_id="me/unif2ace-tiny")))
    assert card.data.eval_results is None and card.data.library_name == "transformers"
    assert "**Not measured.**" in card.text and "| split |" not in card.text


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({**TEST_RESULTS, "split": ""}, r"eval_results\[0\]\.split: expected a non-empty string"),
        ({**TEST_RESULTS, "num_examples": 0}, r"eval_results\[0\]\.num_examples"),
        (
            {**TEST_RESULTS, "understanding": {**TEST_RESULTS["understanding"], "vqa_exact_match": "high"}},
            r"eval_results\[0\]\.understanding\.vqa_exact_match: expected a finite number",
        ),
        (
            {**TEST_RESULTS, "generation": {**TEST_RESULTS["generation"], "per_category": {"hair_colour": "x"}}},
            r"eval_results\[0\]\.generation\.per_category\.hair_colour",
        ),
        (
            {**TEST_RESULTS, "generation": {"judge_attribute_accuracy": 0.5}},
            r"eval_results\[0\]\.generation: missing \['diversity'\]",
        ),
        (
            {**TEST_RESULTS, "generation": {**TEST_RESULTS["generation"], "diversity": float("inf")}},
            r"eval_results\[0\]\.generation\.diversity: expected a finite number",
        ),
        ([TEST_RESULTS, TEST_RESULTS], r"eval_results\[1\]\.split: split 'test' appears twice"),
        ({"model": "m", "split": "test", "num_examples": 3}, r"neither 'understanding' nor 'generation'"),
        (["not a dict"], r"eval_results\[0\]: expected a dict"),
    ],
)
def test_bad_results_are_named(results, message):
    with pytest.raises(ValueError, match=message):
        model_card_from_eval(results)


def test_card_command_writes_the_card(tmp_path, capsys):
    for name, results in (("test.json", TEST_RESULTS), ("novel.json", NOVEL_RESULTS)):
        (tmp_path / name).write_text(json.dumps(results))
    output = tmp_path / "model" / "README.md"
    argv = ["card", "--eval", str(tmp_path / "test.json"), "--eval", str(tmp_path / "novel.json")]
    assert main([*argv, "--output", str(output), "--repo-id", "me/tiny"]) == 0
    card = ModelCard.load(output)
    assert sorted({r.dataset_split for r in card.data.eval_results}) == ["novel", "test"]
    assert main(["card", "--output", str(tmp_path / "plain.md")]) == 0
    assert "Not measured" in ModelCard.load(tmp_path / "plain.md").text
    assert main(["card", "--eval", str(tmp_path / "missing.json"), "--output", str(output)]) == 2
    assert "--eval: no such file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    return UniF2acePipeline(
        model=model, processor=processor, scheduler=UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    )


def test_save_pretrained_writes_the_card_and_a_reload_keeps_measured_numbers(tmp_path, pipe):
    pipe.save_pretrained(tmp_path / "plain")
    assert "Not measured" in ModelCard.load(tmp_path / "plain" / "README.md").text
    pipe.save_pretrained(tmp_path / "measured", eval_results=[TEST_RESULTS], repo_id="me/tiny")
    reloaded = UniF2acePipeline.from_pretrained(tmp_path / "measured")
    reloaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == (tmp_path / "measured" / "README.md").read_text()
    with pytest.raises(ValueError, match="model_card and eval_results: give one of them"):
        pipe.save_pretrained(tmp_path / "both", eval_results=TEST_RESULTS, model_card="---\nlicense: mit\n---\n")


def test_understanding_pipeline_save_writes_processor_and_card(tmp_path, pipe):
    vqa = FaceUnderstandingPipeline(model=pipe.model, processor=pipe.processor, device="cpu")
    vqa.save_pretrained(tmp_path, eval_results=TEST_RESULTS, repo_id="me/tiny")
    assert (tmp_path / "processor_config.json").is_file()
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results[0].metric_value == 0.5125
