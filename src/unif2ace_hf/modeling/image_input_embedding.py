"""Input features of image-token positions beyond the embedding table: the code's sign bits and its grid slot.

A lookup-free code *is* a vector of sign bits (the quantised latent), but an embedding table learns each of the
2^d codes on its own, so codes with nearly the same latent start unrelated and stay partly so (on the default model
a ridge fit recovers a held-out code's bits from its learned embedding 64-87 % of the time). Image tokens also get
only rotary (relative) positions, so nothing tells a code which part of the face it sits in. This module adds
`W · bits(code)` and a learned `slot` embedding to image positions. A model with a semantic encoder can also add
`S · f`, a map of the encoder's features of the image, to the image positions of understanding rows (the input-side
route of Show-o's CLIP variant, which puts projected CLIP features in the sequence). All start at zero, so switching
them on for a trained checkpoint changes nothing until training moves them (docs/decisions.md, issue 8).
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_unif2ace import UniF2aceConfig
from .omni_attention import TASK_MMU, find_bidirectional_blocks


class ZeroInitLinear(nn.Linear):
    """A bias-free linear map that the model's weight initialisation sets to zero: an added input must not change a
    trained model until training moves it. (A marker class, because transformers initialises a module only through
    its own parameters, so the parent cannot zero a child `nn.Linear` reliably.)"""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)


class UniF2aceImageInputEmbedding(nn.Module):
    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.config = config
        self.codebook_dim = config.codebook_size.bit_length() - 1
        self.bit_proj = ZeroInitLinear(self.codebook_dim, config.hidden_size) if config.image_bit_embedding else None
        self.slot_embedding = (
            nn.Parameter(torch.zeros(config.num_image_tokens, config.hidden_size))
            if config.image_position_embedding
            else None
        )
        self.semantic_proj = (
            ZeroInitLinear(config.semantic_feature_dim, config.hidden_size) if config.semantic_input_embedding else None
        )

    def code_bits(self, codes: torch.LongTensor, dtype: torch.dtype) -> torch.Tensor:
        """`(..., d)` signs in {-1, 1} of each code, most significant bit first (the LFQ index order)."""
        shifts = torch.arange(self.codebook_dim - 1, -1, -1, device=codes.device)
        return ((codes[..., None] >> shifts) & 1).to(dtype) * 2 - 1

    def forward(
        self,
        input_ids: torch.LongTensor,
        padding_mask: torch.Tensor,
        task_codes: torch.LongTensor,
        dtype: torch.dtype,
        semantic_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(B, L, hidden)` to add to the input embeddings (zeros away from image positions)."""
        config = self.config
        extra = torch.zeros(*input_ids.shape, config.hidden_size, dtype=dtype, device=input_ids.device)
        if self.bit_proj is not None:
            start, stop = config.image_token_range
            is_code = (input_ids >= start) & (input_ids < stop) & padding_mask
            codes = (input_ids - start).clamp(0, config.codebook_size - 1)
            extra = extra + self.bit_proj(self.code_bits(codes, dtype)) * is_code[..., None]
        if self.slot_embedding is None and self.semantic_proj is None:
            return extra
        in_block, soi_index, _ = find_bidirectional_blocks(input_ids, padding_mask, config, task_codes)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        slot = positions - soi_index[:, None] - 1
        is_slot = in_block & (slot >= 0) & (slot < config.num_image_tokens) & (input_ids != config.eoi_token_id)
        if self.slot_embedding is not None:
            slots = self.slot_embedding.to(dtype)[slot.clamp(0, config.num_image_tokens - 1)]
            extra = extra + slots * is_slot[..., None]
        if self.semantic_proj is not None:
            # understanding rows only: a text-to-image row's image is what it generates, never an input
            understood = is_slot & (task_codes == TASK_MMU)[:, None]
            if semantic_features is not None:
                # standardised and scaled to unit length: raw encoder features (ReLU activations, norm ~100 for the
                # SynthFace encoder) would swamp code embeddings of norm ~0.4 after one optimiser step
                features = semantic_features.to(dtype).mean(dim=1)
                features = nn.functional.layer_norm(features, features.shape[-1:]) / features.shape[-1] ** 0.5
                extra = extra + self.semantic_proj(features)[:, None, :] * understood[..., None]
            elif bool(understood.any()):  # (no host sync when the features are given)
                raise ValueError(
                    "semantic_features: this model adds its semantic encoder's features to the image of "
                    "understanding rows; pass pixel_values (or semantic_features) with the prompt"
                )
        return extra


__all__ = ["UniF2aceImageInputEmbedding", "ZeroInitLinear"]
