"""D3Diff loss: against a naive per-position statement of the formulas, and what the score term reduces to."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from unif2ace_hf.modeling.losses import d3diff_loss, mask_ratio_rate, score_entropy
from unif2ace_hf.pipelines.scheduling_unif2ace import mask_schedule

SCHEDULES = ("cosine", "linear", "pow2", "pow0.5", "sigmoid")


def _batch(batch: int = 3, tokens: int = 7, columns: int = 11, seed: int = 0, masked_fraction: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, tokens, columns, generator=g, dtype=torch.float64)
    targets = torch.randint(0, columns, (batch, tokens), generator=g)
    masked = torch.rand(batch, tokens, generator=g) < masked_fraction
    masked[:, 0] = True
    labels = torch.where(masked, targets, -100)
    gamma = torch.rand(batch, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return logits, labels, gamma


def _naive_rate_cosine(gamma: float) -> float:
    """dgamma/dtau for gamma(tau) = cos(pi (1 - tau) / 2), via tau recovered from gamma (not the sqrt form)."""
    tau = 1 - 2 * math.acos(gamma) / math.pi
    return math.pi / 2 * math.sin(math.pi * (1 - tau) / 2)


def _naive_d3diff(logits, labels, gamma, alpha, mask_column=None):
    """Loop over positions; float64; general score entropy with explicit s_y for every y != MASK."""
    ce_terms, score_terms = [], []
    batch, tokens, columns = logits.shape
    for b in range(batch):
        g = float(gamma[b])
        r = (1 - g) / g
        sigma = -math.log(1 - g)
        dsigma = _naive_rate_cosine(g) / (1 - g)
        assert abs(r - 1 / (math.exp(sigma) - 1)) < 1e-9
        for i in range(tokens):
            x0 = int(labels[b, i])
            if x0 == -100:
                continue
            p = torch.softmax(logits[b, i].double(), dim=-1)
            ce_terms.append(-math.log(float(p[x0])))
            scores = {y: r * float(p[y]) for y in range(columns) if y != mask_column}
            se = sum(scores.values()) - r * math.log(scores[x0]) + r * (math.log(r) - 1)
            score_terms.append(dsigma * se)
    ce = sum(ce_terms) / len(ce_terms)
    score = sum(score_terms) / len(score_terms)
    return ce + alpha * score, ce, score


@pytest.mark.parametrize("mask_column", [None, 4])
def test_matches_naive_reference(mask_column):
    logits, labels, gamma = _batch()
    if mask_column is not None:
        labels = labels.masked_fill(labels == mask_column, 0)
    out = d3diff_loss(logits.float(), labels, gamma.float(), alpha=0.01, mask_column=mask_column)
    loss, ce, score = _naive_d3diff(logits.float(), labels, gamma.float(), alpha=0.01, mask_column=mask_column)
    assert out.loss.dtype == torch.float32
    assert abs(out.mask_loss.item() - ce) < 1e-5
    assert abs(out.score_loss.item() - score) < 1e-5 * max(1.0, abs(score))
    assert abs(out.loss.item() - loss) < 1e-5 * max(1.0, abs(loss))
    assert out.num_masked.item() == int((labels != -100).sum())


def test_cross_entropy_is_in_place_masked_ce():
    logits, labels, gamma = _batch(seed=1)
    out = d3diff_loss(logits.float(), labels, gamma.float())
    expected = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.mask_loss, expected)


def test_score_entropy_general_formula_with_unnormalised_scores():
    g = torch.Generator().manual_seed(2)
    log_score = torch.randn(4, 5, 9, generator=g, dtype=torch.float64)
    target = torch.randint(0, 8, (4, 5), generator=g)
    sigma = torch.rand(4, 5, generator=g, dtype=torch.float64) * 3 + 0.01
    for mask_column in (None, 8):
        got = score_entropy(log_score, target, sigma, mask_column=mask_column)
        for b in range(4):
            for i in range(5):
                r = 1 / math.expm1(float(sigma[b, i]))
                s = log_score[b, i].exp()
                total = sum(float(s[y]) for y in range(9) if y != mask_column)
                expected = total - r * float(log_score[b, i, target[b, i]]) + r * (math.log(r) - 1)
                assert abs(float(got[b, i]) - expected) < 1e-5 * max(1.0, abs(expected))


def test_score_entropy_is_zero_at_the_true_score_and_positive_elsewhere():
    sigma = torch.tensor([0.3, 1.0, 2.5])
    r = 1 / torch.expm1(sigma)
    target = torch.tensor([2, 0, 5])
    log_true = torch.full((3, 6), -1e4)
    log_true[torch.arange(3), target] = torch.log(r)
    torch.testing.assert_close(score_entropy(log_true, target, sigma), torch.zeros(3), atol=1e-5, rtol=0)
    perturbed = score_entropy(log_true + torch.randn(3, 6).clamp(-1, 1), target, sigma)
    assert (perturbed >= -1e-6).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_normalised_posterior_reduces_to_time_weighted_ce(schedule):
    """Finding recorded in docs/decisions.md: with s = r * softmax over the non-mask columns, the dsigma-weighted
    score entropy of a position equals (gamma' / gamma) * CE exactly."""
    logits, labels, gamma = _batch(seed=3)
    out = d3diff_loss(logits, labels, gamma, schedule=schedule, reduction="none")
    g = gamma.view(-1, 1).expand_as(labels)
    weight = mask_ratio_rate(g, schedule) / g
    masked = labels != -100
    torch.testing.assert_close(out.score_loss[masked], (weight * out.mask_loss)[masked], rtol=1e-5, atol=1e-6)
    assert (out.score_loss[~masked] == 0).all() and (out.mask_loss[~masked] == 0).all()


def test_with_a_mask_column_the_term_is_r_times_ce_minus_p_mask():
    logits, labels, gamma = _batch(seed=4)
    mask_column = 10
    labels = labels.masked_fill(labels == mask_column, 1)
    out = d3diff_loss(logits, labels, gamma, mask_column=mask_column, reduction="none")
    g = gamma.view(-1, 1).expand_as(labels)
    dsigma = mask_ratio_rate(g, "cosine") / (1 - g)
    r = (1 - g) / g
    p_mask = torch.softmax(logits, -1)[..., mask_column]
    masked = labels != -100
    expected = dsigma * r * (out.mask_loss - p_mask)
    torch.testing.assert_close(out.score_loss[masked], expected[masked], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_rate_matches_the_scheduler_schedule(schedule):
    """dgamma/dtau (tau = 1 - progress) from gamma alone equals the derivative of the scheduler's schedule."""
    progress = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = -(mask_schedule(progress + h, schedule) - mask_schedule(progress - h, schedule)) / (2 * h)
    analytic = mask_ratio_rate(mask_schedule(progress, schedule), schedule)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-6)


def test_reductions_agree():
    logits, labels, gamma = _batch(seed=5)
    none = d3diff_loss(logits, labels, gamma, reduction="none")
    total = d3diff_loss(logits, labels, gamma, reduction="sum")
    mean = d3diff_loss(logits, labels, gamma)
    n = (labels != -100).sum()
    torch.testing.assert_close(none.mask_loss.sum(), total.mask_loss)
    torch.testing.assert_close(none.score_loss.sum(), total.score_loss)
    torch.testing.assert_close(total.loss / n, mean.loss)
    sedd = d3diff_loss(logits, labels, gamma, score_reduction="row_sum")
    torch.testing.assert_close(sedd.mask_loss, mean.mask_loss)
    torch.testing.assert_close(sedd.score_loss, none.score_loss.sum() / labels.shape[0])


def test_score_term_relative_size_under_each_reduction():
    """Recorded in docs/decisions.md: with Show-o's masking (t ~ U(0, 1), gamma = cos(pi t / 2)) and a constant CE, the
    token-mean score term is ~pi/2 times the CE (E[gamma'] / E[gamma] = 1 / (2 / pi)), and SEDD's per-row sum is
    ~N times it (E[N gamma'] = N)."""
    from unif2ace_hf.pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler

    rows, tokens = 4096, 64
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=8, codebook_size=8)
    g = torch.Generator().manual_seed(0)
    gamma = scheduler.mask_ratio(torch.rand(rows, generator=g))
    codes = torch.randint(0, 8, (rows, tokens), generator=g)
    _, mask = scheduler.add_noise(codes, mask_ratio=gamma, generator=g)
    labels = torch.where(mask, codes, -100)
    logits = torch.zeros(rows, tokens, 8)
    mean = d3diff_loss(logits, labels, gamma)
    assert abs((mean.score_loss / mean.mask_loss).item() - math.pi / 2) < 0.1
    sedd = d3diff_loss(logits, labels, gamma, score_reduction="row_sum")
    assert abs((sedd.score_loss / sedd.mask_loss).item() / tokens - 1) < 0.1


