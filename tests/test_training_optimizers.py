"""Which of the model's weights Muon takes under `training.optimizer: muon` (`training/optimizers.py`)."""

import pytest
import torch

from tiny_models import tiny_config
from unif2ace_hf import UniF2aceForConditionalGeneration
from unif2ace_hf.training.muon import ConvMuon
from unif2ace_hf.training.optimizers import make_training_optimizers, muon_parameter_names
from unif2ace_hf.training.recipes import load_recipe

TRAINING = {"learning_rate": 1e-3, "adam_betas": [0.9, 0.95], "weight_decay": 0.0, "muon_momentum": 0.95}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UniF2aceForConditionalGeneration(
        tiny_config(image_bit_embedding=True, image_position_embedding=True, num_image_tokens=64)
    )


def test_muon_takes_hidden_matrices_and_expert_stacks_only(model):
    matrices, stacks = muon_parameter_names(model)
    assert stacks and all(name.endswith(("experts.up_proj", "experts.down_proj")) for name in stacks)
    assert any(name.endswith("self_attn.q_proj.weight") for name in matrices)
    assert any("shared_expert" in name for name in matrices)
    assert any("resampler" in name for name in matrices)
    for name in matrices + stacks:  # the ends of the network, routers and vectors stay with AdamW
        assert not any(part in name for part in ("embed", "lm_head", "router", "image_input_embedding", "bias"))
    parameters = dict(model.named_parameters())
    assert all(parameters[name].ndim == 2 for name in matrices) and all(parameters[n].ndim == 3 for n in stacks)


def test_every_trainable_parameter_has_exactly_one_optimizer(model):
    adamw, muon = make_training_optimizers(model, {**TRAINING, "optimizer": "muon"})
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, ConvMuon)
    owned = [id(p) for optimizer in (adamw, muon) for group in optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(owned) == sorted(trainable)
    assert [group["stacked"] for group in muon.param_groups] == [False, True]
    (only,) = make_training_optimizers(model, {**TRAINING, "optimizer": "adamw"})
    assert sum(len(group["params"]) for group in only.param_groups) == len(trainable)


def test_an_unknown_optimizer_is_refused_by_name(model):
    with pytest.raises(ValueError, match="training.optimizer.*'lion'"):
        make_training_optimizers(model, {**TRAINING, "optimizer": "lion"})
    with pytest.raises(ValueError, match="training.optimizer.*'lion'"):
        load_recipe("tiny-synthface", {"training": {"optimizer": "lion"}})
