"""The tokenizer's perceptual term: a frozen SynthFace feature network, wired into the loss, trainer and CLI."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from unif2ace_hf.cli import main
from unif2ace_hf.data.synthface.taxonomy import TAXONOMY
from unif2ace_hf.evaluation.attribute_judge import AttributeJudge, AttributeJudgeModel
from unif2ace_hf.modeling.tokenizer_losses import TokenizerLossWeights, tokenizer_loss
from unif2ace_hf.training.perceptual_loss import DEFAULT_PERCEPTUAL_NET, PerceptualFeatureLoss
from unif2ace_hf.training.tokenizer_data import render_synthface, to_pixel_values
from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, train_tokenizer


@pytest.fixture(scope="module")
def feature_net_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("featnet")
    AttributeJudge(AttributeJudgeModel([len(v) for v in TAXONOMY.values()], width=8).eval()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return render_synthface(8, size=32, seed=3, workers=1)


@pytest.mark.parametrize("term", ["perceptual", "attribute"])
def test_terms_are_zero_for_equal_images_and_grow_with_damage(term):
    loss = PerceptualFeatureLoss.from_pretrained("default")  # trained: a random head barely reacts to small noise
    target = to_pixel_values(render_synthface(4, size=64, seed=3, workers=1))
    torch.manual_seed(0)
    assert loss(target, target)[term].item() == pytest.approx(0.0, abs=1e-6)
    slightly = loss(target + 0.05 * torch.randn_like(target), target)[term].item()
    badly = loss(target + 0.5 * torch.randn_like(target), target)[term].item()
    assert 0 < slightly < badly


def test_attribute_term_is_the_mean_kl_of_the_networks_predictions(feature_net_dir):
    loss = PerceptualFeatureLoss.from_pretrained(feature_net_dir)
    target = to_pixel_values(render_synthface(4, size=64, seed=3, workers=1))
    reconstruction = target.flip(0)
    with torch.no_grad():
        wanted, produced = loss.network(target), loss.network(reconstruction)
    expected = torch.stack(
        [
            torch.nn.functional.kl_div(q.log_softmax(1), p.log_softmax(1), log_target=True, reduction="batchmean")
            for p, q in zip(wanted, produced)
        ]
    ).mean()
    assert loss(reconstruction, target)["attribute"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_gradients_reach_the_reconstruction_only_and_the_network_stays_in_eval_mode(feature_net_dir, faces):
    loss = PerceptualFeatureLoss.from_pretrained(feature_net_dir)
    loss.train()  # a trainer calling .train() must not switch BatchNorm to batch statistics
    assert not loss.network.training
    target = to_pixel_values(faces)
    reconstruction = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    sum(loss(reconstruction, target).values()).backward()
    assert reconstruction.grad is not None and reconstruction.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.network.parameters())


def test_compared_depths_are_strides_1_to_16(feature_net_dir):
    loss = PerceptualFeatureLoss.from_pretrained(feature_net_dir)
    shapes = [f.shape[-1] for f in loss._features(torch.zeros(1, 3, 64, 64))[0]]
    assert shapes == [64, 32, 16, 8, 4]


def test_weight_without_network_and_missing_folder_are_named(tmp_path, feature_net_dir, faces):
    target = to_pixel_values(faces[:2])
    latents = torch.randn(2, 6, 8, 8)
    with pytest.raises(ValueError, match="perceptual_loss"):
        tokenizer_loss(target, target, latents, TokenizerLossWeights(perceptual=1.0))
    with pytest.raises(ValueError, match="perceptual_net"):
        PerceptualFeatureLoss.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="perceptual_net"):
        one_step_run(tmp_path / "a", faces, loss_weights=TokenizerLossWeights(perceptual=1.0))
    with pytest.raises(ValueError, match="perceptual_net"):
        one_step_run(tmp_path / "b", faces, perceptual_net=str(feature_net_dir))
    with pytest.raises(ValueError, match="perceptual_loss"):
        tokenizer_loss(target, target, latents, TokenizerLossWeights(attribute=1.0))
    with pytest.raises(ValueError, match="perceptual_net"):
        one_step_run(tmp_path / "d", faces, loss_weights=TokenizerLossWeights(attribute=1.0))
    for name in ("gradient", "mse", "perceptual", "attribute"):
        with pytest.raises(ValueError, match=f"{name}_weight"):
            one_step_run(
                tmp_path / f"c-{name}",
                faces,
                perceptual_net=str(feature_net_dir),
                loss_weights=TokenizerLossWeights(**{name: -1.0}),
            )


def one_step_run(output_dir, faces, **fields) -> None:
    """One training step of the micro tokenizer on `faces`, on one thread."""
    arguments = dict(data="unused", config="micro", max_steps=1, batch_size=4, warmup_steps=1, progress=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_tokenizer(TokenizerTrainingArguments(output_dir=str(output_dir), **arguments, **fields), images=faces)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("term", ["perceptual", "attribute"])
def test_trainer_logs_the_term_and_its_weight_changes_the_loss(tmp_path, feature_net_dir, faces, term):
    rows = {}
    for weight in (1.0, 3.0):
        folder = tmp_path / f"w{weight}"
        weights = TokenizerLossWeights(**{"perceptual": 1.0, term: weight})
        # default initialisation: a fresh tokenizer with zeroed branches draws a near-flat first image, on which the
        # small test network's predictions barely differ from the originals' (KL ~ 1e-9, too small to compare)
        one_step_run(folder, faces, perceptual_net=str(feature_net_dir), loss_weights=weights, zero_init_residual=False)
        rows[weight] = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
        summary = json.loads((folder / "training_summary.json").read_text())
        assert summary["arguments"]["perceptual_net"] == str(feature_net_dir)
        assert summary["loss_weights"][term] == weight
    first, second = rows[1.0], rows[3.0]
    assert first[term] > 0
    assert first[term] == pytest.approx(second[term], rel=1e-4)  # same seed, same first batch
    assert second["loss"] - first["loss"] == pytest.approx(2.0 * first[term], rel=1e-3, abs=1e-5)


def test_cli_passes_the_loss_weights(tmp_path, feature_net_dir):
    code = main(
        ["train-tokenizer", "--data", "synthface:8:0", "--output-dir", str(tmp_path / "vq"), "--config", "micro",
         "--max-steps", "1", "--batch-size", "4", "--perceptual-net", str(feature_net_dir), "--perceptual-weight",
         "0", "--attribute-weight", "0.5", "--gradient-weight", "1.5", "--mse-weight", "0.25", "--no-progress",
         "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    weights = json.loads((tmp_path / "vq" / "training_summary.json").read_text())["loss_weights"]
    assert (weights["attribute"], weights["perceptual"], weights["gradient"], weights["mse"]) == (0.5, 0.0, 1.5, 0.25)


def test_cli_refuses_a_weight_without_a_network(tmp_path, capsys):
    code = main(
        ["train-tokenizer", "--data", "synthface:8:0", "--output-dir", str(tmp_path / "vq"), "--config", "micro",
         "--max-steps", "1", "--batch-size", "4", "--perceptual-weight", "0.5", "--no-progress"]
    )  # fmt: skip
    assert code == 2 and "perceptual_net" in capsys.readouterr().err


def test_the_shipped_network_loads_as_default_and_is_not_the_judge():
    loss = PerceptualFeatureLoss.from_pretrained("default")
    assert loss.network.classifier[-1].weight.equal(
        PerceptualFeatureLoss.from_pretrained(DEFAULT_PERCEPTUAL_NET).network.classifier[-1].weight
    )
    judge = AttributeJudge.load_default().model
    # The judge's architecture, trained separately (its own seed and faces): the weights must differ.
    first, judge_first = loss.network.features[0][0].weight, judge.features[0][0].weight
    assert first.shape == judge_first.shape and (first - judge_first).abs().mean() > 0.01
    faces = to_pixel_values(render_synthface(2, size=64, seed=5, workers=1))
    assert loss(faces, faces)["perceptual"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss(faces, faces.flip(0))["perceptual"].item() > 0.05  # two different faces are far apart


def test_loads_where_datasets_is_missing():
    """GPU machines lack `datasets`; the feature network needs only the SynthFace taxonomy."""
    script = textwrap.dedent(
        """
        import sys
        class NoDatasets:
            def find_spec(self, name, path=None, target=None):
                if name == "datasets" or name.startswith("datasets."):
                    raise ModuleNotFoundError("No module named 'datasets'", name="datasets")
        sys.meta_path.insert(0, NoDatasets())
        import torch
        from unif2ace_hf.training.perceptual_loss import PerceptualFeatureLoss
        loss = PerceptualFeatureLoss.from_pretrained("default")
        print("distance", float(loss(torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64))["perceptual"]))
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "distance" in process.stdout
