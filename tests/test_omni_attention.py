"""The omni-attention mask against a naive per-element statement of Show-o's rules."""

import pytest
import torch

from tiny_models import left_pad, mmu_prompt, t2i_prompt, tiny_config
from unif2ace_hf.modeling.omni_attention import build_omni_attention_mask, tasks_to_codes

CONFIG = tiny_config(moe=False)


def naive_mask(ids: list[int], valid: list[bool], config, past: int = 0, task: str | None = None) -> torch.Tensor:
    """Element by element: pads see only themselves; causal otherwise; plus the bidirectional image block.

    t2i: every position from <|soi|> to <|eoi|> sees every real position of the row.
    mmu: every position may see every real key at or before <|eoi|> (the [mmu][soi] image [eoi] prefix).
    Only tokens of the current chunk (after `past` cached ones) can form a block.
    """
    total = len(ids)
    chunk = ids[past:]
    real = [i for i in range(past, total) if valid[i]]
    if task is None:
        first = ids[real[0]] if real else None
        task = "t2i" if first == config.t2i_token_id else "mmu" if first == config.mmu_token_id else "lm"
    soi = eoi = None
    if task in ("t2i", "mmu"):
        for i in real:
            if ids[i] == config.soi_token_id:
                soi = i
                break
        if soi is not None:
            eoi = next(i for i in real if i > soi and ids[i] == config.eoi_token_id)
    mask = torch.zeros(len(chunk), total, dtype=torch.bool)
    for qi in range(len(chunk)):
        q = past + qi
        for k in range(total):
            if not valid[q]:
                mask[qi, k] = k == q
                continue
            if not valid[k]:
                continue
            allowed = k <= q
            if soi is not None and task == "t2i" and soi <= q <= eoi and k >= past:
                allowed = True  # image rows see all text and the whole image (nothing follows eoi)
            if soi is not None and task == "mmu" and k <= eoi and k >= real[0]:
                allowed = allowed or (q <= eoi)  # the prefix is bidirectional; later rows are causal anyway
            mask[qi, k] = allowed
    return mask


def check(rows: list[list[int]], config=CONFIG):
    ids, pad = left_pad(rows, config.pad_token_id)
    built = build_omni_attention_mask(ids, config, pad)
    assert built.shape == (len(rows), 1, ids.shape[1], ids.shape[1]) and built.dtype == torch.bool
    for b in range(len(rows)):
        expected = naive_mask(ids[b].tolist(), pad[b].bool().tolist(), config)
        assert torch.equal(built[b, 0], expected), f"row {b} differs"
    return built


def test_t2i_rows_with_left_padding():
    image = [CONFIG.mask_token_id] * 4 + list(range(110, 114))
    built = check(
        [
            t2i_prompt([5, 6, 7], image, CONFIG),
            t2i_prompt([5], image, CONFIG),
            t2i_prompt([1, 2, 3, 4, 5, 6], image, CONFIG),
        ]
    )
    # spot check: the last image token sees the first text token, a text token does not see the image
    row = built[1, 0]
    length = row.shape[0]
    assert row[length - 2, length - 1 - len(image) - 4]
    assert not row[length - len(image) - 3, length - 2]


def test_mmu_rows_with_left_padding():
    codes = torch.arange(6)
    built = check(
        [mmu_prompt(codes, [5, 6, 7, 8], CONFIG), mmu_prompt(codes, [9], CONFIG), mmu_prompt(codes, [1, 2], CONFIG)]
    )
    row = built[0, 0]
    assert row[1, 7] and row[2, 5]  # soi sees eoi; an image token sees a later image token
    assert not row[9, 10]  # text stays causal


def test_causal_rows_and_a_mixed_batch():
    image = list(range(110, 116))
    rows = [[3, 4, 5, 6, 7], [8, 9], mmu_prompt(torch.arange(3), [4, 4], CONFIG), t2i_prompt([9, 9], image, CONFIG)]
    built = check(rows)
    # plain text rows are exactly lower-triangular on their real tokens
    ids, pad = left_pad(rows, CONFIG.pad_token_id)
    real = pad[0].bool()
    causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
    assert torch.equal(built[0, 0][real][:, real], causal[real][:, real])


def test_plain_text_rows_ignore_image_markers():
    # an "lm" row that happens to contain <|soi|> without <|eoi|> stays causal (no error, no block)
    check([[3, CONFIG.soi_token_id, 4, 5]])


def test_cached_chunk_is_one_block_over_the_cached_text():
    """Pipeline pattern: text prefix in the cache, then `[soi] image [eoi]` as one chunk."""
    image = [CONFIG.mask_token_id] * 5
    full = t2i_prompt([5, 6, 7], image, CONFIG)
    prefix_length = 6  # [t2i][sot] 5 6 7 [eot]
    chunk = torch.tensor([full[prefix_length:]])
    codes = tasks_to_codes(["t2i"], 1, chunk.device)
    built = build_omni_attention_mask(
        chunk, CONFIG, torch.ones(1, len(full)), past_length=prefix_length, task_codes=codes
    )
    expected = naive_mask(full, [True] * len(full), CONFIG, past=prefix_length, task="t2i")
    assert torch.equal(built[0, 0], expected)
    assert built[0, 0].all()  # every chunk token sees all text and the whole block
    # and it equals the matching rows of the uncached mask
    uncached = build_omni_attention_mask(torch.tensor([full]), CONFIG)
    assert torch.equal(uncached[0, 0, prefix_length:], built[0, 0])


def test_decoding_step_is_causal_over_the_cache():
    prompt = mmu_prompt(torch.arange(4), [5, 6], CONFIG)
    step = torch.tensor([[7]])
    built = build_omni_attention_mask(
        step, CONFIG, torch.ones(1, len(prompt) + 1), past_length=len(prompt), task_codes=torch.tensor([2])
    )
    assert built.shape == (1, 1, 1, len(prompt) + 1) and built.all()


def test_unclosed_image_block_is_an_error():
    ids = torch.tensor([[CONFIG.t2i_token_id, 3, CONFIG.soi_token_id, 110, 111]])
    with pytest.raises(ValueError, match=r"input_ids row 0: <\|soi\|>.*no <\|eoi\|>"):
        build_omni_attention_mask(ids, CONFIG)


def test_unknown_task_names_are_rejected():
    with pytest.raises(ValueError, match=r"tasks\[1\]='video'"):
        tasks_to_codes(["t2i", "video"], 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="tasks: got 1 task names for a batch of 2"):
        tasks_to_codes(["t2i"], 2, torch.device("cpu"))
