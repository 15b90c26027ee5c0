"""UniF2aceForConditionalGeneration as a transformers model: forward, generate with the KV cache, save/load, dtypes,
attention backends, gradient checkpointing and bad input."""

import copy
import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, DynamicCache

from tiny_models import left_pad, mmu_prompt, t2i_prompt, tiny_config
from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2aceModel


def tiny_model(moe: bool = True, **overrides) -> UniF2aceForConditionalGeneration:
    model = UniF2aceForConditionalGeneration(tiny_config(moe=moe, **overrides)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init make greedy decoding non-degenerate
        for name, p in model.named_parameters():
            if "layernorm" not in name and "router.bias" not in name:
                p.normal_(std=0.2)
    return model


def mmu_batch(config: UniF2aceConfig, questions: list[list[int]]):
    rows = [mmu_prompt(torch.randint(0, config.codebook_size, (8,)), q, config) for q in questions]
    return rows, *left_pad(rows, config.pad_token_id)


def test_forward_outputs_float32_logits_and_the_aux_loss():
    model = tiny_model()
    config = model.config
    _, ids, mask = mmu_batch(config, [[3, 4, 5], [6]])
    out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.dtype == torch.float32 and out.logits.shape == (2, ids.shape[1], config.vocab_size)
    assert set(out.balance_losses) == {"token/mmu", "sequence/mmu"}
    expected = (
        0.01 * out.balance_losses["token/mmu"]
        + config.sequence_moe_balance_coefficient * out.balance_losses["sequence/mmu"]
    )
    torch.testing.assert_close(out.aux_loss, expected)
    labels = ids.masked_fill(mask == 0, -100)
    with_labels = model(input_ids=ids, attention_mask=mask, labels=labels)
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, config.vocab_size), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(with_labels.loss, ce + out.aux_loss)


def test_mixed_batch_reports_both_groups():
    model = tiny_model()
    config = model.config
    rows = [mmu_prompt(torch.arange(4), [3], config), t2i_prompt([5, 6], [config.mask_token_id] * 4, config)]
    ids, mask = left_pad(rows, config.pad_token_id)
    out = model(input_ids=ids, attention_mask=mask)
    assert set(out.balance_losses) == {"token/t2i", "token/mmu", "sequence/t2i", "sequence/mmu"}


@pytest.mark.parametrize("moe", [False, True, "feature-experts"])
def test_greedy_generate_with_cache_equals_without(moe):
    model = tiny_model(moe=bool(moe))
    if moe == "feature-experts":  # route every mmu sequence to Semantic + Identity (resampler keys/values cached)
        for layer in model.model.layers:
            group = layer.sequence_moe.groups["mmu"]
            with torch.no_grad():
                group.router.weight.zero_()
                group.router.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 5.0]))
    _, ids, mask = mmu_batch(model.config, [[3, 4, 5, 6], [7, 8]])
    kwargs = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=model.config.pad_token_id)
    cached = model.generate(ids, attention_mask=mask, use_cache=True, **kwargs)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, -10:].tolist())) > 1  # not a degenerate constant continuation


def test_plain_text_rows_generate_with_the_cache():
    """Text rows bypass the sequence MoE; decoding steps must not try to route them."""
    model = tiny_model()
    ids, mask = left_pad([[3, 4, 5, 6], [7, 8]], model.config.pad_token_id)
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=model.config.pad_token_id)
    cached = model.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(cached, model.generate(ids, attention_mask=mask, use_cache=False, **kwargs))


def test_left_padded_batch_of_three_equals_single_calls():
    model = tiny_model()
    rows, ids, mask = mmu_batch(model.config, [[3, 4, 5, 6, 7], [8], [9, 10, 11]])
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=model.config.pad_token_id)
    batched = model.generate(ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :]
    for i, row in enumerate(rows):
        single = model.generate(torch.tensor([row]), **kwargs)[:, len(row) :]
        assert torch.equal(batched[i], single[0]), f"row {i}"


def test_cached_image_chunk_equals_full_recompute():
    """The text prefix can be cached for masked image generation: its K/V never depend on the image."""
    model = tiny_model()
    config = model.config
    image = [config.mask_token_id] * 3 + list(range(110, 115))
    row = t2i_prompt([5, 6, 7], image, config)
    ids = torch.tensor([row])
    full = model(input_ids=ids).logits
    prefix_length = 6
    cache = DynamicCache(config=config)
    model(input_ids=ids[:, :prefix_length], cache=cache, use_cache=True)
    chunk = model(input_ids=ids[:, prefix_length:], cache=cache, use_cache=True, attention_mask=torch.ones(1, len(row)))
    torch.testing.assert_close(chunk.logits, full[:, prefix_length:], atol=1e-5, rtol=1e-5)


