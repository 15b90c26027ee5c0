"""Training losses of the image tokenizer: reconstruction (L1 + an image-gradient term), LFQ commitment and LFQ
entropy, and optionally a perceptual term from a feature network trained on SynthFace
(`training/perceptual_loss.py`).

Pixel-level perceptual term: no network is downloaded (no LPIPS/VGG, no GAN). SynthFace faces are flat colour
regions whose labels live in thin lines and small dots (eyebrow shapes, freckles, moles, glasses rims); an L1 loss on
the horizontal and vertical finite differences weights exactly those edges, costs two subtractions, and needs no
weights. See `docs/decisions.md` ("Image tokenizer").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

EXACT_ENTROPY_MAX_BITS = 12
"""Up to 2^12 codes the batch code distribution is computed exactly; above, bits are treated as independent."""


@dataclass
class TokenizerLossWeights:
    """Weights of the terms of [`tokenizer_loss`]."""

    l1: float = 1.0
    gradient: float = 0.5
    mse: float = 0.0
    commitment: float = 0.1
    entropy: float = 0.1
    entropy_temperature: float = 1.0
    perceptual: float = 0.0


def image_gradient_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of two image batches."""
    dx = (reconstruction[..., :, 1:] - reconstruction[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (reconstruction[..., 1:, :] - reconstruction[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def _binary_entropy(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p + log_q.exp() * log_q)


def lfq_entropy_terms(latents: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-position code entropy, entropy of the batch's mean code distribution), both in nats per bit.

    A position's soft code distribution is `softmax(-||z - c||² / τ)` over the codes `c ∈ {±1}^d`; it factorises
    over bits with `p(bit=1) = sigmoid(4 z / τ)`, so its entropy is the sum of the bit entropies. The batch-mean
    distribution does not factorise; for up to 2^12 codes it is formed exactly (one `(N, d) @ (d, 2^d)` product),
    otherwise per bit (an upper bound that ignores correlations between bits).
    """
    d = latents.shape[1]
    z = latents.float().permute(0, 2, 3, 1).reshape(-1, d)
    log_p1 = F.logsigmoid(4.0 * z / temperature)
    log_p0 = F.logsigmoid(-4.0 * z / temperature)
    sample_entropy = _binary_entropy(log_p1, log_p0).sum(-1).mean() / d
    if d <= EXACT_ENTROPY_MAX_BITS:
        powers = 2 ** torch.arange(d - 1, -1, -1, device=z.device)
        bits = ((torch.arange(2**d, device=z.device).unsqueeze(1) // powers) % 2).float()  # [2^d, d], MSB first
        log_q = log_p1 @ bits.T + log_p0 @ (1 - bits).T  # [N, 2^d]
        mean_q = torch.logsumexp(log_q, dim=0) - math.log(z.shape[0])
        codebook_entropy = -(mean_q.exp() * mean_q).sum() / d
    else:
        mean_p1 = log_p1.exp().mean(0).clamp(1e-7, 1 - 1e-7)
        codebook_entropy = _binary_entropy(mean_p1.log(), (1 - mean_p1).log()).mean()
    return sample_entropy, codebook_entropy


def commitment_loss(latents: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the latents to their signs: keeps the encoder output near the ±1 codes."""
    latents = latents.float()
    return (latents - torch.where(latents > 0, 1.0, -1.0)).pow(2).mean()


def tokenizer_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    latents: torch.Tensor,
    weights: TokenizerLossWeights,
    perceptual_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """All terms (unweighted) plus `loss`, their weighted sum; also the batch PSNR in dB (images in [-1, 1]).

    `perceptual_loss(reconstruction, target)` (e.g. `training.perceptual_loss.PerceptualFeatureLoss`) is required
    when `weights.perceptual > 0` and adds the `perceptual` term."""
    if weights.perceptual > 0 and perceptual_loss is None:
        raise ValueError("`perceptual_loss`: the perceptual weight is > 0 but no perceptual network was given.")
    reconstruction, target = reconstruction.float(), target.float()
    terms = {
        "l1": (reconstruction - target).abs().mean(),
        "mse": (reconstruction - target).pow(2).mean(),
        "gradient": image_gradient_loss(reconstruction, target),
        "commitment": commitment_loss(latents),
    }
    sample_entropy, codebook_entropy = lfq_entropy_terms(latents, weights.entropy_temperature)
    terms["entropy"] = sample_entropy - codebook_entropy
    if perceptual_loss is not None:
        terms["perceptual"] = perceptual_loss(reconstruction, target)
    terms["codebook_entropy"] = codebook_entropy.detach()
    terms["loss"] = (
        weights.l1 * terms["l1"]
        + weights.mse * terms["mse"]
        + weights.gradient * terms["gradient"]
        + weights.commitment * terms["commitment"]
        + weights.entropy * terms["entropy"]
        + weights.perceptual * terms.get("perceptual", 0.0)
    )
    with torch.no_grad():
        clamped_mse = (reconstruction.clamp(-1, 1) - target).pow(2).mean()
        terms["psnr"] = 10 * torch.log10(4.0 / clamped_mse.clamp_min(1e-10))
    return terms


__all__ = [
    "TokenizerLossWeights",
    "tokenizer_loss",
    "lfq_entropy_terms",
    "image_gradient_loss",
    "commitment_loss",
    "EXACT_ENTROPY_MAX_BITS",
]
