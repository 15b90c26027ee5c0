"""UniF2aceMaskGITScheduler: schedules, training masks, decoding steps, randomness contract and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unif2ace_hf.pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler, inverse_cdf_sample, mask_schedule

SCHEDULES = ("cosine", "linear", "pow2", "pow0.5", "sigmoid")
C = 32  # codebook size of the tests
MASK = C  # mask id outside the codebook


def _scheduler(**kwargs) -> UniF2aceMaskGITScheduler:
    return UniF2aceMaskGITScheduler(mask_token_id=MASK, codebook_size=C, **kwargs)


def _expected_count(gamma: torch.Tensor, tokens: int, unknown: int) -> int:
    """Show-o's rule, written independently: floor(N * gamma) in float32, at least 1, at most #unknown - 1."""
    scheduled = int(np.floor(np.float32(tokens) * np.float32(gamma.item())))
    return max(0, min(max(scheduled, 1), unknown - 1))


def _decode(scheduler, logits_fn, sample, generator, steps, **step_kwargs):
    """Run a whole decoding loop; returns the final sample and the per-step counts of masked positions."""
    scheduler.set_timesteps(steps)
    counts = []
    for t in scheduler.timesteps:
        sample = scheduler.step(logits_fn(sample), t, sample, generator=generator, **step_kwargs).prev_sample
        counts.append((sample == MASK).sum(-1).tolist())
    return sample, counts


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_endpoints_and_monotonicity(name):
    r = torch.linspace(0, 1, 1001, dtype=torch.float64)
    gamma = mask_schedule(r, name)
    assert gamma[0].item() == pytest.approx(1.0, abs=1e-6)
    assert gamma[-1].item() == pytest.approx(0.0, abs=1e-6)
    assert (gamma.diff() <= 1e-12).all()
    assert ((gamma >= 0) & (gamma <= 1)).all()


def test_schedule_formulas():
    r = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(mask_schedule(r, "cosine"), torch.cos(r * math.pi / 2))
    torch.testing.assert_close(mask_schedule(r, "linear"), 1 - r)
    torch.testing.assert_close(mask_schedule(r, "pow2"), 1 - r**2)
    torch.testing.assert_close(mask_schedule(r, "pow0.5"), 1 - r.sqrt())
    assert mask_schedule(torch.tensor(0.5, dtype=torch.float64), "sigmoid").item() == pytest.approx(0.5)


def test_set_timesteps_mask_ratios_and_timesteps():
    scheduler = _scheduler()
    scheduler.set_timesteps(12)
    assert scheduler.timesteps.tolist() == list(range(11, -1, -1))
    expected = [math.cos(math.pi / 2 * (i + 1) / 12) for i in range(12)]
    np.testing.assert_allclose(scheduler.mask_ratios.numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------- temperature


def test_showo_compounding_temperature_sequence():
    """Show-o reassigns `temperature = temperature * (1 - r)` every step, so it compounds."""
    steps, start = 12, 2.0
    scheduler = _scheduler(temperature=start, temperature_schedule="showo_compounding")
    scheduler.set_timesteps(steps)
    expected, running = [], start
    for i in range(steps):
        running *= 1 - (i + 1) / steps
        expected.append(running)
    assert scheduler.temperatures.tolist() == expected
    assert scheduler.temperatures[0].item() == pytest.approx(start * 11 / 12)
    assert scheduler.temperatures[1].item() == pytest.approx(start * 11 / 12 * 10 / 12)


def test_linear_temperature_and_override():
    scheduler = _scheduler(temperature=1.5, temperature_schedule="linear")
    scheduler.set_timesteps(4)
    assert scheduler.temperatures.tolist() == [1.5 * 0.75, 1.5 * 0.5, 1.5 * 0.25, 0.0]
    scheduler.set_timesteps(4, temperature=3.0)
    assert scheduler.temperatures[0].item() == 3.0 * 0.75


def test_step_follows_the_documented_random_layout():
    """Reproduce one step by hand from the documented draws: (1, 2, N) uniforms, row 0 inverse-CDF sampling,
    row 1 Gumbel noise scaled by the step's temperature, the `count` lowest confidences re-masked."""
    tokens, steps = 40, 6
    scheduler = _scheduler(temperature=3.0)
    scheduler.set_timesteps(steps)
    logits = torch.randn(1, tokens, C, generator=torch.Generator().manual_seed(3))
    sample = torch.full((1, tokens), MASK)
    out = scheduler.step(logits, scheduler.timesteps[1], sample, generator=torch.Generator().manual_seed(9))

    u = torch.rand((1, 2, tokens), generator=torch.Generator().manual_seed(9))
    probs = torch.softmax(logits, -1)[0]
    cdf = probs.cumsum(-1)
    codes = torch.tensor([int((cdf[i] <= u[0, 0, i] * cdf[i, -1]).sum()) for i in range(tokens)])
    assert out.pred_original_sample[0].tolist() == codes.tolist()
    gumbel = -torch.log(-torch.log(u[0, 1]))
    confidence = torch.log(probs[torch.arange(tokens), codes]) + scheduler.temperatures[1].item() * gumbel
    count = _expected_count(scheduler.mask_ratios[1], tokens, tokens)
    expected_masked = set(confidence.argsort()[:count].tolist())
    assert set(torch.nonzero(out.prev_sample[0] == MASK).flatten().tolist()) == expected_masked


# ---------------------------------------------------------------------------------------------- step


@pytest.mark.parametrize("name", SCHEDULES)
def test_exact_remask_counts_and_no_mask_after_last_step(name):
    tokens, steps = 64, 9
    scheduler = _scheduler(masking_schedule=name)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, tokens, C, generator=generator)
    sample = torch.full((2, tokens), MASK)
    scheduler.set_timesteps(steps)
    unknown = tokens
    for i, t in enumerate(scheduler.timesteps):
        sample = scheduler.step(logits, t, sample, generator=generator).prev_sample
        expected = 0 if i == steps - 1 else _expected_count(scheduler.mask_ratios[i], tokens, unknown)
        assert (sample == MASK).sum(-1).tolist() == [expected, expected]
        unknown = expected
    assert ((sample >= 0) & (sample < C)).all()


