"""What every benchmark records about the machine it ran on (results are only comparable on the same machine)."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def cpu_model() -> str:
    """The CPU's model name from `lscpu` (platform.processor() is empty on many Linux machines)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The matmul-relevant instruction-set flags (AVX-512, AMX): they decide the bf16 / fp32 speed ratio."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        flags = []
    return sorted(flag for flag in flags if flag.startswith(("amx", "avx512_bf16", "avx512f", "avx512_vnni")))


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
