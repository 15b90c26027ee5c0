"""Text tokenizers for UniF²ace: a byte-level BPE trained on face captions (the default model), and Show-o's special
tokens added to any tokenizer at Show-o's positions (right after the text vocabulary, in Show-o's order)."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
"""bos = eos = `<|sot|>` = `<|eot|>`, as with Phi's tokenizer."""

SHOWO_SPECIAL_TOKENS = (
    "<|pad|>",
    "<|soi|>",
    "<|eoi|>",
    "<|sov|>",
    "<|eov|>",
    "<|t2i|>",
    "<|mmu|>",
    "<|t2v|>",
    "<|v2v|>",
    "<|lvg|>",
)
"""Show-o's special tokens in the order it adds them (pad first); their ids are `len(text vocabulary) + i`."""


def add_showo_special_tokens(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Append Show-o's special tokens after the text vocabulary and return their ids (checked, not assumed)."""
    text_vocab_size = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": SHOWO_SPECIAL_TOKENS[0]})
    tokenizer.add_tokens(list(SHOWO_SPECIAL_TOKENS[1:]), special_tokens=True)
    tokenizer.padding_side = "left"
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SHOWO_SPECIAL_TOKENS}
    for offset, token in enumerate(SHOWO_SPECIAL_TOKENS):
        if ids[token] != text_vocab_size + offset:
            raise ValueError(
                f"tokenizer: {token} landed at id {ids[token]}, expected {text_vocab_size + offset}; the tokenizer "
                "already had some of Show-o's special tokens"
            )
    return ids


def train_byte_level_bpe(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE over `texts` (any string encodes: no unknown tokens), with `<|endoftext|>` as bos/eos and
    Show-o's special tokens appended, in transformers format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=None, padding_side="left"
    )
    add_showo_special_tokens(tokenizer)
    return tokenizer


__all__ = ["add_showo_special_tokens", "train_byte_level_bpe", "SHOWO_SPECIAL_TOKENS", "ENDOFTEXT"]