@pytest.mark.parametrize(("schedule", "steps"), [("cosine", 8), ("cosine", 12), ("linear", 16)])
def test_counts_match_diffusers_amused_scheduler(schedule, steps):
    """Parity with a public implementation of the same rule: diffusers' AmusedScheduler re-masks the same number of
    tokens at every step (its positions differ: it draws its random numbers differently)."""
    from diffusers import AmusedScheduler

    tokens = 256
    logits = torch.randn(1, tokens, C, generator=torch.Generator().manual_seed(0))
    ours, theirs = _scheduler(masking_schedule=schedule), AmusedScheduler(mask_token_id=MASK, masking_schedule=schedule)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    a = b = torch.full((1, tokens), MASK)
    g = torch.Generator().manual_seed(1)
    for t_ours, t_theirs in zip(ours.timesteps, theirs.timesteps, strict=True):
        a = ours.step(logits, t_ours, a, generator=g).prev_sample
        b = theirs.step(logits, t_theirs, b, generator=g).prev_sample
        assert (a == MASK).sum().item() == (b == MASK).sum().item()


def test_ties_still_give_exact_counts():
    """Uniform logits and temperature 0: every confidence is equal, the count must still be exact."""
    tokens = 50
    scheduler = _scheduler(temperature=0.0)
    scheduler.set_timesteps(5)
    sample = torch.full((3, tokens), MASK)
    out = scheduler.step(torch.zeros(3, tokens, C), scheduler.timesteps[0], sample)
    expected = _expected_count(scheduler.mask_ratios[0], tokens, tokens)
    assert (out.prev_sample == MASK).sum(-1).tolist() == [expected] * 3


def test_step_keeps_known_tokens_and_per_row_counts():
    """Editing: rows with different known regions; known codes never change and each row gets its own count."""
    tokens = 48
    g = torch.Generator().manual_seed(1)
    original = torch.randint(0, C, (3, tokens), generator=g)
    unknown = torch.zeros(3, tokens, dtype=torch.bool)
    unknown[0, :40] = True
    unknown[1, 10:15] = True
    unknown[2, ::2] = True
    sample = original.masked_fill(unknown, MASK)
    scheduler = _scheduler()
    scheduler.set_timesteps(6)
    start_ratio = unknown.float().mean(-1)
    for i, t in enumerate(scheduler.timesteps):
        n_unknown = (sample == MASK).sum(-1).tolist()
        out = scheduler.step(torch.randn(3, tokens, C, generator=g), t, sample, g, starting_mask_ratio=start_ratio)
        assert (out.prev_sample[~unknown] == original[~unknown]).all()
        assert (out.pred_original_sample[~unknown] == original[~unknown]).all()
        assert not (out.pred_original_sample == MASK).any()
        for b in range(3):
            if i == 5:
                expected = 0
            else:
                gamma = scheduler.mask_ratios[i] * start_ratio[b]
                expected = _expected_count(gamma, tokens, n_unknown[b])
            assert (out.prev_sample[b] == MASK).sum().item() == expected
        sample = out.prev_sample
    assert not (sample == MASK).any()


