"""Measuring a tokenizer on held-out images: PSNR, codebook usage, and whether the attribute judge still reads
the same attributes from reconstructions as from the originals.

Reconstructions are rounded to uint8 before any measurement, as a saved PNG would be.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..modeling.image_tokenizer import UniF2aceVQModel
from .tokenizer_data import to_pil, to_pixel_values

USAGE_IMAGES = 256
"""Codebook usage is the share of codes that occur in the codes of the first 256 images."""


@torch.inference_mode()
def reconstruct(
    model: UniF2aceVQModel, images: torch.Tensor, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `(N, H, W, 3)` -> (uint8 reconstructions of the same shape, codes `(N, h*w)`)."""
    outputs, all_codes = [], []
    for start in range(0, len(images), batch_size):
        pixel_values = to_pixel_values(images[start : start + batch_size].to(model.device), model.dtype)
        codes = model.encode(pixel_values)
        decoded = model.decode(codes)
        outputs.append(((decoded.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
        all_codes.append(codes.cpu())
    return torch.cat(outputs), torch.cat(all_codes)


def psnr(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 images (peak 255)."""
    mse = (original.float() - reconstruction.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def _judge_hits(predictions: list[dict], truth: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """(correct, scored) counts per category; null truth values and categories the judge does not predict are
    skipped."""
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for predicted, labels in zip(predictions, truth):
        for category, value in labels.items():
            if value is None or category not in predicted:
                continue
            hits[category] = hits.get(category, 0) + (predicted[category] == value)
            totals[category] = totals.get(category, 0) + 1
    return hits, totals


def judge_accuracy(predictions: list[dict], truth: list[dict]) -> float:
    """Share of (image, category) pairs where the prediction equals the truth (null truth values are skipped)."""
    hits, totals = _judge_hits(predictions, truth)
    return sum(hits.values()) / max(sum(totals.values()), 1)


def judge_accuracy_by_category(predictions: list[dict], truth: list[dict]) -> dict[str, float]:
    """`judge_accuracy` per category, to see which attributes a tokenizer's codes lose."""
    hits, totals = _judge_hits(predictions, truth)
    return {category: hits[category] / totals[category] for category in sorted(totals)}


def comparison_grid(original: torch.Tensor, reconstruction: torch.Tensor, columns: int = 8) -> Image.Image:
    """Originals in the top row, their reconstructions below (uint8 `(N, H, W, 3)` inputs)."""
    count = min(columns, len(original))
    height, width = original.shape[1:3]
    grid = Image.new("RGB", (count * width, 2 * height), (255, 255, 255))
    for row, batch in enumerate((original, reconstruction)):
        for column in range(count):
            grid.paste(Image.fromarray(batch[column].numpy()), (column * width, row * height))
    return grid


def evaluate_tokenizer(
    model: UniF2aceVQModel,
    images: torch.Tensor,
    attributes: list[dict] | None = None,
    judge=None,
    batch_size: int = 64,
    grid_path: str | Path | None = None,
) -> dict:
    """PSNR (mean over images), codebook usage over the first 256 images, and with a judge its accuracy on the
    originals and on the reconstructions (against `attributes` when given, else reconstruction-vs-original
    agreement)."""
    model.eval()
    reconstruction, codes = reconstruct(model, images, batch_size)
    values = psnr(images, reconstruction)
    used = torch.unique(codes[:USAGE_IMAGES]).numel()
    result = {
        "num_images": len(images),
        "image_size": int(images.shape[1]),
        "codes_per_image": int(codes.shape[1]),
        "codebook_size": model.config.codebook_size,
        "psnr": values.mean().item(),
        "psnr_min": values.min().item(),
        "codebook_usage": used / model.config.codebook_size,
        "codes_used": used,
        "usage_images": min(USAGE_IMAGES, len(images)),
    }
    if judge is not None:
        originals = judge(to_pil(to_pixel_values(images)))
        reconstructed = judge(to_pil(to_pixel_values(reconstruction)))
        if attributes is not None:
            result["judge_accuracy_originals"] = judge_accuracy(originals, attributes)
            result["judge_accuracy_reconstructions"] = judge_accuracy(reconstructed, attributes)
            by_original = judge_accuracy_by_category(originals, attributes)
            by_reconstruction = judge_accuracy_by_category(reconstructed, attributes)
            result["judge_accuracy_by_category"] = {
                category: {"originals": accuracy, "reconstructions": by_reconstruction[category]}
                for category, accuracy in by_original.items()
            }
        result["judge_agreement"] = judge_accuracy(reconstructed, originals)
    if grid_path is not None:
        grid_path = Path(grid_path)
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        comparison_grid(images, reconstruction).save(grid_path)
        result["grid"] = str(grid_path)
    return result


__all__ = [
    "evaluate_tokenizer",
    "reconstruct",
    "psnr",
    "judge_accuracy",
    "judge_accuracy_by_category",
    "comparison_grid",
    "USAGE_IMAGES",
]
