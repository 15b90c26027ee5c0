"""Input features of image-token positions beyond the embedding table: the code's sign bits and its grid slot.

A lookup-free code *is* a vector of sign bits (the quantised latent), but an embedding table learns each of the
2^d codes on its own, so codes with nearly the same latent start unrelated and stay partly so (on the default model
a ridge fit recovers a held-out code's bits from its learned embedding 64-87 % of the time). Image tokens also get
only rotary (relative) positions, so nothing tells a code which part of the face it sits in. This module adds
`W · bits(code)` and a learned `slot` embedding to image positions. Both start at zero, so switching them on for a
trained checkpoint changes nothing until training moves them (docs/decisions.md, issue 8).
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_unif2ace import UniF2aceConfig
from .omni_attention import find_bidirectional_blocks


class UniF2aceImageInputEmbedding(nn.Module):
    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.config = config
        self.codebook_dim = config.codebook_size.bit_length() - 1
        self.bit_proj = (
            nn.Linear(self.codebook_dim, config.hidden_size, bias=False) if config.image_bit_embedding else None
        )
        self.slot_embedding = (
            nn.Parameter(torch.zeros(config.num_image_tokens, config.hidden_size))
            if config.image_position_embedding
            else None
        )

    def code_bits(self, codes: torch.LongTensor, dtype: torch.dtype) -> torch.Tensor:
        """`(..., d)` signs in {-1, 1} of each code, most significant bit first (the LFQ index order)."""
        shifts = torch.arange(self.codebook_dim - 1, -1, -1, device=codes.device)
        return ((codes[..., None] >> shifts) & 1).to(dtype) * 2 - 1

    def forward(
        self, input_ids: torch.LongTensor, padding_mask: torch.Tensor, task_codes: torch.LongTensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """`(B, L, hidden)` to add to the input embeddings (zeros away from image positions)."""
        config = self.config
        extra = torch.zeros(*input_ids.shape, config.hidden_size, dtype=dtype, device=input_ids.device)
        if self.bit_proj is not None:
            start, stop = config.image_token_range
            is_code = (input_ids >= start) & (input_ids < stop) & padding_mask
            codes = (input_ids - start).clamp(0, config.codebook_size - 1)
            extra = extra + self.bit_proj(self.code_bits(codes, dtype)) * is_code[..., None]
        if self.slot_embedding is not None:
            in_block, soi_index, _ = find_bidirectional_blocks(input_ids, padding_mask, config, task_codes)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
            slot = positions - soi_index[:, None] - 1
            is_slot = in_block & (slot >= 0) & (slot < config.num_image_tokens) & (input_ids != config.eoi_token_id)
            slots = self.slot_embedding.to(dtype)[slot.clamp(0, config.num_image_tokens - 1)]
            extra = extra + slots * is_slot[..., None]
        return extra


__all__ = ["UniF2aceImageInputEmbedding"]
