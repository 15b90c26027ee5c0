"""Omni-attention: the one place that decides which token may attend to which.

Show-o's rule, vectorised and made safe for left padding and for KV-cached chunks:

* text is causal;
* t2i rows: the block `<|soi|> image <|eoi|>` attends bidirectionally to the whole block and to all text before it;
* mmu rows: the prefix `<|mmu|><|soi|> image <|eoi|>` is bidirectional; everything after it is causal and sees it;
* padding columns are never attended to; padding rows attend only to themselves (their output is unused, and a
  fully masked row would turn into NaN in softmax).

A bidirectional block is looked for only in the tokens of the current forward pass; tokens already in the cache are
visible causally. This is exactly what cached decoding needs: an mmu answer token sees the cached prefix, and a t2i
chunk `<|soi|> codes <|eoi|>` over a cached text prefix is one block.
"""

from __future__ import annotations

import torch

from .configuration_unif2ace import TASKS, UniF2aceConfig

TASK_LM, TASK_T2I, TASK_MMU = (TASKS.index(name) for name in ("lm", "t2i", "mmu"))


def first_token_of_rows(input_ids: torch.LongTensor, padding_mask: torch.Tensor) -> torch.LongTensor:
    """The first non-padding token of every row (left padding); -1 for an all-padding row."""
    first_index = padding_mask.int().argmax(dim=1)
    first = input_ids.gather(1, first_index[:, None]).squeeze(1)
    return torch.where(padding_mask.any(dim=1), first, torch.full_like(first, -1))


def infer_tasks(
    input_ids: torch.LongTensor,
    padding_mask: torch.Tensor,
    config: UniF2aceConfig,
    tasks: list[str] | tuple[str, ...] | str | torch.Tensor | None = None,
) -> torch.LongTensor | None:
    """Task code per row (indices into `TASKS`).

    Explicit `tasks` win. Otherwise a row's task is read from its first token (`<|t2i|>`, `<|mmu|>`, or plain text).
    Rows of a chunk with no task token (a decoding step) get `None` here; the caller then reuses the task recorded at
    prefill time.
    """
    batch_size = input_ids.shape[0]
    if tasks is not None:
        return tasks_to_codes(tasks, batch_size, input_ids.device)
    first = first_token_of_rows(input_ids, padding_mask)
    reserved = [i for i in config.reserved_task_token_ids if (first == i).any()]
    if reserved:
        row = int((first == reserved[0]).nonzero()[0, 0])
        raise ValueError(
            f"input_ids row {row} starts with task token {reserved[0]}, which this model does not serve "
            f"(supported task tokens: <|t2i|>={config.t2i_token_id}, <|mmu|>={config.mmu_token_id})."
        )
    codes = torch.full_like(first, TASK_LM)
    codes = torch.where(first == config.t2i_token_id, torch.full_like(codes, TASK_T2I), codes)
    codes = torch.where(first == config.mmu_token_id, torch.full_like(codes, TASK_MMU), codes)
    return codes


def tasks_to_codes(tasks, batch_size: int, device: torch.device) -> torch.LongTensor:
    """Validate user-given task names (or codes) and turn them into a LongTensor of codes."""
    if isinstance(tasks, torch.Tensor):
        codes = tasks.to(device=device, dtype=torch.long).reshape(-1)
        if codes.numel() == 1:
            codes = codes.expand(batch_size)
        if codes.numel() != batch_size or codes.min() < 0 or codes.max() >= len(TASKS):
            raise ValueError(f"tasks: expected {batch_size} codes in [0, {len(TASKS)}) ({TASKS}), got {tasks.tolist()}")
        return codes.clone()
    names = [tasks] * batch_size if isinstance(tasks, str) else list(tasks)
    if len(names) != batch_size:
        raise ValueError(f"tasks: got {len(names)} task names for a batch of {batch_size} rows")
    for row, name in enumerate(names):
        if name not in TASKS:
            raise ValueError(f"tasks[{row}]={name!r} is not a known task; expected one of {TASKS}")
    return torch.tensor([TASKS.index(name) for name in names], dtype=torch.long, device=device)


