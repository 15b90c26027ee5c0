"""D3Diff: UniF²ace's image-generation loss (masked-token cross-entropy plus alpha times SEDD score entropy).

The absorbing ("mask") diffusion is parameterised by the fraction of image tokens that are masked, gamma, which the
training collator draws from the scheduler's masking schedule. Diffusion time tau runs from 0 (clean) to 1 (all
masked), i.e. tau = 1 - r for the scheduler's progress r, so gamma(tau) increases with tau.

Decisions (see `docs/decisions.md`, "Generation: D3Diff and the MaskGIT scheduler"):

* Noise level: the absorbing kernel keeps a token with probability e^-sigma, so we set 1 - e^-sigma = gamma, i.e.
  sigma = -log(1 - gamma) and dsigma/dtau = gamma'(tau) / (1 - gamma).
* Score: at a masked position the concrete score of token y is s_y = p_theta(y | x_t) * q(y | y) / q(MASK | y)
  = r * p_theta(y | x_t) with r = 1 / (e^sigma - 1) = (1 - gamma) / gamma (the paper's "p_theta / q_t" with the
  kernel's stay probability made explicit). It comes from the model's own softmax; there is no score head.
* Score entropy is the general SEDD formula sum_{y != MASK} s_y - r log s_{x0} + r (log r - 1), weighted by
  dsigma/dtau. For a posterior normalised over the non-mask columns it equals (gamma'/gamma) * CE per token.

This module is pure torch: it sits next to the model code and knows nothing of the scheduler or the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_ALPHA = 0.01
"""Weight of the score-entropy term (the paper's best ablation, v1 Tab. 3)."""

MIN_MASK_RATIO = 1e-3
"""gamma is clamped to [MIN_MASK_RATIO, 1 - MIN_MASK_RATIO] for the score term: at gamma = 0 the weight gamma'/gamma
is infinite and at gamma = 1 the factor r log r is 0 * -inf. SEDD caps its noise the same way (eps = 1e-3)."""

_SIGMOID_START, _SIGMOID_END, _SIGMOID_TAU = -3.0, 3.0, 1.0
"""Show-o's sigmoid masking schedule constants (shared with the scheduler's `sigmoid` schedule)."""

_REDUCTIONS = ("mean", "sum", "none")
_SCORE_REDUCTIONS = ("mean", "sum", "row_sum")


@dataclass
class D3DiffLossOutput:
    """Result of [`d3diff_loss`].

    Attributes:
        loss: `mask_loss + alpha * score_loss`.
        mask_loss: cross-entropy of the masked tokens, predicted in place.
        score_loss: dsigma/dtau-weighted score entropy of the masked tokens (before `alpha`).
        num_masked: number of masked (labelled) tokens in the batch.
    """

    loss: torch.Tensor
    mask_loss: torch.Tensor
    score_loss: torch.Tensor
    num_masked: torch.Tensor


def _pow_exponent(schedule: str) -> float:
    """Parse `pow<k>` (e.g. `pow2`, `pow0.5`) into k > 0."""
    try:
        exponent = float(schedule[3:])
    except ValueError:
        exponent = float("nan")
    if not schedule.startswith("pow") or not math.isfinite(exponent) or exponent <= 0:
        raise ValueError(
            f"schedule must be 'cosine', 'linear', 'sigmoid' or 'pow<k>' with k > 0 (e.g. 'pow2'), got {schedule!r}"
        )
    return exponent


def mask_ratio_rate(mask_ratio: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    """d gamma / d tau of a masking schedule, written as a function of gamma itself.

    Why in terms of gamma: the collator knows the mask ratio of each row, not a time; every schedule the scheduler
    offers is invertible, so the rate follows from gamma alone.

    Args:
        mask_ratio: gamma in (0, 1), any shape.
        schedule: `"cosine"` (gamma = cos(pi r / 2)), `"linear"` (1 - r), `"pow<k>"` (1 - r^k) or `"sigmoid"`
            (Show-o's, start -3, end 3, tau 1), with r = 1 - tau the sampling progress.
    """
    gamma = mask_ratio.to(torch.float32) if not mask_ratio.is_floating_point() else mask_ratio
    if schedule == "cosine":
        return (math.pi / 2) * torch.sqrt((1 - gamma * gamma).clamp_min(0))
    if schedule == "linear":
        return torch.ones_like(gamma)
    if schedule == "sigmoid":
        v_start = 1 / (1 + math.exp(-_SIGMOID_START / _SIGMOID_TAU))
        v_end = 1 / (1 + math.exp(-_SIGMOID_END / _SIGMOID_TAU))
        sig = v_end - gamma * (v_end - v_start)
        return sig * (1 - sig) * (_SIGMOID_END - _SIGMOID_START) / (_SIGMOID_TAU * (v_end - v_start))
    exponent = _pow_exponent(schedule)
    return exponent * (1 - gamma).clamp_min(0) ** ((exponent - 1) / exponent)


def score_entropy(
    log_score: torch.Tensor,
    target: torch.Tensor,
    sigma: torch.Tensor,
    mask_column: int | None = None,
) -> torch.Tensor:
    """SEDD's absorbing-state score entropy at masked positions, for arbitrary (not necessarily normalised) scores.

    Per position: sum_{y != MASK} s_y - r log s_{x0} + r (log r - 1), r = 1 / (e^sigma - 1). It is >= 0 and is 0
    exactly when s equals the true score r * p(. | x_t) concentrated on x0.

    Args:
        log_score: `(..., V)` log s_y for every column y.
        target: `(...)` the clean token x0 (a column index, never `mask_column`).
        sigma: noise level, broadcastable to `target`.
        mask_column: column of the MASK token in `log_score`, excluded from the sum; `None` when the columns are the
            codebook only.

    Returns:
        `(...)` score entropy, in float32 (float64 for float64 scores).
    """
    log_score = log_score.to(_compute_dtype(log_score))
    sigma = torch.as_tensor(sigma, device=log_score.device).to(log_score.dtype)
    log_r = -torch.log(torch.expm1(sigma))
    r = torch.exp(log_r)
    if mask_column is not None:
        keep = torch.ones(log_score.shape[-1], dtype=torch.bool, device=log_score.device)
        keep[mask_column] = False
        score_sum = torch.logsumexp(log_score[..., keep], dim=-1).exp()
    else:
        score_sum = torch.logsumexp(log_score, dim=-1).exp()
    log_score_x0 = log_score.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return score_sum - r * log_score_x0 + r * (log_r - 1)


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (reference computations); every other dtype (bf16, fp16, fp32) is computed in fp32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _per_row(value: torch.Tensor | float, labels: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Broadcast a scalar or `(B,)` per-row value to the shape of `labels`."""
    value = torch.as_tensor(value, device=labels.device).to(dtype)
    if value.ndim == 0:
        return value.expand(labels.shape)
    if value.ndim == 1 and value.shape[0] == labels.shape[0]:
        return value.view(-1, *([1] * (labels.ndim - 1))).expand(labels.shape)
    raise ValueError(
        f"{name} must be a float or a 1-D tensor with one value per row ({labels.shape[0]}), got shape "
        f"{tuple(value.shape)}"
    )


def d3diff_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask_ratio: torch.Tensor | float,
    alpha: float = DEFAULT_ALPHA,
    *,
    schedule: str = "cosine",
    rate: torch.Tensor | float | None = None,
    mask_column: int | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    score_reduction: str | None = None,
    min_mask_ratio: float = MIN_MASK_RATIO,
) -> D3DiffLossOutput:
    """D3Diff loss: masked-token cross-entropy + `alpha` * dsigma/dtau-weighted score entropy.

    Predictions are in place (no shift): position i's logits predict `labels[i]`. Only positions whose label is not
    `ignore_index` (the masked image tokens) count. Computation is in float32 for bf16/fp16/fp32 logits (float64
    logits stay float64).

    Args:
        logits: `(B, ..., V)` logits. Restricting them to the codebook columns (labels then being codebook indices)
            is the intended use: the score is then formed over exactly the non-mask tokens. With full-vocabulary
            logits, pass `mask_column` so the MASK column is left out of the score sum (the softmax still includes
            it, and the score term then equals r * (CE - p_MASK), see `docs/decisions.md`).
        labels: `(B, ...)` target column at masked positions, `ignore_index` elsewhere.
        mask_ratio: gamma of each row, a float or a `(B,)` tensor: the masking probability the row was noised with.
        alpha: weight of the score term.
        schedule: masking schedule the ratios came from; gives dgamma/dtau via [`mask_ratio_rate`].
        rate: dgamma/dtau per row (float or `(B,)`), overriding `schedule`.
        mask_column: MASK column in `logits`, if any.
        ignore_index: label of unmasked positions.
        reduction: `"mean"` over masked tokens (default), `"sum"`, or `"none"` (per-position tensors of the shape of
            `labels`, zero where unmasked).
        score_reduction: reduction of the score term alone, when it should differ from `reduction`: `"mean"`,
            `"sum"` or `"row_sum"` (summed over positions, averaged over rows: SEDD's convention, which makes the term
            about N times the mean CE, the paper's "~200x gap"; see `docs/decisions.md`). Not with `reduction="none"`.
        min_mask_ratio: gamma is clamped to `[min_mask_ratio, 1 - min_mask_ratio]` in the score term.

    Returns:
        [`D3DiffLossOutput`]. With no masked position every term is 0 (and still backpropagates, as zeros).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if score_reduction is not None and (score_reduction not in _SCORE_REDUCTIONS or reduction == "none"):
        raise ValueError(
            f"score_reduction must be None or one of {_SCORE_REDUCTIONS} (and reduction not 'none'), got "
            f"{score_reduction!r} with reduction={reduction!r}"
        )
    if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must have shape labels.shape + (V,); got logits {tuple(logits.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    if mask_column is not None and not 0 <= mask_column < logits.shape[-1]:
        raise ValueError(f"mask_column must index a column of logits (0..{logits.shape[-1] - 1}), got {mask_column}")
    if not 0 <= min_mask_ratio < 0.5:
        raise ValueError(f"min_mask_ratio must be in [0, 0.5), got {min_mask_ratio}")

    dtype = _compute_dtype(logits)
    gamma = _per_row(mask_ratio, labels, "mask_ratio", dtype).clamp(min_mask_ratio, 1 - min_mask_ratio)
    if rate is None:
        dgamma = mask_ratio_rate(gamma, schedule)
    else:
        dgamma = _per_row(rate, labels, "rate", dtype)

    masked = labels != ignore_index
    num_masked = masked.sum()
    log_probs = torch.log_softmax(logits.to(dtype), dim=-1)
    target = torch.where(masked, labels, torch.zeros_like(labels))

    ce = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    sigma = -torch.log1p(-gamma)
    log_r = torch.log1p(-gamma) - torch.log(gamma)  # r = (1 - gamma) / gamma = 1 / (e^sigma - 1)
    log_score = log_probs + log_r.unsqueeze(-1)
    se = score_entropy(log_score, target, sigma, mask_column=mask_column)
    dsigma = dgamma / (1 - gamma)

    zero = logits.new_zeros((), dtype=dtype)
    ce = torch.where(masked, ce, zero)
    score = torch.where(masked, dsigma * se, zero)
    if reduction == "none":
        mask_loss, score_loss = ce, score
    else:
        denominators = {"mean": num_masked.clamp_min(1).to(dtype), "sum": None, "row_sum": max(labels.shape[0], 1)}
        mask_loss, score_loss = ce.sum(), score.sum()
        if denominators[reduction] is not None:
            mask_loss = mask_loss / denominators[reduction]
        if denominators[score_reduction or reduction] is not None:
            score_loss = score_loss / denominators[score_reduction or reduction]
    return D3DiffLossOutput(
        loss=mask_loss + alpha * score_loss, mask_loss=mask_loss, score_loss=score_loss, num_masked=num_masked
    )
