"""Mixed training batches: text-to-image rows (noised codes) and understanding rows (answer labels) in one batch.

Every random choice for a row (its task, caption dropout, which question, the mask ratio and the masked positions)
comes from a generator seeded by `(seed, epoch, row index)`, never from global state. So a row is noised the same way
whichever batch, process or resumed run it lands in: resuming gives the same batches, and 2 processes × batch b see
exactly the rows and masks of 1 process × batch 2b.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler
from ..processing_unif2ace import UniF2aceProcessor
from .codes_cache import CODES_COLUMN, SEMANTIC_COLUMN


def row_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one row of one epoch (stable across Python runs, unlike `hash`)."""
    digest = hashlib.sha256(f"unif2ace-train/{seed}/{epoch}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class TrainingCollator:
    """Turn dataset rows (with pre-computed `codes`) into one left-padded mixed batch.

    Each row needs `codes`, `caption` and `qa` (a list of `{question, answer}`), plus `_epoch` and `_index` (set by
    the trainer's row sampler) for its random stream.

    Returns `input_ids`, `attention_mask`, `labels` (understanding targets, unshifted, answer tokens only),
    `image_labels` (the code at every masked t2i image position, -100 elsewhere), `mask_ratio` (per row; 0 for
    understanding rows) and `num_mmu_tokens` / `num_image_tokens` (the counts the loss is normalised by).

    With `questions_per_image > 1` an understanding row packs several questions about its image (the image tokens,
    most of a row, are then computed once for all of them) and the batch also has `segment_ids` and `position_ids`
    (see `UniF2aceProcessor.build_packed_mmu_training_inputs`).
    """

    processor: UniF2aceProcessor
    scheduler: UniF2aceMaskGITScheduler
    seed: int = 0
    t2i_fraction: float = 0.5
    caption_dropout: float = 0.1
    caption_qa_fraction: float = 0.2
    max_answer_length: int = 256
    questions_per_image: int = 1

    def __post_init__(self) -> None:
        value = self.questions_per_image
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"questions_per_image: expected an integer >= 1, got {value!r}")

    @property
    def packs_questions(self) -> bool:
        return self.questions_per_image > 1

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        t2i: list[tuple[torch.Tensor, str, torch.Generator]] = []
        mmu: list[tuple[torch.Tensor, list[tuple[str | None, str]]]] = []
        t2i_features: list[torch.Tensor] = []
        mmu_features: list[torch.Tensor] = []
        with_features = bool(rows) and SEMANTIC_COLUMN in rows[0]
        for row in rows:
            seed = row_seed(self.seed, int(row["_epoch"]), int(row["_index"]))
            rng = random.Random(seed)
            codes = torch.as_tensor(row[CODES_COLUMN], dtype=torch.long)
            features = torch.as_tensor(row[SEMANTIC_COLUMN], dtype=torch.float32) if with_features else None
            if rng.random() < self.t2i_fraction:
                caption = "" if rng.random() < self.caption_dropout else row["caption"]
                t2i.append((codes, caption, torch.Generator().manual_seed(seed)))
                t2i_features.append(features)
            else:
                mmu.append((codes, self._conversation(row, rng)))
                mmu_features.append(features)
        parts = []
        if t2i:
            parts.append(self._t2i_part(t2i))
        if mmu:
            parts.append(self._mmu_part(mmu))
        batch = _concat_left_padded(parts, self.processor.tokenizer.pad_token_id)
        if with_features:
            # the same row order as the parts: text-to-image rows first, then understanding rows
            batch["semantic_features"] = torch.stack(t2i_features + mmu_features)
        batch["num_mmu_tokens"] = (batch["labels"][:, 1:] != -100).sum()
        batch["num_image_tokens"] = (batch["image_labels"] != -100).sum()
        return batch

    def _conversation(self, row: dict[str, Any], rng: random.Random) -> list[tuple[str | None, str]]:
        """The `(question, answer)` pairs of one understanding row; a `None` question asks for the caption.

        Unpacked: one pair, the caption with probability `caption_qa_fraction` (or when the row has no questions),
        else a random question. Packed: up to `questions_per_image` distinct questions in random order, plus the
        caption with probability `caption_qa_fraction` (always when the row has no questions).
        """
        qa = row.get("qa") or []
        caption = (None, row["caption"])
        if not self.packs_questions:
            if not qa or rng.random() < self.caption_qa_fraction:
                return [caption]
            pair = qa[rng.randrange(len(qa))]
            return [(pair["question"], pair["answer"])]
        pairs = [(pair["question"], pair["answer"]) for pair in rng.sample(qa, min(len(qa), self.questions_per_image))]
        if not qa or rng.random() < self.caption_qa_fraction:
            pairs.insert(rng.randrange(len(pairs) + 1), caption)
        return pairs

    def _t2i_part(self, items: list[tuple[torch.Tensor, str, torch.Generator]]) -> dict[str, torch.Tensor]:
        codes = torch.stack([item[0] for item in items])
        generators = [item[2] for item in items]
        progress = torch.stack([torch.rand((), generator=g) for g in generators])
        mask_ratio = self.scheduler.mask_ratio(progress).float()
        noisy, mask = self.scheduler.add_noise(codes, mask_ratio=mask_ratio, generator=generators)
        # masked slots must become the model's mask id: build_t2i_inputs adds image_token_offset to every slot
        mask_slot = self.processor.mask_token_id - self.processor.image_token_offset
        slots = noisy.masked_fill(mask, mask_slot)
        batch = dict(self.processor.build_t2i_inputs([item[1] for item in items], image_ids=slots))
        length = batch["input_ids"].shape[1]
        num_tokens = codes.shape[1]
        image_labels = torch.full((len(items), length), -100, dtype=torch.long)
        # rows end with `[soi] codes [eoi]` (left padding aligns the ends)
        image_labels[:, length - 1 - num_tokens : length - 1] = codes.masked_fill(~mask, -100)
        batch["image_labels"] = image_labels
        batch["labels"] = torch.full_like(image_labels, -100)
        batch["mask_ratio"] = mask_ratio
        if self.packs_questions:
            batch["segment_ids"] = torch.zeros_like(image_labels)
            batch["position_ids"] = (batch["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        return batch

    def _mmu_part(self, items: list[tuple[torch.Tensor, list[tuple[str | None, str]]]]) -> dict[str, torch.Tensor]:
        codes = torch.stack([item[0] for item in items])
        if self.packs_questions:
            batch = dict(
                self.processor.build_packed_mmu_training_inputs(
                    codes, [item[1] for item in items], max_answer_length=self.max_answer_length
                )
            )
        else:
            batch = dict(
                self.processor.build_mmu_training_inputs(
                    codes,
                    [item[1][0][0] for item in items],
                    [item[1][0][1] for item in items],
                    max_answer_length=self.max_answer_length,
                )
            )
        batch["image_labels"] = torch.full_like(batch["labels"], -100)
        batch["mask_ratio"] = torch.zeros(len(items))
        return batch


def _concat_left_padded(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack left-padded sub-batches of different lengths into one left-padded batch."""
    length = max(part["input_ids"].shape[1] for part in parts)
    fills = {"input_ids": pad_id, "attention_mask": 0, "labels": -100, "image_labels": -100}
    if "segment_ids" in parts[0]:
        fills |= {"segment_ids": 0, "position_ids": 0}
    batch: dict[str, torch.Tensor] = {}
    for key, fill in fills.items():
        padded = []
        for part in parts:
            value = part[key]
            extra = length - value.shape[1]
            if extra:
                value = torch.cat([value.new_full((value.shape[0], extra), fill), value], dim=1)
            padded.append(value)
        batch[key] = torch.cat(padded)
    batch["mask_ratio"] = torch.cat([part["mask_ratio"] for part in parts])
    return batch


__all__ = ["TrainingCollator", "row_seed"]
