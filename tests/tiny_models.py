"""Tiny configurations and prompt builders for tests (no downloads)."""

import torch

from unif2ace_hf import UniF2aceConfig

# A small vocabulary with Show-o's layout: text, 10 special tokens, image codes, mask.
TEXT_VOCAB = 100
TINY_LAYOUT = dict(
    text_vocab_size=TEXT_VOCAB,
    pad_token_id=TEXT_VOCAB,
    soi_token_id=TEXT_VOCAB + 1,
    eoi_token_id=TEXT_VOCAB + 2,
    t2i_token_id=TEXT_VOCAB + 5,
    mmu_token_id=TEXT_VOCAB + 6,
    reserved_task_token_ids=[TEXT_VOCAB + 7, TEXT_VOCAB + 8, TEXT_VOCAB + 9],
    bos_token_id=0,
    eos_token_id=0,
    image_token_offset=TEXT_VOCAB + 10,
    codebook_size=64,
    mask_token_id=TEXT_VOCAB + 10 + 64,
    vocab_size=TEXT_VOCAB + 10 + 64 + 1,
)
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
