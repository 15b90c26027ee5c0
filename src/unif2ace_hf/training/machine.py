"""A description of the machine a run trained on, written next to its results.

Time-budgeted runs (`--max-minutes`) are only comparable on the same machine, and "this CPU" is not always the same
one: the 2-core hosts here have been an Intel Xeon with AMX and an AMD EPYC without it, and a compiled bf16
tokenizer step takes about 1.5x as long on the second (docs/decisions.md). Recording the CPU makes a run's step count
explainable after the fact.
"""

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


def describe_machine(device: torch.device | str = "cpu") -> dict[str, object]:
    """CPU model and flags, cores, torch threads and version, and the accelerator's name when training ran on one."""
    device = torch.device(device)
    machine: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        machine["accelerator"] = torch.cuda.get_device_name(device)
    return machine


__all__ = ["cpu_model", "cpu_flags", "describe_machine"]
