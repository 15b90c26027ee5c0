"""Image-token input features (`image_bit_embedding`, `image_position_embedding`): zero start, what they add and
where, cached decoding, save/load, bad config, and switching them on for a trained checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from tiny_models import (
    assert_same_outputs,
    assert_same_weights,
    left_pad,
    mmu_prompt,
    t2i_prompt,
    tiny_checkpoint,
    tiny_config,
)
from unif2ace_hf import UniF2aceForConditionalGeneration

FEATURES = dict(image_bit_embedding=True, image_position_embedding=True, num_image_tokens=8)
REPO = Path(__file__).resolve().parents[1]


def model_with_features(randomise_features: bool = True) -> UniF2aceForConditionalGeneration:
    model = UniF2aceForConditionalGeneration(tiny_config(**FEATURES)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "router.bias" in name:
                continue
            if "image_input_embedding" in name and not randomise_features:
                continue
            p.normal_(std=0.2)
    return model


def without_features(model: UniF2aceForConditionalGeneration) -> UniF2aceForConditionalGeneration:
    plain = UniF2aceForConditionalGeneration(tiny_config()).eval()
    state = {k: v for k, v in model.state_dict().items() if "image_input_embedding" not in k}
    plain.load_state_dict(state, strict=True)
    return plain


def batch(config):
    codes = torch.arange(8) * 7 % config.codebook_size
    rows = [
        mmu_prompt(codes, [3, 4, 5], config),
        t2i_prompt([5, 6], [config.mask_token_id] * 3 + (codes[3:] + config.image_token_offset).tolist(), config),
    ]
    return left_pad(rows, config.pad_token_id)


def test_features_start_at_zero_and_change_nothing():
    model = model_with_features(randomise_features=False)
    embedding = model.model.image_input_embedding
    assert embedding.bit_proj.weight.abs().max() == 0 and embedding.slot_embedding.abs().max() == 0
    ids, mask = batch(model.config)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=mask).logits,
            without_features(model)(input_ids=ids, attention_mask=mask).logits,
        )


def test_bits_reach_codes_and_slots_reach_the_image_block_only():
    model = model_with_features()
    config = model.config
    ids, mask = batch(config)
    embedding = model.model.image_input_embedding
    tasks = model.model._resolve_tasks(ids, mask.bool(), None, None, 2, ids.device)
    with torch.no_grad():
        extra = embedding(ids, mask.bool(), tasks, torch.float32)
        weight, slots = embedding.bit_proj.weight, embedding.slot_embedding
    start, stop = config.image_token_range
    is_code = (ids >= start) & (ids < stop)
    for row in range(2):
        soi = int((ids[row] == config.soi_token_id).nonzero()[0, 0])
        for slot in range(8):
            position = soi + 1 + slot
            token = int(ids[row, position])
            expected = slots[slot].clone()
            if is_code[row, position]:
                code = token - start
                d = config.codebook_size.bit_length() - 1  # 6 bits for the tiny 64-code book, most significant first
                bits = torch.tensor([(code >> (d - 1 - i)) & 1 for i in range(d)], dtype=torch.float32) * 2 - 1
                expected += weight @ bits
            torch.testing.assert_close(extra[row, position], expected)
        outside = torch.ones(ids.shape[1], dtype=torch.bool)
        outside[soi + 1 : soi + 9] = False
        assert extra[row, outside].abs().max() == 0  # text, specials, <|soi|>/<|eoi|>, padding
    # the same slot gets the same position vector in understanding and generation rows: slot 5 holds the same code
    mmu_soi = int((ids[0] == config.soi_token_id).nonzero()[0, 0])
    t2i_soi = int((ids[1] == config.soi_token_id).nonzero()[0, 0])
    torch.testing.assert_close(extra[0, mmu_soi + 6], extra[1, t2i_soi + 6])


def test_generation_with_the_cache_equals_recomputing():
    model = model_with_features()
    config = model.config
    rows = [mmu_prompt(torch.randint(0, config.codebook_size, (8,)), q, config) for q in ([3, 4, 5], [6])]
    ids, mask = left_pad(rows, config.pad_token_id)
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=config.pad_token_id)
    assert torch.equal(
        model.generate(ids, attention_mask=mask, use_cache=True, **kwargs),
        model.generate(ids, attention_mask=mask, use_cache=False, **kwargs),
    )
    # a t2i image chunk over a cached text prefix gets the same slots as the full sequence
    row = t2i_prompt([5, 6, 7], [config.mask_token_id] * 3 + list(range(110, 115)), config)
    full = model(input_ids=torch.tensor([row])).logits
    cache = DynamicCache(config=config)
    model(input_ids=torch.tensor([row[:6]]), cache=cache, use_cache=True)
    chunk = model(
        input_ids=torch.tensor([row[6:]]), cache=cache, use_cache=True, attention_mask=torch.ones(1, len(row))
    )
    torch.testing.assert_close(chunk.logits, full[:, 6:], atol=1e-5, rtol=1e-5)


def test_save_and_load_keep_the_features(tmp_path):
    model = model_with_features()
    ids, mask = batch(model.config)
    model.save_pretrained(tmp_path)
    reloaded = UniF2aceForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_bit_embedding and reloaded.config.num_image_tokens == 8
    assert (tmp_path / "image_input_embedding.py").is_file()  # remote code carries the module
    assert_same_weights(reloaded, model)
    with torch.no_grad():
        assert_same_outputs(
            reloaded(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
        )


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="num_image_tokens"):
        tiny_config(image_position_embedding=True)
    with pytest.raises(ValueError, match="image_bit_embedding"):
        tiny_config(image_bit_embedding=True, codebook_size=48, mask_token_id=158)


def test_switching_features_on_for_a_trained_checkpoint(tmp_path):
    """scripts/add_image_input_features.py: the copy computes what the source does; the source cannot be loaded
    into a config with the features on (the strict loader names the missing weights)."""
    model, processor = tiny_checkpoint()
    source, output = tmp_path / "source", tmp_path / "with_features"
    model.save_pretrained(source)
    processor.save_pretrained(source)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "add_image_input_features.py"), str(source), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    extended = UniF2aceForConditionalGeneration.from_pretrained(output).eval()
    assert extended.config.image_position_embedding and extended.config.num_image_tokens == processor.num_image_tokens
    codes = torch.randint(0, 64, (2, 64), generator=torch.Generator().manual_seed(0))
    inputs = processor.build_mmu_training_inputs(codes, ["What colour is her hair?", None], ["red", "a child"])
    with torch.no_grad():
        torch.testing.assert_close(
            extended(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits,
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits,
        )
    with pytest.raises(Exception, match="image_input_embedding"):
        UniF2aceForConditionalGeneration.from_pretrained(source, image_position_embedding=True, num_image_tokens=64)


def test_a_recipe_switches_them_on_from_scratch():
    """The recipe's `model:` section turns the features on; the slot count comes from the image tokenizer."""
    from unif2ace_hf.training.model_setup import build_model
    from unif2ace_hf.training.recipes import load_recipe

    recipe = load_recipe("tiny-synthface", {"model": {"image_bit_embedding": True, "image_position_embedding": True}})
    model, processor, _ = build_model(recipe)
    assert model.config.num_image_tokens == processor.num_image_tokens == 256
    assert model.model.image_input_embedding.slot_embedding.shape == (256, model.config.hidden_size)
    bad = load_recipe("tiny-synthface", {"model": {"image_position_embedding": True, "num_image_tokens": 64}})
    with pytest.raises(ValueError, match="num_image_tokens"):
        build_model(bad)


@pytest.mark.parametrize(
    "settings", [dict(image_bit_embedding=True), dict(semantic_feature_dim=8, semantic_input_embedding=True)]
)
def test_each_added_input_starts_at_zero_on_its_own(settings):
    # without the slot embedding the module holds only linear maps, which transformers initialises as their own
    # modules: the zero start must not depend on a sibling parameter
    embedding = UniF2aceForConditionalGeneration(
        tiny_config(num_image_tokens=8, **settings)
    ).model.image_input_embedding
    for projection in (embedding.bit_proj, embedding.semantic_proj):
        assert projection is None or projection.weight.abs().max() == 0
