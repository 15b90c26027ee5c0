"""Issue 8's quality bars for the shipped default model, measured by `unif2ace eval` on fresh SynthFace splits.

Slow (minutes on a CPU): `make test-all`. The shipped model meets four of the five bars, asserted as such, but not
VQA on the test split (docs/default_model.md has the measured numbers and what would close the gap): that test is a
strict expected failure, which turns into an error the day a model that meets it ships without the marker being
removed.
"""

import json

import pytest

import unif2ace_hf
from unif2ace_hf.cli import main as cli_main

MET_BARS = {
    "test": {"caption_attribute_precision": 0.85, "judge_attribute_accuracy": 0.75},
    "novel": {"vqa_exact_match": 0.80, "judge_attribute_accuracy": 0.60},
}
MISSED_BARS = {"test": {"vqa_exact_match": 0.90}}


@pytest.fixture(scope="module")
def fresh_synthface(tmp_path_factory):
    from unif2ace_hf.data.synthface import write_synthface

    folder = tmp_path_factory.mktemp("synthface-fresh")
    write_synthface(folder, num_images=1280, size=64, seed=20261128)  # 64 test and 128 novel faces
    return folder


@pytest.fixture(scope="module")
def measured(tmp_path_factory, fresh_synthface):
    """`unif2ace eval --model default` on each split, once for both tests."""
    results = {}
    for split in ("test", "novel"):
        output = tmp_path_factory.mktemp("eval") / f"{split}.json"
        argv = ["eval", "--model", "default", "--data", str(fresh_synthface), "--split", split, "--output", str(output)]
        assert cli_main([*argv, "--num-examples", "64"]) == 0
        result = json.loads(output.read_text())
        results[split] = {**result["understanding"], **result["generation"]}
        print(split, {k: round(v, 3) for k, v in results[split].items() if isinstance(v, float)})  # shown with -s
    return results


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unif2ace_hf.DEFAULT_MODEL is None, reason="no default model in this checkout"),
]


@pytest.mark.parametrize("split", ["test", "novel"])
def test_default_model_meets_the_bars_it_ships_for(measured, split):
    for metric, bar in MET_BARS[split].items():
        assert measured[split][metric] >= bar, f"{split}: {metric} = {measured[split][metric]:.3f} < {bar}"


@pytest.mark.xfail(
    strict=True, reason="the shipped default model is below issue 8's VQA bar on test (docs/default_model.md)"
)
def test_default_model_meets_the_vqa_bar_on_test(measured):
    for metric, bar in MISSED_BARS["test"].items():
        assert measured["test"][metric] >= bar, f"test: {metric} = {measured['test'][metric]:.3f} < {bar}"
