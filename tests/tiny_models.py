"""Tiny configurations and prompt builders for tests (no downloads)."""

import torch

from unif2ace_hf import UniF2aceConfig
from unif2ace_hf.modeling.configuration_unif2ace import showo_vocabulary_layout

# A small vocabulary with Show-o's layout: text, 10 special tokens, image codes, mask.
TEXT_VOCAB = 100
TINY_LAYOUT = dict(**showo_vocabulary_layout(TEXT_VOCAB, codebook_size=64), bos_token_id=0, eos_token_id=0)
TINY_BACKBONE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TINY_MOE = dict(
    token_moe_layers=[0, 1],
    sequence_moe_layers=[0, 1],
    num_routed_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    resampler_num_heads=4,
    noise_num_tokens=4,
)


# The `model` section of tiny training recipes (tests/test_training*.py): the tiny-synthface layout, shrunk.
TINY_RECIPE_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "token_moe_layers": [0, 1],
    "num_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64,
    "sequence_moe_layers": [1],
    "noise_num_tokens": 4,
}


def tiny_config(moe: bool = True, **overrides) -> UniF2aceConfig:
    kwargs = {**TINY_LAYOUT, **TINY_BACKBONE, **(TINY_MOE if moe else {}), **overrides}
    return UniF2aceConfig(**kwargs)


def mmu_prompt(image_codes: torch.Tensor, text: list[int], config: UniF2aceConfig) -> list[int]:
    """`[mmu][soi] image [eoi][sot] text` as ids."""
    image = (image_codes + config.image_token_offset).tolist()
    return [config.mmu_token_id, config.soi_token_id, *image, config.eoi_token_id, config.bos_token_id, *text]


def t2i_prompt(text: list[int], image_ids: list[int], config: UniF2aceConfig) -> list[int]:
    """`[t2i][sot] text [eot][soi] image-or-mask [eoi]` as ids."""
    return [
        config.t2i_token_id,
        config.bos_token_id,
        *text,
        config.eos_token_id,
        config.soi_token_id,
        *image_ids,
        config.eoi_token_id,
    ]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = 1
    return ids, mask


TINY_VQ = dict(
    image_size=16,
    base_channels=32,
    encoder_channel_multipliers=[1, 2],
    decoder_channel_multipliers=[1, 2],
    encoder_num_res_blocks=[1, 1],
    decoder_num_res_blocks=[1, 1],
    attn_resolutions=[],
    codebook_dim=6,
)
TINY_TEXTS = [
    "a smiling woman with red hair",
    "an old man with a grey beard",
    "a child with freckles",
    "What colour is her hair? red",
    "Is he wearing glasses? yes",
]


def tiny_checkpoint(weight_std: float = 0.2):
    """A complete small model (backbone + 16px VQ tokenizer with 64 codes) and its processor, built in-process.

    The backbone's weights are drawn larger than the 0.02 init so greedy decoding and sampling are not degenerate.
    """
    from unif2ace_hf import UniF2aceForConditionalGeneration, UniF2aceProcessor, UniF2aceVQConfig, train_byte_level_bpe
    from unif2ace_hf.processing_unif2ace import UniF2aceImageProcessor

    tokenizer = train_byte_level_bpe(TINY_TEXTS * 20, vocab_size=280)
    text_vocab = len(tokenizer) - 10
    layout = dict(
        **showo_vocabulary_layout(text_vocab, codebook_size=64),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = tiny_config(**layout, vq_config=UniF2aceVQConfig(**TINY_VQ))
    model = UniF2aceForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "layernorm" not in name:
                p.normal_(std=weight_std)
        model.lm_head.weight.normal_(std=weight_std)
    processor = UniF2aceProcessor(
        image_processor=UniF2aceImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer,
        num_image_tokens=64,
        image_token_offset=config.image_token_offset,
        codebook_size=64,
        mask_token_id=config.mask_token_id,
        max_text_length=24,
    )
    return model, processor


def assert_same_outputs(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Outputs of the same weights held in different memory (after a save and load, a Hub round trip, a subprocess).

    They agree to float rounding, not bit for bit, on every CPU. An AMD EPYC picks its fp32 matmul kernels by the
    tensors' alignment and gives differences near 2e-6 between a model and its reloaded copy, whose weights are equal.
    """
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    """Bit-for-bit equal parameters and buffers: where a round trip can be checked exactly, it is."""
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    assert all(torch.equal(actual_state[name], expected_state[name]) for name in expected_state)
