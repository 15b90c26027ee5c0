"""Pre-compute image codes (and semantic-encoder features) once per dataset (`datasets.map`), so training never re-runs the image tokenizer.

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
SEMANTIC_COLUMN = "semantic_features"


def tokenizer_digest(vq_model: torch.nn.Module, image_size: int) -> str:
    """Short digest of an image tokenizer's weights and input size (the cache key)."""
    digest = hashlib.sha256(f"size={image_size}".encode())
    for name, tensor in sorted(vq_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _add_image_column(
    dataset: Dataset,
    network: torch.nn.Module,
    compute,
    column: str,
    feature,
    key: str,
    image_size: int,
    batch_size: int,
    image_column: str,
) -> Dataset:
    """`dataset.map` of `compute(pixel_values) -> list` into `column`, fingerprinted by the network's weights."""
    if image_column not in dataset.column_names:
        raise ValueError(f"dataset: has no {image_column!r} column (columns: {dataset.column_names})")
    processor = UniF2aceImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    network.eval()

    def encode(batch: dict) -> dict:
        with torch.no_grad():
            return {column: compute(processor(batch[image_column])["pixel_values"])}

    features = dataset.features.copy()
    features[column] = feature
    fingerprint = hashlib.sha256(
        f"{dataset._fingerprint}/{key}{tokenizer_digest(network, image_size)}/{image_column}".encode()
    ).hexdigest()[:32]
    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        desc=column.replace("_", " "),
    )


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
    dtype = "uint16" if int(vq_model.config.codebook_size) <= 65536 else "int32"

    def compute(pixels: torch.Tensor) -> list:
        return vq_model.encode(pixels.to(device=vq_model.device, dtype=vq_model.dtype)).cpu().tolist()

    return _add_image_column(
        dataset, vq_model, compute, CODES_COLUMN, Sequence(Value(dtype)), "", image_size, batch_size, image_column
    )


def add_semantic_features(
    dataset: Dataset,
    semantic_encoder: torch.nn.Module,
    image_size: int,
    batch_size: int = 32,
    image_column: str = "image",
) -> Dataset:
    """Return `dataset` with a `semantic_features` column: the frozen semantic encoder's `(tokens, dim)` features of
    each row's image (float16), for models whose Semantic expert reads them (`config.semantic_encoder`). Images go
    through the same image processor as for the codes, so training sees what the pipelines compute."""

    def compute(pixels: torch.Tensor) -> list:
        return semantic_encoder(pixels).half().cpu().tolist()

    feature = Sequence(Sequence(Value("float16")))
    return _add_image_column(
        dataset, semantic_encoder, compute, SEMANTIC_COLUMN, feature, "semantic/", image_size, batch_size, image_column
    )


__all__ = ["CODES_COLUMN", "SEMANTIC_COLUMN", "add_image_codes", "add_semantic_features", "tokenizer_digest"]
