"""Training losses of the image tokenizer: reconstruction (L1 + an image-gradient term), LFQ commitment and LFQ
entropy, and optionally two terms from a feature network trained on SynthFace (`training/perceptual_loss.py`):
a perceptual feature distance and the disagreement of its attribute predictions.

Pixel-level perceptual term: no network is downloaded (no LPIPS/VGG, no GAN). SynthFace faces are flat colour
regions whose labels live in thin lines and small dots (eyebrow shapes, freckles, moles, glasses rims); an L1 loss on
the horizontal and vertical finite differences weights exactly those edges, costs two subtractions, and needs no
weights. See `docs/decisions.md` ("Image tokenizer").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .image_tokenizer import code_bits

EXACT_ENTROPY_MAX_BITS = 16
"""Up to 2^16 codes the batch code distribution is computed exactly; above, bits are treated as independent."""


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
    attribute: float = 0.0

    def __post_init__(self) -> None:
        for name in ("gradient", "mse", "perceptual", "attribute"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}_weight` must be >= 0, got {getattr(self, name)}.")

    @property
    def needs_feature_network(self) -> bool:
        return self.perceptual > 0 or self.attribute > 0


def image_gradient_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of two image batches."""
    dx = (reconstruction[..., :, 1:] - reconstruction[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (reconstruction[..., 1:, :] - reconstruction[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def _binary_entropy(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p + log_q.exp() * log_q)


def _bit_pattern_probabilities(log_p1: torch.Tensor, log_p0: torch.Tensor) -> torch.Tensor:
    """`(N, k)` log-probabilities of each bit being 1 / 0 -> `(N, 2^k)` probabilities of every k-bit pattern, most
    significant bit first."""
    bits = code_bits(log_p1.shape[1], device=log_p1.device).to(log_p1.dtype)  # [2^k, k]
    return (log_p1 @ bits.T + log_p0 @ (1 - bits).T).exp()


def lfq_entropy_terms(latents: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-position code entropy, entropy of the batch's mean code distribution), both in nats per bit.

    A position's soft code distribution is `softmax(-||z - c||² / τ)` over the codes `c ∈ {±1}^d`; it factorises
    over bits with `p(bit=1) = sigmoid(4 z / τ)`, so its entropy is the sum of the bit entropies. The batch-mean
    distribution does not factorise, but each position's does into its high and low halves of bits, so the batch mean
    is one `(2^⌊d/2⌋, N) @ (N, 2^⌈d/2⌉)` product: exact, and for 10 bits about 10× faster than forming all
    `N × 2^d` code probabilities. Above 2^16 codes bits are treated as independent (an upper bound that ignores
    their correlations).
    """
    d = latents.shape[1]
    with torch.autocast(latents.device.type, enabled=False):
        z = latents.float().permute(0, 2, 3, 1).reshape(-1, d)
        log_p1 = F.logsigmoid(4.0 * z / temperature)
        log_p0 = F.logsigmoid(-4.0 * z / temperature)
        sample_entropy = _binary_entropy(log_p1, log_p0).sum(-1).mean() / d
        if d <= EXACT_ENTROPY_MAX_BITS:
            high = d // 2
            high_patterns = _bit_pattern_probabilities(log_p1[:, :high], log_p0[:, :high])  # [N, 2^high]
            low_patterns = _bit_pattern_probabilities(log_p1[:, high:], log_p0[:, high:])  # [N, 2^(d-high)]
            mean_q = high_patterns.T @ low_patterns / z.shape[0]  # [2^high, 2^(d-high)]: code = high * 2^(d-high) + low
            # codes no position can reach underflow to 0, where p log p is 0; the clamp keeps the gradient finite
            codebook_entropy = -(mean_q * mean_q.clamp_min(1e-30).log()).sum() / d
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
    perceptual_loss: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """All terms (unweighted) plus `loss`, their weighted sum; also the batch PSNR in dB (images in [-1, 1]).

    `perceptual_loss(reconstruction, target)` (e.g. `training.perceptual_loss.PerceptualFeatureLoss`) returns the
    `perceptual` and `attribute` terms; it is required when either weight is > 0."""
    if weights.needs_feature_network and perceptual_loss is None:
        raise ValueError(
            "`perceptual_loss`: the perceptual or attribute weight is > 0 but no perceptual network was given."
        )
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
        terms.update(perceptual_loss(reconstruction, target))
    terms["codebook_entropy"] = codebook_entropy.detach()
    terms["loss"] = (
        weights.l1 * terms["l1"]
        + weights.mse * terms["mse"]
        + weights.gradient * terms["gradient"]
        + weights.commitment * terms["commitment"]
        + weights.entropy * terms["entropy"]
        + weights.perceptual * terms.get("perceptual", 0.0)
        + weights.attribute * terms.get("attribute", 0.0)
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