def test_single_step_samples_everything():
    scheduler = _scheduler()
    scheduler.set_timesteps(1)
    out = scheduler.step(torch.randn(2, 10, C), 0, torch.full((2, 10), MASK), return_dict=False)
    assert isinstance(out, tuple) and not (out[0] == MASK).any()
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("codebook", [32, 37, 1024])
def test_inverse_cdf_sampling_matches_the_softmax(codebook):
    """n draws of one categorical with zero-probability codes (first, inside, last column; 37 is not a multiple of
    the block size, so the padded path runs). Each empirical frequency has standard error sqrt(p (1 - p) / n)
    (<= 0.0011 for n = 200 000); we allow 5 of them per code, a false alarm has probability ~6e-7 per code. The large
    codebook uses 20 000 draws to keep memory small (its p ~ 1e-3 gives a standard error ~2e-4)."""
    n = 200_000 if codebook < 100 else 20_000
    logits = torch.linspace(-2.0, 2.0, codebook)
    zero = [0, codebook // 2, codebook - 1]
    logits[zero] = -math.inf
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=codebook, codebook_size=codebook)
    scheduler.set_timesteps(1)
    sample = torch.full((1, n), codebook)
    for dtype in (torch.float32, torch.bfloat16):
        model_output = logits.to(dtype).expand(1, n, codebook)
        codes = scheduler.step(model_output, 0, sample, generator=torch.Generator().manual_seed(0)).prev_sample
        freq = torch.bincount(codes.flatten(), minlength=codebook).double() / n
        assert freq.numel() == codebook
        p = torch.softmax(logits.to(dtype).float(), -1).double()
        tolerance = 5 * torch.sqrt(p * (1 - p) / n) + 1e-6
        assert (freq[zero] == 0).all()
        assert ((freq - p).abs() <= tolerance).all(), (freq - p).abs().max()


def test_inverse_cdf_extreme_uniforms_never_pick_zero_probability_codes():
    logits = torch.zeros(4, 64)
    logits[:, 48:] = -math.inf
    uniforms = torch.tensor([0.0, 0.5, 1 - 2**-24, 1 - 2**-24])
    codes, probabilities = inverse_cdf_sample(logits, uniforms)
    assert codes.tolist() == [0, 24, 47, 47]
    torch.testing.assert_close(probabilities, torch.full((4,), 1 / 48))


