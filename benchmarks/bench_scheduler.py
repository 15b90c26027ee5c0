"""Time one MaskGIT decoding step: our scheduler against diffusers' `AmusedScheduler.step`.

Why: at 1024 image tokens the sampling step is a fifth to a third of a CPU decoding step (`shared/reference/
style-anchors.md` §2.1). diffusers samples with `torch.multinomial` and takes the re-mask cut-off with a full sort;
ours samples by inverse CDF (softmax -> cumsum -> searchsorted) and takes the cut-off with `kthvalue`.

Both run the same step: batch 1, every token masked, the 6th of 12 cosine steps (so both sample all N positions and
re-mask floor(N * gamma) of them), fp32 logits. Per cell the two run interleaved on 1 thread after a warm-up, each
sample times enough calls to last `--min-sample-s`, and the minimum over `--repeats` samples is reported (the
machine is shared and noisy); medians go to the JSON too. The script also checks that both re-mask the same number
of tokens.

    .venv/bin/python benchmarks/bench_scheduler.py            # full run, well under a minute
    .venv/bin/python benchmarks/bench_scheduler.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AmusedScheduler

from bench_common import machine_info
from unif2ace_hf.pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler

CODEBOOKS = (1024, 8192)
TOKENS = (256, 1024)
STEPS = 12
STEP_INDEX = 5


def make_step_fns(
    codebook: int, tokens: int, seed: int
) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """Return (ours, amused) closures running one step on the same logits; each returns prev_sample."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, tokens, codebook, generator=generator)
    sample = torch.full((1, tokens), codebook)

    ours = UniF2aceMaskGITScheduler(mask_token_id=codebook, codebook_size=codebook)
    ours.set_timesteps(STEPS)
    amused = AmusedScheduler(mask_token_id=codebook)
    amused.set_timesteps(STEPS)
    timestep = int(ours.timesteps[STEP_INDEX])
    assert int(amused.timesteps[STEP_INDEX]) == timestep

    def run_ours() -> torch.Tensor:
        return ours.step(logits, timestep, sample, generator=generator).prev_sample

    def run_amused() -> torch.Tensor:
        return amused.step(logits, timestep, sample, generator=generator).prev_sample

    return run_ours, run_amused


def calls_per_sample(fn: Callable[[], torch.Tensor], min_sample_s: float) -> int:
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, int(min_sample_s / once))


def time_interleaved(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int, min_sample_s: float
) -> dict[str, list[float]]:
    """Seconds per call, one sample per function per round, rounds interleaved."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    calls = {name: calls_per_sample(fn, min_sample_s) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--min-sample-s", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 repeats, tiny samples")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results_scheduler.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.repeats, args.min_sample_s = 3, 0.0
    torch.set_num_threads(1)
    cells = []
    print(f"{'codebook':>8} {'tokens':>6} {'amused ms':>10} {'ours ms':>8} {'speed-up':>8}  re-masked (ours/amused)")
    for codebook in CODEBOOKS:
        for tokens in TOKENS:
            run_ours, run_amused = make_step_fns(codebook, tokens, args.seed)
            remasked = (int((run_ours() == codebook).sum()), int((run_amused() == codebook).sum()))
            samples = time_interleaved({"amused": run_amused, "ours": run_ours}, args.repeats, args.min_sample_s)
            best = {name: min(values) * 1e3 for name, values in samples.items()}
            median = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
            speedup = best["amused"] / best["ours"]
            cells.append(
                {
                    "codebook": codebook,
                    "tokens": tokens,
                    "amused_ms_min": best["amused"],
                    "ours_ms_min": best["ours"],
                    "amused_ms_median": median["amused"],
                    "ours_ms_median": median["ours"],
                    "speedup_min": speedup,
                    "speedup_median": median["amused"] / median["ours"],
                    "remasked_ours": remasked[0],
                    "remasked_amused": remasked[1],
                }
            )
            print(
                f"{codebook:>8} {tokens:>6} {best['amused']:>10.2f} {best['ours']:>8.2f} {speedup:>7.1f}x  "
                f"{remasked[0]}/{remasked[1]}"
            )
    result = {
        "machine": machine_info(),
        "settings": {
            "batch": 1,
            "steps": STEPS,
            "step_index": STEP_INDEX,
            "dtype": "fp32",
            "repeats": args.repeats,
            "min_sample_s": args.min_sample_s,
            "quick": args.quick,
            "seed": args.seed,
        },
        "cells": cells,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
