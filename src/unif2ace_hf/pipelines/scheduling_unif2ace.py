"""MaskGIT-style scheduler for UniF²ace image tokens, with diffusers' `AmusedScheduler` API and Show-o's rules.

Why our own: diffusers' `AmusedScheduler` samples with `torch.multinomial` and finds the re-mask cut-off with a full
sort; here sampling is by inverse CDF (exp -> cumulative masses -> searchsorted, one uniform per token, summed in two
levels so that no sequential pass runs over the whole codebook; [`inverse_cdf_sample`]) and the cut-off by
`kthvalue`, which draws from the same distributions several times faster (`benchmarks/bench_scheduler.py`). It
also adds Show-o's schedules (cosine, linear, pow<k>, sigmoid), Show-o's compounding temperature, per-sample
generators and exact re-mask counts under ties.

Contract of `step` (codes, not vocabulary ids):

* `model_output`: `(B, N, C)` logits over the image codebook only (column j = code j), any float dtype.
* `sample`: `(B, N)` integer tensor; each entry is a known code in `[0, C)` or `mask_token_id` (unknown).
  `mask_token_id` is any integer outside `[0, C)` (e.g. `C`, or the vocabulary's mask id as Show-o does); the
  pipeline maps vocabulary ids to codes by subtracting the codebook offset before calling `step`.
* `prev_sample` follows the same convention; after the last step it holds no `mask_token_id`.

Random numbers: each call of `step` draws, per sample, a `(2, N)` block of float32 uniforms: row 0 samples the
tokens, row 1 makes the Gumbel noise of the re-mask ranking. With one generator the batch draws a `(B, 2, N)` tensor
(sample b gets the b-th block); with a list of B generators, sample b draws its `(1, 2, N)` block from generator b.
So a list `[g_0, ..., g_{B-1}]` gives sample b exactly what a batch-of-one call with `g_b` gives. `add_noise` does
the same with an `(N + 1)` block per sample (1 uniform for the time, N for the positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from torch.nn import functional as F

TEMPERATURE_SCHEDULES = ("linear", "showo_compounding")
_SIGMOID_START, _SIGMOID_END, _SIGMOID_TAU = -3.0, 3.0, 1.0  # Show-o's sigmoid schedule constants
_LOG_EPS = 1e-20  # Show-o clamps before every log in the sampler


def validate_masking_schedule(name: str) -> str:
    """Return `name` if it is a known masking schedule (`cosine`, `linear`, `sigmoid`, `pow<k>` with k > 0)."""
    if name in ("cosine", "linear", "sigmoid"):
        return name
    if isinstance(name, str) and name.startswith("pow"):
        try:
            exponent = float(name[3:])
        except ValueError:
            exponent = float("nan")
        if math.isfinite(exponent) and exponent > 0:
            return name
    raise ValueError(
        f"masking_schedule must be 'cosine', 'linear', 'sigmoid' or 'pow<k>' with k > 0 (e.g. 'pow2', 'pow0.5'), "
        f"got {name!r}"
    )


def mask_schedule(progress: torch.Tensor, name: str = "cosine") -> torch.Tensor:
    """Fraction of tokens still masked after a fraction `progress` of the sampling is done.

    gamma(0) = 1 (all masked) and gamma(1) = 0, decreasing in between. Formulas are Show-o's, evaluated in the
    input's dtype; the result is clamped to [0, 1] (Show-o floors some schedules at 1e-6 instead, which gives the same
    token counts because a count is floored and then raised to at least one).

    Args:
        progress: r in [0, 1], any shape, floating point.
        name: `"cosine"` cos(pi r / 2), `"linear"` 1 - r, `"pow<k>"` 1 - r^k, or `"sigmoid"` (Show-o's, from -3 to 3).
    """
    validate_masking_schedule(name)
    if name == "cosine":
        gamma = torch.cos(progress * math.pi * 0.5)
    elif name == "linear":
        gamma = 1 - progress
    elif name == "sigmoid":
        v_start = torch.sigmoid(torch.tensor(_SIGMOID_START / _SIGMOID_TAU, dtype=progress.dtype))
        v_end = torch.sigmoid(torch.tensor(_SIGMOID_END / _SIGMOID_TAU, dtype=progress.dtype))
        current = torch.sigmoid((progress * (_SIGMOID_END - _SIGMOID_START) + _SIGMOID_START) / _SIGMOID_TAU)
        gamma = (v_end.to(progress.device) - current) / (v_end - v_start).to(progress.device)
    else:
        gamma = 1 - progress ** float(name[3:])
    return gamma.clamp(0.0, 1.0)


def _below(value: torch.Tensor) -> torch.Tensor:
    """The largest float strictly below `value` (for positive values): keeps u * total < total under rounding."""
    return torch.nextafter(value, torch.zeros_like(value))


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one code per row of `logits` from softmax(logits) by inverting its CDF at `uniforms`, in float32.

    Why not `torch.multinomial`: it is several times slower on CPU. Why two levels: a cumulative sum over the whole
    codebook is a sequential pass over `(..., C)`; instead the codebook is cut into blocks of b ~ sqrt(C) codes, the
    block masses are summed (a vectorised reduction), the block is found on the cumulative block masses and the code
    on the cumulative masses inside that block. This is the same inverse CDF (the first code whose cumulative mass
    exceeds u * total), only summed in a different order, so it differs from a flat cumsum only at float rounding.
    A zero-probability code is never returned: the search takes the first cumulative mass strictly greater than the
    target, and the target is kept strictly below the total at both levels.

    Args:
        logits: `(..., C)` logits, any float dtype.
        uniforms: `(...)` uniforms in [0, 1).

    Returns:
        `(codes, probabilities)`: the sampled codes (int64) and their softmax probabilities (float32).
    """
    num_codes = logits.shape[-1]
    if logits.dtype == torch.float64:
        logits = logits.float()
    unnormalised = torch.sub(logits, logits.amax(dim=-1, keepdim=True).float()).exp_()  # float32
    block = 1 << max(int(math.log2(math.sqrt(num_codes))), 0)
    if num_codes % block:
        unnormalised = F.pad(unnormalised, (0, block - num_codes % block))
    blocks = unnormalised.unflatten(-1, (-1, block))  # (..., num_blocks, block)
    block_cdf = blocks.sum(dim=-1).cumsum_(dim=-1)
    total = block_cdf[..., -1:]
    target = torch.minimum(uniforms.unsqueeze(-1).float() * total, _below(total))
    block_index = torch.searchsorted(block_cdf, target, right=True)
    before = block_cdf.gather(-1, (block_index - 1).clamp_min(0)).masked_fill_(block_index == 0, 0.0)
    inside = blocks.gather(-2, block_index.unsqueeze(-1).expand(*block_index.shape, block)).squeeze(-2)
    inside_cdf = inside.cumsum_(dim=-1)
    offset = torch.minimum(target - before, _below(inside_cdf[..., -1:]))
    codes = block_index * block + torch.searchsorted(inside_cdf, offset, right=True)
    probabilities = unnormalised.gather(-1, codes) / total
    return codes.squeeze(-1), probabilities.squeeze(-1)


@dataclass
class UniF2aceMaskGITSchedulerOutput(BaseOutput):
    """
    Output of [`UniF2aceMaskGITScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
            Codes for the next step; the positions still unknown hold `mask_token_id`. Feed it back to the model.
        pred_original_sample (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
            The fully sampled codes of this step (known codes kept, every unknown position sampled): a preview of
            x_0.
    """

    prev_sample: torch.LongTensor
    pred_original_sample: torch.LongTensor | None = None


class UniF2aceMaskGITScheduler(SchedulerMixin, ConfigMixin):
    """
    MaskGIT / Show-o iterative decoding of image codes, for [`UniF2acePipeline`], and the matching training-time
    masking (`add_noise`).

    Each step samples every unknown position from the model's distribution, keeps known codes, then re-masks the
    `floor(N * gamma(r))` least confident new codes (clamped to [1, #unknown - 1]), ranking them by
    `log p + temperature * Gumbel`. `r = (i + 1) / T` at step i. The last step re-masks nothing.

    This scheduler inherits from [`SchedulerMixin`] and [`ConfigMixin`] (saving, loading, `from_config`).

    Args:
        mask_token_id (`int`):
            Value marking an unknown position in `sample`; must lie outside `[0, codebook_size)`.
        codebook_size (`int`, *optional*):
            Number of image codes C. When set, `step` checks that the logits have C columns.
        masking_schedule (`str`, *optional*, defaults to `"cosine"`):
            `"cosine"`, `"linear"`, `"pow<k>"` (e.g. `"pow2"`, `"pow0.5"`) or `"sigmoid"`; see [`mask_schedule`].
        temperature (`float`, *optional*, defaults to 1.0):
            Starting temperature of the Gumbel noise in the re-mask ranking (0 = rank by probability alone).
        temperature_schedule (`str`, *optional*, defaults to `"showo_compounding"`):
            `"showo_compounding"`: t_i = t_{i-1} * (1 - r_i), t_{-1} = `temperature` (Show-o reassigns the running
            value, so it compounds and reaches ~0 after a few steps); `"linear"`: t_i = `temperature` * (1 - r_i)
            (MaskGIT's rule).
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        mask_token_id: int,
        codebook_size: int | None = None,
        masking_schedule: str = "cosine",
        temperature: float = 1.0,
        temperature_schedule: str = "showo_compounding",
    ):
        if codebook_size is not None and codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size}")
        if codebook_size is not None and 0 <= mask_token_id < codebook_size:
            raise ValueError(
                f"mask_token_id ({mask_token_id}) must lie outside the codes [0, {codebook_size}) so a sampled code "
                "is never mistaken for a mask"
            )
        validate_masking_schedule(masking_schedule)
        self._check_temperature(temperature)
        if temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(
                f"temperature_schedule must be one of {TEMPERATURE_SCHEDULES}, got {temperature_schedule!r}"
            )
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.temperatures: torch.Tensor | None = None
        self.mask_ratios: torch.Tensor | None = None
        self._temperatures: list[float] = []
        self._mask_ratios: list[torch.Tensor] = []

    @staticmethod
    def _check_temperature(temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")

    def mask_ratio(self, progress: torch.Tensor | float) -> torch.Tensor:
        """
        Evaluate the configured masking schedule (fraction of tokens masked) at `progress` r in [0, 1].

        Args:
            progress (`torch.Tensor` or `float`): sampling progress; a float becomes a float32 tensor.
        """
        progress = torch.as_tensor(progress)
        if not progress.is_floating_point():
            progress = progress.to(torch.float32)
        return mask_schedule(progress, self.config.masking_schedule)

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        temperature: float | None = None,
    ) -> None:
        """
        Set the discrete timesteps (`T - 1, ..., 0`), mask ratios and temperatures for `num_inference_steps` steps.

        Args:
            num_inference_steps (`int`):
                Number of decoding steps T (>= 1). Each timestep t is step `T - 1 - t`.
            device (`str` or `torch.device`, *optional*):
                Device of `self.timesteps`. Keep the default (CPU) to avoid a device-to-host sync when a timestep is
                read in `step`.
            temperature (`float`, *optional*):
                Starting temperature for this run, overriding the config's `temperature`.
        """
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        start = self.config.temperature if temperature is None else temperature
        self._check_temperature(start)
        steps = num_inference_steps
        self.num_inference_steps = steps
        self.timesteps = torch.arange(steps, device=device).flip(0)

        # Like Show-o: the ratio is a Python float, the schedule is evaluated on a float32 scalar per step, so the
        # floor(N * gamma) counts match Show-o's exactly.
        progress = [(i + 1) / steps for i in range(steps)]
        self._mask_ratios = [
            mask_schedule(torch.tensor(r, dtype=torch.float32), self.config.masking_schedule) for r in progress
        ]
        self.mask_ratios = torch.stack(self._mask_ratios)

        temperatures, running = [], float(start)
        for r in progress:
            if self.config.temperature_schedule == "showo_compounding":
                running = running * (1.0 - r)
                temperatures.append(running)
            else:
                temperatures.append(float(start) * (1.0 - r))
        self._temperatures = temperatures
        self.temperatures = torch.tensor(temperatures, dtype=torch.float64)

    @staticmethod
    def _uniforms(
        block: tuple[int, ...],
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor:
        """float32 uniforms of shape `(batch_size, *block)`, one block per sample (see the module docstring)."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch_size:
                raise ValueError(
                    f"generator: got a list of {len(generator)} generators for a batch of {batch_size} samples"
                )
            blocks = [
                torch.rand((1, *block), generator=g, device=g.device, dtype=torch.float32).to(device) for g in generator
            ]
            return torch.cat(blocks)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, a list of them or None, got {type(generator)}")
        draw_device = generator.device if generator is not None else device
        return torch.rand((batch_size, *block), generator=generator, device=draw_device, dtype=torch.float32).to(device)

    def _step_index(self, timestep: int | torch.Tensor) -> int:
        if self.timesteps is None or self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise ValueError(f"timestep must be a single value, got a tensor of shape {tuple(timestep.shape)}")
            timestep = int(timestep.item())
        if not 0 <= int(timestep) < self.num_inference_steps:
            raise ValueError(f"timestep must be in [0, {self.num_inference_steps - 1}], got {timestep}")
        return self.num_inference_steps - 1 - int(timestep)

    @staticmethod
    def _select_lowest(confidence: torch.Tensor, count: torch.Tensor, max_count: int) -> torch.Tensor:
        """Boolean mask of exactly `count[b]` lowest entries of each row (ties broken by position), via `kthvalue`.

        One `kthvalue` serves rows with different counts: each row is padded with `max_count - count[b]` values of
        -inf (and +inf for the rest), so the `max_count`-th smallest of the padded row is the `count[b]`-th smallest
        of the row itself (or -inf when the count is 0). Entries tied with the cut-off are taken left to right.
        """
        if max_count <= 0:
            return torch.zeros_like(confidence, dtype=torch.bool)
        columns = torch.arange(max_count, device=confidence.device)
        padding = torch.where(
            columns < (max_count - count).unsqueeze(-1),
            torch.tensor(-math.inf, device=confidence.device),
            torch.tensor(math.inf, device=confidence.device),
        )
        cut_off = torch.cat([confidence, padding], dim=-1).kthvalue(max_count, dim=-1, keepdim=True).values
        below = confidence < cut_off
        tied = confidence == cut_off
        missing = count.unsqueeze(-1) - below.sum(-1, keepdim=True)
        return below | (tied & (tied.cumsum(-1) <= missing))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        starting_mask_ratio: float | torch.Tensor = 1.0,
    ) -> UniF2aceMaskGITSchedulerOutput | tuple:
        """
        One decoding step: sample every unknown position, keep the known codes, re-mask the least confident.

        Args:
            model_output (`torch.Tensor` of shape `(batch_size, num_tokens, codebook_size)`):
                Logits over the image codebook only (after guidance), any float dtype; softmax runs in float32.
            timestep (`int` or `torch.Tensor`):
                The current entry of `self.timesteps` (`T - 1` first, `0` last).
            sample (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
                Current codes, `mask_token_id` where unknown.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator for the batch, or one per sample (then sample b is reproducible on its own).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`UniF2aceMaskGITSchedulerOutput`] instead of a tuple.
            starting_mask_ratio (`float` or `torch.Tensor` of shape `(batch_size,)`, *optional*, defaults to 1.0):
                Scales the schedule, for editing where only part of the image starts unknown: pass the fraction of
                positions masked at the start (Show-o uses 1.0, so a small edit region is decoded one token per step
                until the schedule falls below it). Values in (0, 1].

        Returns:
            [`UniF2aceMaskGITSchedulerOutput`] or `(prev_sample, pred_original_sample)`.
        """
        if model_output.ndim != 3 or sample.ndim != 2 or model_output.shape[:2] != sample.shape:
            raise ValueError(
                "model_output must be (batch_size, num_tokens, codebook_size) and sample (batch_size, num_tokens); got "
                f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)}"
            )
        if not model_output.is_floating_point():
            raise ValueError(f"model_output must hold float logits, got dtype {model_output.dtype}")
        if sample.is_floating_point() or sample.dtype == torch.bool:
            raise ValueError(f"sample must be an integer tensor of codes, got dtype {sample.dtype}")
        batch_size, num_tokens, codebook_size = model_output.shape
        if self.config.codebook_size is not None and codebook_size != self.config.codebook_size:
            raise ValueError(
                f"model_output has {codebook_size} columns but codebook_size is {self.config.codebook_size}: pass "
                "logits over the codebook only"
            )
        step_index = self._step_index(timestep)
        device = model_output.device
        uniforms = self._uniforms((2, num_tokens), batch_size, generator, device)

        unknown = sample == self.config.mask_token_id
        sampled, chosen = inverse_cdf_sample(model_output, uniforms[:, 0])
        pred_original_sample = torch.where(unknown, sampled.to(sample.dtype), sample)

        if step_index == self.num_inference_steps - 1:
            prev_sample = pred_original_sample
        else:
            count, max_count = self._mask_count(step_index, num_tokens, unknown, starting_mask_ratio, batch_size)
            gumbel = -torch.log((-torch.log(uniforms[:, 1].clamp_min(_LOG_EPS))).clamp_min(_LOG_EPS))
            confidence = torch.log(chosen.clamp_min(_LOG_EPS)) + self._temperatures[step_index] * gumbel
            confidence = confidence.masked_fill(~unknown, math.inf)
            remask = self._select_lowest(confidence, count, max_count)
            prev_sample = pred_original_sample.masked_fill(remask, self.config.mask_token_id)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return UniF2aceMaskGITSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _mask_count(
        self,
        step_index: int,
        num_tokens: int,
        unknown: torch.Tensor,
        starting_mask_ratio: float | torch.Tensor,
        batch_size: int,
    ) -> tuple[torch.Tensor, int]:
        """Per-row number of tokens to re-mask, and a host-side upper bound on it (for `_select_lowest`)."""
        gamma = self._mask_ratios[step_index]  # float32 scalar, as in Show-o
        n = torch.tensor(float(num_tokens), dtype=torch.float32)
        if isinstance(starting_mask_ratio, torch.Tensor):
            if starting_mask_ratio.shape != (batch_size,):
                raise ValueError(
                    f"starting_mask_ratio must be a float or a ({batch_size},) tensor, got shape "
                    f"{tuple(starting_mask_ratio.shape)}"
                )
            ratio = gamma.to(unknown.device) * starting_mask_ratio.to(unknown.device, torch.float32).clamp(0.0, 1.0)
            scheduled = torch.floor(n.to(unknown.device) * ratio).long().clamp_min(1)
            max_count = max(int(torch.floor(n * gamma)), 1)
        else:
            if not 0 < float(starting_mask_ratio) <= 1:
                raise ValueError(f"starting_mask_ratio must be in (0, 1], got {starting_mask_ratio}")
            max_count = max(int(torch.floor(n * (gamma * float(starting_mask_ratio)))), 1)
            scheduled = torch.full((batch_size,), max_count, device=unknown.device, dtype=torch.long)
        # At least one new token is kept per step (never re-mask more than #unknown - 1), at least one is re-masked
        # while that is possible.
        count = torch.minimum(scheduled, unknown.sum(-1) - 1).clamp_min(0)
        return count, max_count

    def add_noise(
        self,
        original_samples: torch.LongTensor,
        timesteps: torch.Tensor | float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        mask_ratio: torch.Tensor | float | None = None,
    ) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """
        Mask codes for training, as Show-o does: `round(N * gamma)` positions (at least one) chosen uniformly.

        Args:
            original_samples (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
                Clean codes.
            timesteps (`torch.Tensor` of shape `(batch_size,)` or `float`, *optional*):
                Continuous time t in [0, 1] per sample; gamma = schedule(t) (cosine by default: cos(pi t / 2), so
                t = 0 masks everything). Drawn uniformly per sample when neither this nor `mask_ratio` is given.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator, or one per sample.
            mask_ratio (`torch.Tensor` of shape `(batch_size,)` or `float`, *optional*):
                gamma in [0, 1] directly (the value to pass to `d3diff_loss`). Exclusive with `timesteps`.

        Returns:
            `(noisy_samples, mask)`: the codes with `mask_token_id` at the masked positions, and the boolean mask.
        """
        if original_samples.ndim != 2 or original_samples.is_floating_point():
            raise ValueError(
                f"original_samples must be an integer (batch_size, num_tokens) tensor, got {original_samples.dtype} "
                f"of shape {tuple(original_samples.shape)}"
            )
        if timesteps is not None and mask_ratio is not None:
            raise ValueError("pass either timesteps or mask_ratio to add_noise, not both")
        batch_size, num_tokens = original_samples.shape
        device = original_samples.device
        uniforms = self._uniforms((num_tokens + 1,), batch_size, generator, device)

        def per_row(value: torch.Tensor | float, name: str) -> torch.Tensor:
            value = torch.as_tensor(value, dtype=torch.float32, device=device)
            if value.ndim == 0:
                value = value.expand(batch_size)
            if value.shape != (batch_size,):
                raise ValueError(f"{name} must be a float or a ({batch_size},) tensor, got shape {tuple(value.shape)}")
            return value

        if mask_ratio is not None:
            gamma = per_row(mask_ratio, "mask_ratio").clamp(0.0, 1.0)
        else:
            t = uniforms[:, 0] if timesteps is None else per_row(timesteps, "timesteps").clamp(0.0, 1.0)
            gamma = mask_schedule(t, self.config.masking_schedule)
        count = torch.round(gamma * num_tokens).long().clamp(1, num_tokens)
        rank = uniforms[:, 1:].argsort(dim=-1).argsort(dim=-1)
        mask = rank < count.unsqueeze(-1)
        noisy = original_samples.masked_fill(mask, self.config.mask_token_id)
        return noisy, mask
