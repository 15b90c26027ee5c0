"""LoRA with peft: targets, training, save/load, merge, dropout placement, bad settings, and both pipelines."""

import copy

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image
from torch import nn
from transformers import pipeline

from tiny_models import assert_same_outputs, assert_same_weights, tiny_checkpoint
from unif2ace_hf import UniF2aceForConditionalGeneration, UniF2aceMaskGITScheduler, UniF2acePipeline
from unif2ace_hf.training.lora import (
    apply_lora,
    load_adapter,
    load_with_adapter,
    save_adapter,
    trainable_parameter_names,
)

# peft 0.21 calls a transformers-5.24-deprecated property while wrapping the model.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def batch(checkpoint):
    """Two plain-text rows and one t2i row, so both token-MoE groups (mmu for text, t2i) see tokens."""
    config = checkpoint[1].config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.text_vocab_size, (3, 14), generator=generator)
    ids[2, 0] = config.t2i_token_id
    return ids


def train(model: nn.Module, ids: torch.Tensor, steps: int = 3, lr: float = 1e-2) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def trained(checkpoint, batch, tmp_path_factory):
    """A LoRA model (attention + experts, with dropout) trained a few steps, and its saved adapter folder."""
    torch.manual_seed(0)
    peft_model = apply_lora(copy.deepcopy(checkpoint[1]), {"r": 4, "alpha": 8, "dropout": 0.1})
    losses = train(peft_model, batch)
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(peft_model, folder)
    return peft_model, folder, losses


