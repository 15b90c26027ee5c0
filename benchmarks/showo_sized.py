"""A Show-o-sized model for the benchmarks: Show-o's layer size (d 2048, 32 heads, FFN 8192), Show-o's exact
vocabulary layout (Phi's 50 295 text ids, Show-o's 10 specials, 8192 codes, the mask) and a processor whose
tokenizer has that layout, with random weights. Only the depth is cut (2-4 layers instead of 24), so a run fits
in minutes on a CPU."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from unif2ace_hf import (
    UniF2aceConfig,
    UniF2aceForConditionalGeneration,
    UniF2aceMaskGITScheduler,
    UniF2aceProcessor,
    UniF2aceVQConfig,
)
from unif2ace_hf.processing_unif2ace import UniF2aceImageProcessor
from unif2ace_hf.tokenization_unif2ace import ENDOFTEXT, add_showo_special_tokens
from unif2ace_hf.training.model_setup import vocabulary_layout

PHI_TEXT_VOCAB = 50295
SHOWO_LAYER = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32)
SHOWO_TEXT_TOKENS = 129  # Show-o's t2i text part: 128 + the [t2i] token
# A 32 px image tokenizer with a 16 x 16 code grid (256 tokens, as Show-o at 256 px); never decoded when timing.
SHOWO_VQ = dict(
    image_size=32,
    base_channels=32,
    encoder_channel_multipliers=[1, 2],
    decoder_channel_multipliers=[1, 2],
    encoder_num_res_blocks=[1, 1],
    decoder_num_res_blocks=[1, 1],
    attn_resolutions=[],
    codebook_dim=13,
)


def word_level_tokenizer(text_vocab_size: int = PHI_TEXT_VOCAB) -> PreTrainedTokenizerFast:
    """Words `w1 ... w{n-1}` plus `<|endoftext|>` (id 0, bos = eos), then Show-o's special tokens: Show-o's id
    layout without needing Phi's tokenizer files."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {ENDOFTEXT: 0, **{f"w{i}": i for i in range(1, text_vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=ENDOFTEXT))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, padding_side="left"
    )
    add_showo_special_tokens(tokenizer)
    return tokenizer


def random_words(count: int, generator: torch.Generator) -> str:
    """A prompt of `count` words of the word-level tokenizer (one token each)."""
    return " ".join(f"w{i}" for i in torch.randint(1, PHI_TEXT_VOCAB, (count,), generator=generator).tolist())


def showo_sized(
    num_layers: int, seed: int = 0
) -> tuple[UniF2aceForConditionalGeneration, UniF2aceProcessor, UniF2aceMaskGITScheduler]:
    """Model (random weights, dense FFN), processor (129-token text part, 256 image tokens) and scheduler."""
    tokenizer = word_level_tokenizer()
    codebook = 2 ** SHOWO_VQ["codebook_dim"]
    config = UniF2aceConfig(
        **vocabulary_layout(tokenizer, codebook),
        vq_config=UniF2aceVQConfig(**SHOWO_VQ),
        num_hidden_layers=num_layers,
        **SHOWO_LAYER,
    )
    torch.manual_seed(seed)
    model = UniF2aceForConditionalGeneration(config).eval()
    side = SHOWO_VQ["image_size"]
    processor = UniF2aceProcessor(
        image_processor=UniF2aceImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer,
        num_image_tokens=256,
        image_token_offset=config.image_token_offset,
        codebook_size=codebook,
        mask_token_id=config.mask_token_id,
        max_text_length=SHOWO_TEXT_TOKENS,
    )
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=codebook, codebook_size=codebook)
    return model, processor, scheduler