def test_same_generator_same_result_and_seeds_differ():
    model = _stand_in_model(2, 30, seed=4)
    runs = [
        _decode(_scheduler(), model, torch.full((2, 30), MASK), torch.Generator().manual_seed(s), 6)[0]
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def _stand_in_model(batch: int, tokens: int, seed: int):
    """Fixed per-row logits plus a term that depends on the current sample, so that steps interact."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, tokens, C, generator=g)
    table = torch.randn(C + 1, C, generator=g)

    def model(sample: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        return base[rows] + table[sample.clamp(max=C)].mean(1, keepdim=True)

    return model


def test_generator_list_equals_single_calls():
    batch, tokens, steps = 3, 36, 7
    model = _stand_in_model(batch, tokens, seed=5)
    seeds = [11, 12, 13]
    batched, _ = _decode(
        _scheduler(),
        model,
        torch.full((batch, tokens), MASK),
        [torch.Generator().manual_seed(s) for s in seeds],
        steps,
    )
    for b, s in enumerate(seeds):
        row_model = lambda sample, b=b: model(sample, slice(b, b + 1))  # noqa: E731
        single, _ = _decode(
            _scheduler(), row_model, torch.full((1, tokens), MASK), torch.Generator().manual_seed(s), steps
        )
        assert torch.equal(batched[b], single[0])


def test_generator_list_equals_single_calls_in_add_noise():
    original = torch.randint(0, C, (3, 50))
    scheduler = _scheduler()
    noisy, mask = scheduler.add_noise(original, generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    for b, s in enumerate((1, 2, 3)):
        one, one_mask = scheduler.add_noise(original[b : b + 1], generator=torch.Generator().manual_seed(s))
        assert torch.equal(noisy[b], one[0]) and torch.equal(mask[b], one_mask[0])


# ---------------------------------------------------------------------------------------------- add_noise


def test_add_noise_counts_and_known_positions():
    scheduler = _scheduler()
    original = torch.randint(0, C, (5, 40))
    gamma = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    noisy, mask = scheduler.add_noise(original, mask_ratio=gamma, generator=torch.Generator().manual_seed(0))
    assert mask.sum(-1).tolist() == [1, 4, 20, 36, 40]  # round(N * gamma), at least one
    assert torch.equal(noisy[~mask], original[~mask])
    assert (noisy[mask] == MASK).all()
    _, mask_t = scheduler.add_noise(original, timesteps=torch.full((5,), 0.5))
    assert mask_t.sum(-1).tolist() == [round(40 * math.cos(math.pi / 4))] * 5


def test_add_noise_statistics_follow_the_cosine_schedule():
    """t ~ U(0, 1), gamma = cos(pi t / 2): the masked fraction has mean ~2/pi and standard deviation ~0.31 per row.
    Over 20 000 rows the mean's standard error is 0.0022; we allow 5 of them. Each position is masked with the
    same probability (standard error 0.0034 per position; 5 of them allowed)."""
    rows, tokens = 20_000, 64
    scheduler = _scheduler()
    original = torch.randint(0, C, (rows, tokens))
    noisy, mask = scheduler.add_noise(original, generator=torch.Generator().manual_seed(0))
    grid = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    exact = (torch.round(torch.cos(grid * math.pi / 2) * tokens).clamp(1, tokens) / tokens).mean().item()
    assert abs(exact - 2 / math.pi) < 0.01
    fraction = mask.double().mean().item()
    assert abs(fraction - exact) < 5 * 0.0022
    per_position = mask.double().mean(0)
    assert (per_position - exact).abs().max().item() < 5 * 0.0034
    assert torch.equal(noisy[~mask], original[~mask])
    assert (mask.sum(-1) >= 1).all()


# ---------------------------------------------------------------------------------------------- config, bad inputs


def test_config_round_trip(tmp_path):
    scheduler = _scheduler(masking_schedule="pow0.5", temperature=2.0, temperature_schedule="linear")
    scheduler.save_config(tmp_path)
    loaded = UniF2aceMaskGITScheduler.from_config(UniF2aceMaskGITScheduler.load_config(tmp_path))
    assert dict(loaded.config) == dict(scheduler.config)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"masking_schedule": "exp"}, "masking_schedule"),
        ({"masking_schedule": "pow0"}, "masking_schedule"),
        ({"masking_schedule": "powx"}, "masking_schedule"),
        ({"temperature_schedule": "cosine"}, "temperature_schedule"),
        ({"temperature": -1.0}, "temperature"),
        ({"mask_token_id": 3}, "mask_token_id"),
        ({"codebook_size": 0}, "codebook_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    arguments = {"mask_token_id": MASK, "codebook_size": C} | kwargs
    with pytest.raises(ValueError, match=name):
        UniF2aceMaskGITScheduler(**arguments)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_num_inference_steps(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        _scheduler().set_timesteps(steps)


def test_bad_step_inputs():
    scheduler = _scheduler()
    logits, sample = torch.randn(2, 8, C), torch.full((2, 8), MASK)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(logits, 0, sample)
    scheduler.set_timesteps(4)
    cases = [
        ({"model_output": torch.randn(2, 8)}, "model_output"),
        ({"sample": torch.full((2, 9), MASK)}, "model_output"),
        ({"model_output": torch.randn(2, 8, C + 1)}, "codebook_size"),
        ({"sample": sample.float()}, "sample"),
        ({"timestep": 4}, "timestep"),
        ({"generator": [torch.Generator()]}, "generator"),
        ({"starting_mask_ratio": 1.5}, "starting_mask_ratio"),
        ({"starting_mask_ratio": torch.ones(3)}, "starting_mask_ratio"),
    ]
    for change, name in cases:
        arguments = {"model_output": logits, "timestep": 2, "sample": sample} | change
        with pytest.raises(ValueError, match=name):
            scheduler.step(**arguments)


def test_bad_add_noise_inputs():
    scheduler = _scheduler()
    original = torch.randint(0, C, (2, 8))
    with pytest.raises(ValueError, match="original_samples"):
        scheduler.add_noise(original.float())
    with pytest.raises(ValueError, match="not both"):
        scheduler.add_noise(original, timesteps=0.5, mask_ratio=0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        scheduler.add_noise(original, mask_ratio=torch.ones(3))
    with pytest.raises(ValueError, match="generator"):
        scheduler.add_noise(original, generator=[torch.Generator()] * 3)