def test_default_targets_are_attention_and_fused_experts(checkpoint):
    peft_model = apply_lora(copy.deepcopy(checkpoint[1]), {"r": 2})
    assert isinstance(peft_model, PeftModel)
    names = trainable_parameter_names(peft_model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    config = checkpoint[1].config
    attention = [n for n in names if ".self_attn." in n]
    experts = [n for n in names if ".token_moe.groups." in n and ".experts." in n]
    assert len(attention) == config.num_hidden_layers * 4 * 2  # q, k, v, dense x (A, B)
    # Each group's fused up_proj and down_proj: two nested ParamWrappers x (A, B).
    assert len(experts) == config.num_hidden_layers * len(config.token_moe_groups) * 2 * 2
    assert len(attention) + len(experts) == len(names)
    assert not any("resampler" in n or "vq_model" in n or "router" in n for n in names)
    # The expert adapters have peft's `(r * E, ·)` layout on the `[E, in, out]` weights.
    a = dict(peft_model.named_parameters())[next(n for n in experts if n.endswith("experts.lora_A.default.weight"))]
    assert a.shape[0] == 2 * config.num_routed_experts


def test_training_changes_outputs_and_touches_only_adapters(checkpoint, batch, trained):
    base = checkpoint[1]
    peft_model, _, losses = trained
    assert losses[-1] < losses[0]
    assert (logits(peft_model, batch) - logits(base, batch)).abs().max() > 1e-2
    # Frozen weights (the base model and the whole image tokenizer) are bit-for-bit unchanged.
    adapted = peft_model.get_base_model()
    reference = base.state_dict()
    for name, tensor in adapted.state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(tensor, reference[key]), name
    assert not any("lora" in name for name, _ in adapted.vq_model.named_modules())
    assert not any(p.requires_grad for p in adapted.vq_model.parameters())


def test_dropout_only_on_linear_adapters(trained):
    from peft.tuners.lora.layer import LoraLayer, ParamWrapper

    peft_model = trained[0]
    linear = [m for m in peft_model.modules() if isinstance(m, LoraLayer) and not isinstance(m, ParamWrapper)]
    wrappers = [m for m in peft_model.modules() if isinstance(m, ParamWrapper)]
    assert linear and wrappers
    assert all(isinstance(m.lora_dropout["default"], nn.Dropout) and m.lora_dropout["default"].p == 0.1 for m in linear)
    assert all(isinstance(m.lora_dropout["default"], nn.Identity) for m in wrappers)


def test_save_load_gives_identical_logits_and_merge_matches(checkpoint, batch, trained):
    peft_model, folder, _ = trained
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    expected = logits(peft_model, batch)
    reloaded = load_adapter(UniF2aceForConditionalGeneration.from_pretrained(checkpoint[0]), folder).eval()
    assert_same_weights(reloaded, peft_model)
    assert_same_outputs(logits(reloaded, batch), expected)
    merged = reloaded.merge_and_unload()
    assert type(merged) is UniF2aceForConditionalGeneration
    assert set(merged.state_dict()) == set(checkpoint[1].state_dict())
    assert (logits(merged, batch) - expected).abs().max() < 1e-5
    # The helper the pipelines use does the same.
    helper = load_with_adapter(checkpoint[0], folder)
    assert type(helper) is UniF2aceForConditionalGeneration
    assert (logits(helper, batch) - expected).abs().max() < 1e-5
    assert isinstance(load_with_adapter(checkpoint[0], folder, merge=False), PeftModel)


def test_modules_to_save_and_modules_only(checkpoint, batch, tmp_path):
    settings = {"r": 2, "target_modules": ["fc1", "fc2"], "target_experts": False, "modules_to_save": ["lm_head"]}
    peft_model = apply_lora(copy.deepcopy(checkpoint[1]), settings)
    names = trainable_parameter_names(peft_model)
    assert any("lm_head" in n and "modules_to_save" in n for n in names)
    assert any("shared_expert.fc1.lora_A" in n for n in names) and not any("experts.lora" in n for n in names)
    train(peft_model, batch, steps=2)
    save_adapter(peft_model, tmp_path)
    reloaded = load_adapter(UniF2aceForConditionalGeneration.from_pretrained(checkpoint[0]), tmp_path).eval()
    assert_same_weights(reloaded, peft_model)
    assert_same_outputs(logits(reloaded, batch), logits(peft_model, batch))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rank": 4}, "rank"),
        ({"r": 0}, "lora.r"),
        ({"dropout": 1.5}, "lora.dropout"),
        ({"target_modules": ["q_projection"]}, "q_projection"),
        ({"target_modules": ["conv_in"], "target_experts": False}, "conv_in"),  # only in vq_model
        ({"modules_to_save": ["vq_model"]}, "image tokenizer"),
        ({"target_modules": [], "target_experts": False}, "nothing to adapt"),
        ({"target_experts": "yes"}, "target_experts"),
    ],
)
def test_bad_settings_are_clear_errors(checkpoint, settings, message):
    with pytest.raises(ValueError, match=message):
        apply_lora(checkpoint[1], settings)
    assert not any("lora" in n for n, _ in checkpoint[1].named_parameters())


def test_save_adapter_needs_a_peft_model(checkpoint, tmp_path):
    with pytest.raises(TypeError, match="PeftModel"):
        save_adapter(checkpoint[1], tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config"):
        load_adapter(checkpoint[1], tmp_path)


def test_merged_adapter_runs_in_both_pipelines(checkpoint, trained):
    folder, _, processor = checkpoint
    model = load_with_adapter(folder, trained[1])
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    t2i = UniF2acePipeline(model=model, processor=processor, scheduler=scheduler)
    codes = t2i(
        "a child with freckles", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="codes"
    )
    assert codes.images.shape == (1, 64)
    vqa = pipeline("face-understanding", model=model, processor=processor)
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    answer = vqa(image, question="What colour is her hair?", max_new_tokens=4)
    assert set(answer) == {"answer"} and isinstance(answer["answer"], str)
    # The understanding answer is the adapter's: greedy tokens equal those of the unmerged PeftModel.
    inputs = processor(images=image, text="What colour is her hair?")
    with torch.no_grad():
        merged_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        peft_tokens = trained[0].generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(merged_tokens, peft_tokens)