def find_bidirectional_blocks(
    input_ids: torch.LongTensor,
    padding_mask: torch.Tensor,
    config: UniF2aceConfig,
    task_codes: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.LongTensor, torch.LongTensor]:
    """Locate each row's bidirectional block in this chunk.

    Only t2i and mmu rows have blocks (`task_codes`, inferred from the first token when not given); plain text rows
    stay causal whatever ids they contain. Returns `(in_block, soi_index, eoi_index)`: a `(B, L)` boolean mask of block tokens, and the positions of the
    row's first `<|soi|>` and the first `<|eoi|>` after it (-1 where absent). The block runs from `<|soi|>` (or from
    the row's leading `<|mmu|>`) to `<|eoi|>` inclusive.
    """
    batch_size, length = input_ids.shape
    if task_codes is None:
        task_codes = infer_tasks(input_ids, padding_mask, config)
    multimodal_row = (task_codes == TASK_T2I) | (task_codes == TASK_MMU)
    positions = torch.arange(length, device=input_ids.device).expand(batch_size, length)
    is_soi = (input_ids == config.soi_token_id) & padding_mask & multimodal_row[:, None]
    has_soi = is_soi.any(dim=1)
    soi_index = torch.where(has_soi, is_soi.int().argmax(dim=1), torch.full_like(has_soi, -1, dtype=torch.long))
    is_eoi_after = (
        (input_ids == config.eoi_token_id) & padding_mask & (positions > soi_index[:, None]) & has_soi[:, None]
    )
    has_eoi = is_eoi_after.any(dim=1)
    eoi_index = torch.where(has_eoi, is_eoi_after.int().argmax(dim=1), torch.full_like(has_eoi, -1, dtype=torch.long))
    broken = has_soi & ~has_eoi
    if broken.any():
        row = int(broken.nonzero()[0, 0])
        raise ValueError(
            f"input_ids row {row}: <|soi|> (id {config.soi_token_id}) at position {int(soi_index[row])} has no "
            f"<|eoi|> (id {config.eoi_token_id}) after it; an image block must be closed."
        )
    first_index = padding_mask.int().argmax(dim=1)
    first = input_ids.gather(1, first_index[:, None]).squeeze(1)
    starts_with_mmu = (first == config.mmu_token_id) & padding_mask.any(dim=1)
    block_start = torch.where(starts_with_mmu & has_soi, first_index, soi_index)
    in_block = has_soi[:, None] & (positions >= block_start[:, None]) & (positions <= eoi_index[:, None])
    return in_block & padding_mask, soi_index, eoi_index


def build_omni_attention_mask(
    input_ids: torch.LongTensor,
    config: UniF2aceConfig,
    attention_mask: torch.Tensor | None = None,
    past_length: int = 0,
    task_codes: torch.LongTensor | None = None,
) -> torch.Tensor:
    """Boolean `(B, 1, L, past_length + L)` mask, True where attention is allowed.

    Args:
        input_ids: `(B, L)` tokens of this forward pass.
        attention_mask: 2-D `(B, past_length + L)` padding mask (1 = real token), or None for no padding.
        past_length: number of tokens already in the KV cache.
        task_codes: `(B,)` row tasks (indices into `TASKS`); inferred from each row's first token when None. A
            cached chunk has no task token, so the caller passes the task recorded at prefill.
    """
    batch_size, length = input_ids.shape
    device = input_ids.device
    total = past_length + length
    if attention_mask is None:
        key_valid = torch.ones(batch_size, total, dtype=torch.bool, device=device)
    else:
        key_valid = attention_mask.to(device=device).bool()
    query_valid = key_valid[:, past_length:]
    in_block, _, _ = find_bidirectional_blocks(input_ids, query_valid, config, task_codes)

    query_pos = torch.arange(past_length, total, device=device)
    key_pos = torch.arange(total, device=device)
    causal = key_pos[None, :] <= query_pos[:, None]  # (L, T)
    key_in_block = torch.cat([torch.zeros(batch_size, past_length, dtype=torch.bool, device=device), in_block], dim=1)
    same_block = in_block[:, :, None] & key_in_block[:, None, :]  # (B, L, T)
    allowed = (causal[None] | same_block) & key_valid[:, None, :]
    own_position = key_pos[None, :] == query_pos[:, None]
    allowed = torch.where(query_valid[:, :, None], allowed, own_position[None].expand(batch_size, -1, -1))
    return allowed[:, None]


def segment_visibility(segment_ids: torch.LongTensor) -> torch.Tensor:
    """Boolean `(B, 1, L, L)`: True where query and key share a segment or the key is in segment 0.

    Packed training rows (`UniF2aceProcessor.build_packed_mmu_training_inputs`) put several question/answer segments
    after one shared image prefix (segment 0). AND-ed with `build_omni_attention_mask`, this lets each segment see
    the prefix and itself but never another segment, so a packed row computes what separate rows would.
    """
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids: expected shape (batch, length), got {tuple(segment_ids.shape)}")
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    shared = (segment_ids == 0)[:, None, :]
    return (same | shared)[:, None]


def validate_4d_mask(attention_mask: torch.Tensor, batch_size: int, query_length: int, key_length: int) -> None:
    """A user-built 4-D mask must be `(B or 1, 1, query_length, key_length)`."""
    shape = tuple(attention_mask.shape)
    if (
        attention_mask.dim() != 4
        or shape[0] not in (1, batch_size)
        or shape[1] != 1
        or shape[2] != query_length
        or shape[3] != key_length
    ):
        raise ValueError(
            f"attention_mask: a 4-D mask must have shape ({batch_size}, 1, {query_length}, {key_length}) "
            f"(batch, 1, query length, past + query length), got {shape}"
        )
    if attention_mask.dtype != torch.bool and not attention_mask.is_floating_point():
        raise ValueError(
            f"attention_mask: a 4-D mask must be bool (True = attend) or additive float, got {attention_mask.dtype}"
        )


__all__ = [
    "build_omni_attention_mask",
    "find_bidirectional_blocks",
    "infer_tasks",
    "segment_visibility",
    "tasks_to_codes",
    "validate_4d_mask",
    "TASK_LM",
    "TASK_T2I",
    "TASK_MMU",
]
