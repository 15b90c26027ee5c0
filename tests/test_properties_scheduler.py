"""Property-based tests (hypothesis) for MaskGIT decoding: any steps / guidance / seed / temperature / schedule in the
documented ranges gives a complete, in-range, reproducible result; values outside them are refused by name."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiny_models import TINY_TEXTS, tiny_checkpoint
from unif2ace_hf import UniF2aceMaskGITScheduler, UniF2acePipeline

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODES, MASK = 64, 64
SCHEDULES = st.sampled_from(["cosine", "linear", "sigmoid", "pow2", "pow0.5"])


@pytest.fixture(scope="module")
def pipe():
    """The tiny pipeline, run on one thread (many small matmuls: threads only add overhead on a shared CPU)."""
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipeline = UniF2acePipeline(
        model=model, processor=processor, scheduler=UniF2aceMaskGITScheduler(mask_token_id=MASK, codebook_size=CODES)
    )
    pipeline.set_progress_bar_config(disable=True)
    yield pipeline
    torch.set_num_threads(threads)


@SETTINGS
@given(
    steps=st.integers(1, 80),
    tokens=st.integers(1, 40),
    batch=st.integers(1, 3),
    schedule=SCHEDULES,
    temperature=st.floats(0, 50),
    known=st.floats(0, 0.9),
    seed=st.integers(0, 2**63 - 1),
    logit_scale=st.floats(0, 1e4),
)
def test_decoding_always_finishes_and_keeps_known_codes(steps, tokens, batch, schedule, temperature, known, seed, logit_scale):  # fmt: skip
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=MASK, codebook_size=CODES, masking_schedule=schedule)
    scheduler.set_timesteps(steps, temperature=temperature)
    draw = torch.Generator().manual_seed(seed)
    start = torch.randint(0, CODES, (batch, tokens), generator=draw)
    start[torch.rand(batch, tokens, generator=draw) >= known] = MASK
    start[:, 0] = MASK  # at least one unknown position per row
    sample = start.clone()
    unknown_before = (sample == MASK).sum(-1)
    for timestep in scheduler.timesteps:
        logits = torch.randn(batch, tokens, CODES, generator=draw) * logit_scale
        logits[..., torch.randint(0, CODES, (1,), generator=draw)] = -math.inf  # a forbidden code
        sample = scheduler.step(logits, timestep, sample, generator=draw).prev_sample
        unknown = (sample == MASK).sum(-1)
        assert ((unknown < unknown_before) | (unknown == 0)).all(), "a step must fix at least one new code per row"
        unknown_before = unknown
        kept = start != MASK
        assert torch.equal(sample[kept], start[kept]), "known codes changed"
    assert (sample != MASK).all() and int(sample.min()) >= 0 and int(sample.max()) < CODES


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.integers(1, 16),
    guidance=st.floats(0, 20) | st.just(1.0),
    seed=st.integers(0, 2**63 - 1),
    prompt=st.sampled_from(TINY_TEXTS + [""]),
)
def test_pipeline_any_steps_guidance_and_seed(pipe, steps, guidance, seed, prompt):
    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return pipe(
            prompt, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="codes"
        ).images

    codes = run()
    assert codes.shape == (1, 64) and int(codes.min()) >= 0 and int(codes.max()) < CODES
    assert torch.equal(codes, run()), "the same seed must give the same image"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_inference_steps": 0}, "num_inference_steps: must be an integer >= 1"),
        ({"num_inference_steps": 2.5}, "num_inference_steps: must be an integer >= 1"),
        ({"guidance_scale": -1.0}, "guidance_scale: must be"),
        ({"guidance_scale": math.nan}, "guidance_scale: must be"),
        ({"guidance_scale": math.inf}, "guidance_scale: must be"),
        ({"generator": 3}, "generator"),
    ],
)
def test_out_of_range_sampling_arguments_are_named(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(TINY_TEXTS[0], output_type="codes", **{"num_inference_steps": 2, **kwargs})


@pytest.mark.parametrize("temperature", [-0.5, math.nan, math.inf])
def test_bad_temperature_is_named(temperature):
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=MASK, codebook_size=CODES)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        scheduler.set_timesteps(4, temperature=temperature)