def test_save_and_load_is_exact_and_runs_in_bf16(tmp_path):
    model = tiny_model()
    _, ids, mask = mmu_batch(model.config, [[3, 4], [5]])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText"} <= set(auto_map)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, UniF2aceForConditionalGeneration)
    assert torch.equal(
        model(input_ids=ids, attention_mask=mask).logits, reloaded(input_ids=ids, attention_mask=mask).logits
    )
    assert isinstance(AutoConfig.from_pretrained(tmp_path), UniF2aceConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), UniF2aceModel)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), UniF2aceForConditionalGeneration)

    bf16 = UniF2aceForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert bf16.model.layers[0].token_moe.groups["mmu"].experts.up_proj.dtype == torch.bfloat16
    out = bf16(input_ids=ids, attention_mask=mask).logits
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # Loading in bf16 equals casting the fp32 model (routing may flip near ties against fp32 itself, so that
    # comparison is made on the dense model below).
    cast = copy.deepcopy(model).to(torch.bfloat16)
    assert (out - cast(input_ids=ids, attention_mask=mask).logits).norm() < 0.02 * out.norm()
    dense = tiny_model(moe=False)
    dense_bf16 = copy.deepcopy(dense).to(torch.bfloat16)
    reference = dense(input_ids=ids, attention_mask=mask).logits
    assert (dense_bf16(input_ids=ids, attention_mask=mask).logits - reference).norm() < 0.03 * reference.norm()
    assert bf16.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_sdpa_and_eager_agree():
    model = tiny_model()
    _, ids, mask = mmu_batch(model.config, [[3, 4, 5], [6]])
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(input_ids=ids, attention_mask=mask).logits
    model.set_attn_implementation("eager")
    eager = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(eager.logits, sdpa, atol=1e-5, rtol=1e-5)
    assert len(eager.attentions) == model.config.num_hidden_layers


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model().train()
    model.config.sequence_moe_experts = {
        "t2i": ["copy", "copy", "zero", "zero"],
        "mmu": ["copy", "copy", "semantic", "identity"],
    }
    _, ids, mask = mmu_batch(model.config, [[3, 4, 5], [6]])
    labels = ids.masked_fill(mask == 0, -100)

    def grads():
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_an_explicit_4d_mask_is_used_as_given():
    model = tiny_model(moe=False)
    ids = torch.randint(0, 100, (2, 6))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None, None].expand(2, 1, 6, 6)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=causal).logits, model(input_ids=ids).logits)
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~causal, float("-inf"))
    torch.testing.assert_close(model(input_ids=ids, attention_mask=additive).logits, model(input_ids=ids).logits)


def test_bad_input_names_the_argument(tmp_path):
    model = tiny_model()
    config = model.config
    ids = torch.randint(0, 100, (2, 6))
    with pytest.raises(ValueError, match=r"attention_mask: a 4-D mask must have shape \(2, 1, 6, 6\)"):
        model(input_ids=ids, attention_mask=torch.ones(2, 1, 6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attention_mask: expected a 2-D padding mask of shape \(2, 6\)"):
        model(input_ids=ids, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match=r"tasks\[0\]='video' is not a known task"):
        model(input_ids=ids, tasks=["video", "t2i"])
    reserved = ids.clone()
    reserved[1, 0] = config.reserved_task_token_ids[0]
    with pytest.raises(ValueError, match=r"input_ids row 1 starts with task token 107"):
        model(input_ids=reserved)
    with pytest.raises(ValueError, match=r"input_ids: token id 999 is outside the vocabulary"):
        model(input_ids=torch.tensor([[1, 999]]))
    with pytest.raises(TypeError, match="cache="):
        model.model(input_ids=ids, past_key_values=DynamicCache(config=config))

    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "moe_intermediate_size": 16}))
    with pytest.raises(
        ValueError,
        match=r"weight 'model\.layers\.0\.token_moe\.groups\.\w+\.experts\.\w+' has shape .* config does not match the weights",
    ):
        UniF2aceForConditionalGeneration.from_pretrained(tmp_path)
    config_file.write_text(json.dumps({**saved, "num_hidden_layers": 3}))
    with pytest.raises(
        ValueError, match=r"no weight for 'model\.layers\.2\..*refusing to leave layers randomly initialised"
    ):
        UniF2aceForConditionalGeneration.from_pretrained(tmp_path)


def test_config_rejects_inconsistent_layouts():
    with pytest.raises(ValueError, match=r"UniF2aceConfig\.soi_token_id: 120 collides with the image codes"):
        tiny_config(soi_token_id=120)
    with pytest.raises(ValueError, match=r"UniF2aceConfig\.num_experts_per_tok"):
        tiny_config(num_experts_per_tok=9)
    with pytest.raises(ValueError, match=r"UniF2aceConfig\.sequence_moe_experts: group 'mmu' has unknown expert kind"):
        tiny_config(sequence_moe_experts={"t2i": ["copy", "copy"], "mmu": ["copy", "clip"]})
    with pytest.raises(ValueError, match=r"UniF2aceConfig\.token_moe_layers: layer 5 does not exist"):
        tiny_config(token_moe_layers=[5])


def test_external_feature_encoders_are_pluggable():
    model = tiny_model(semantic_feature_dim=12, identity_feature_dim=10, sequence_moe_top_k=4)
    _, ids, mask = mmu_batch(model.config, [[3, 4], [5]])
    with pytest.raises(
        ValueError, match=r"semantic_features: this model's semantic expert reads external features of width 12"
    ):
        model(input_ids=ids, attention_mask=mask)
    semantic, identity = torch.randn(2, 5, 12), torch.randn(2, 1, 10)
    out = model(input_ids=ids, attention_mask=mask, semantic_features=semantic, identity_features=identity).logits
    changed = model(
        input_ids=ids, attention_mask=mask, semantic_features=semantic, identity_features=identity + 1
    ).logits
    assert (out - changed).abs().max() > 1e-4  # the identity features reach the output
    with pytest.raises(ValueError, match=r"identity_features: expected shape \(2, N, 10\)"):
        model(input_ids=ids, attention_mask=mask, semantic_features=semantic, identity_features=torch.randn(2, 1, 3))
