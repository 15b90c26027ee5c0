"""Pre-compute image codes once per dataset (`datasets.map`), so training never re-runs the image tokenizer.

`datasets` caches the mapped table next to the dataset's own cache files; the fingerprint is derived from the
dataset's fingerprint and a digest of the tokenizer's weights and the image size, so a different tokenizer gives a
different cache and the same one is reused across runs and processes.
"""

from __future__ import annotations

import hashlib

import torch
from datasets import Dataset, Sequence, Value

from ..processing_unif2ace import UniF2aceImageProcessor

CODES_COLUMN = "codes"


def tokenizer_digest(vq_model: torch.nn.Module, image_size: int) -> str:
    """Short digest of an image tokenizer's weights and input size (the cache key)."""
    digest = hashlib.sha256(f"size={image_size}".encode())
    for name, tensor in sorted(vq_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def add_image_codes(
    dataset: Dataset,
    vq_model: torch.nn.Module,
    image_size: int,
    batch_size: int = 32,
    image_column: str = "image",
) -> Dataset:
    """Return `dataset` with a `codes` column: the `(h*w,)` codes of each row's image (uint16 when they fit).

    Images go through the model's own image processor (shorter side to `image_size`, centre crop, [-1, 1]).
    """
    if image_column not in dataset.column_names:
        raise ValueError(f"dataset: has no {image_column!r} column (columns: {dataset.column_names})")
    processor = UniF2aceImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    vq_model = vq_model.eval()
    codebook_size = int(vq_model.config.codebook_size)
    dtype = "uint16" if codebook_size <= 65536 else "int32"

    def encode(batch: dict) -> dict:
        pixels = processor(batch[image_column])["pixel_values"]
        with torch.no_grad():
            codes = vq_model.encode(pixels.to(device=vq_model.device, dtype=vq_model.dtype))
        return {CODES_COLUMN: codes.cpu().tolist()}

    features = dataset.features.copy()
    features[CODES_COLUMN] = Sequence(Value(dtype))
    fingerprint = hashlib.sha256(
        f"{dataset._fingerprint}/{tokenizer_digest(vq_model, image_size)}/{image_column}".encode()
    ).hexdigest()[:32]
    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        desc="image codes",
    )


__all__ = ["CODES_COLUMN", "add_image_codes", "tokenizer_digest"]
