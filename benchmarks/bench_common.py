"""What the benchmarks share: the description of the machine they ran on (results are only comparable on the same
machine) and interleaved timing (a shared machine's load bursts hit every variant alike)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch

from unif2ace_hf.training.machine import cpu_flags, cpu_model


def machine_info(threads: int | None = None) -> dict[str, object]:
    """CPU, cores, memory, software versions, intra-op threads and the load average when the run started (other
    people's processes share this machine; a high load makes absolute times and, less so, ratios noisy)."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "memory_gib": None if memory_gib is None else round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if threads is None else threads,
        "load_average_1_5_15_min": [round(value, 2) for value in os.getloadavg()],
        "grouped_mm_available": hasattr(torch.nn.functional, "grouped_mm"),
    }


def interleaved_samples(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each variant over `repeats` rounds that run every variant once, in turn, after one
    warm-up call each (if asked): first calls pay for the allocator and oneDNN primitive creation."""
    for fn in variants.values() if warmup else ():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples
