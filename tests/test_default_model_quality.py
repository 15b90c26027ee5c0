"""Issue 8's quality bars for the shipped default model, measured by `unif2ace eval` on fresh SynthFace splits.

Slow (minutes on a CPU): `make test-all`. The shipped model does not reach the bars yet (docs/default_model.md has
the measured numbers and what would close the gap), so the test is a strict expected failure: it turns into an
error the day a model that meets them ships without this marker being removed.
"""

import json

import pytest

import unif2ace_hf
from unif2ace_hf.cli import main as cli_main

BARS = {
    "test": {"vqa_exact_match": 0.90, "caption_attribute_precision": 0.85, "judge_attribute_accuracy": 0.75},
    "novel": {"vqa_exact_match": 0.80, "judge_attribute_accuracy": 0.60},
}


@pytest.fixture(scope="module")
def fresh_synthface(tmp_path_factory):
    from unif2ace_hf.data.synthface import write_synthface

    folder = tmp_path_factory.mktemp("synthface-fresh")
    write_synthface(folder, num_images=1280, size=64, seed=20261128)  # 64 test and 128 novel faces
    return folder


@pytest.mark.slow
@pytest.mark.skipif(unif2ace_hf.DEFAULT_MODEL is None, reason="no default model in this checkout")
@pytest.mark.xfail(strict=True, reason="the shipped default model is below issue 8's bars (docs/default_model.md)")
@pytest.mark.parametrize("split", ["test", "novel"])
def test_default_model_meets_the_quality_bars(tmp_path, fresh_synthface, split):
    output = tmp_path / f"{split}.json"
    argv = ["eval", "--model", "default", "--data", str(fresh_synthface), "--split", split, "--output", str(output)]
    assert cli_main([*argv, "--num-examples", "64"]) == 0
    results = json.loads(output.read_text())
    measured = {**results["understanding"], **results["generation"]}
    for metric, bar in BARS[split].items():
        assert measured[metric] >= bar, f"{split}: {metric} = {measured[metric]:.3f} < {bar}"