def test_no_masked_positions_gives_zero_and_zero_gradients():
    logits = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.full((2, 5), -100)
    out = d3diff_loss(logits, labels, torch.tensor([0.0, 1.0]))
    assert out.loss.item() == 0.0 and out.num_masked.item() == 0
    out.loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_extreme_ratios_stay_finite():
    logits = torch.randn(3, 4, 8, requires_grad=True)
    labels = torch.randint(0, 8, (3, 4))
    out = d3diff_loss(logits, labels, torch.tensor([0.0, 1.0, 1e-9]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_bf16_logits_are_computed_in_fp32():
    logits, labels, gamma = _batch(seed=6)
    low = logits.to(torch.bfloat16)
    out = d3diff_loss(low, labels, gamma.float())
    ref = d3diff_loss(low.float(), labels, gamma.float())
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref.loss)


def test_scalar_ratio_and_rate_override():
    logits, labels, _ = _batch(seed=7)
    a = d3diff_loss(logits, labels, 0.4, schedule="linear")
    b = d3diff_loss(logits, labels, torch.full((3,), 0.4), rate=1.0)
    torch.testing.assert_close(a.loss, b.loss)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"labels": torch.zeros(3, 6, dtype=torch.long)}, "logits"),
        ({"mask_ratio": torch.rand(2)}, "mask_ratio"),
        ({"reduction": "avg"}, "reduction"),
        ({"score_reduction": "avg"}, "score_reduction"),
        ({"reduction": "none", "score_reduction": "mean"}, "score_reduction"),
        ({"schedule": "exp"}, "schedule"),
        ({"schedule": "pow-1"}, "schedule"),
        ({"mask_column": 11}, "mask_column"),
        ({"rate": torch.ones(4)}, "rate"),
    ],
)
def test_bad_inputs(kwargs, name):
    logits, labels, gamma = _batch()
    call = {"logits": logits, "labels": labels, "mask_ratio": gamma} | kwargs
    with pytest.raises(ValueError, match=name):
        d3diff_loss(**call)
