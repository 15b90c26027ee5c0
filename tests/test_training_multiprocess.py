"""Data parallelism: 2 processes × batch b make the same update as 1 process × batch 2b (and as accumulation).

The losses are normalised by token counts summed over processes and micro-batches, and every row's noise depends on
the row alone, so only the MoE balance losses (batch statistics) and the Noise expert's draws could differ: the
recipe here has token-level MoE, no sequence-level MoE, and aux_weight 0.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny_models import TINY_RECIPE_MODEL
from unif2ace_hf.cli import main as cli_main

RECIPE = {
    "extends": "tiny-synthface",
    "model": {**TINY_RECIPE_MODEL, "sequence_moe_layers": []},
    "loss": {"aux_weight": 0.0},
    "training": {
        "learning_rate": 1.0e-3,
        # these tests compare gradient accounting; Muon's bf16 Newton-Schulz would turn float-rounding differences
        # between equivalent batchings into ~1e-3 differences of the update
        "optimizer": "adamw",
        "warmup_steps": 0,
        "max_steps": 2,
        "mixed_precision": "no",
        "save_steps": 100,
        "eval_steps": 0,
        "threads": 1,
        "progress": False,
    },
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from unif2ace_hf.data.synthface import write_synthface

    root = tmp_path_factory.mktemp("ddp")
    write_synthface(root / "data", num_images=40, size=64, seed=2)  # 28 train rows
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    return root / "data", root / "recipe.yaml"


def run_in_process(data: Path, recipe: Path, output: Path, *extra: str) -> dict[str, torch.Tensor]:
    from accelerate.state import AcceleratorState

    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        argv = ["train", "--recipe", str(recipe), "--data", str(data), "--output-dir", str(output), *extra]
        assert cli_main(argv) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return load_file(output / "final" / "model.safetensors")


def assert_same_update(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]):
    """Relative size of the difference between the two updates (all weights together). Adam divides by the
    gradient's size, so single elements with near-zero gradients may differ more; the whole update may not."""
    difference = sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in a)
    update = sum(float(((a[k] - start[k]).double() ** 2).sum()) for k in a)
    assert update > 0
    assert (difference / update) ** 0.5 < 1e-3, (difference / update) ** 0.5


def assert_same_losses(first: Path, second: Path) -> None:
    rows = [
        [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()] for path in (first, second)
    ]
    assert len(rows[0]) == len(rows[1]) == RECIPE["training"]["max_steps"]
    for a, b in zip(*rows):
        for key in ("loss", "mmu_loss", "t2i_loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)


def test_accumulation_matches_the_larger_batch(setup, tmp_path):
    data, recipe = setup
    big = run_in_process(data, recipe, tmp_path / "big", "--set", "training.batch_size=8")
    accumulated = run_in_process(
        data,
        recipe,
        tmp_path / "acc",
        "--set",
        "training.batch_size=4",
        "--set",
        "training.gradient_accumulation_steps=2",
    )
    start = run_in_process(data, recipe, tmp_path / "start", "--set", "training.learning_rate=0.0")
    assert_same_update(big, accumulated, start)
    assert_same_losses(tmp_path / "big", tmp_path / "acc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_with_twice_the_batch(setup, tmp_path):
    data, recipe = setup
    one = run_in_process(data, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    start = run_in_process(data, recipe, tmp_path / "start", "--set", "training.learning_rate=0.0")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    command = [
        # accelerate 1.15's `--cpu --num_processes 2` starts ONE process unless MPI is set up (simple_launcher);
        # `--multi_gpu` on a machine without visible GPUs runs torch.distributed with gloo (MULTI_CPU)
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "unif2ace_hf.cli",
        "train",
        "--recipe",
        str(recipe),
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "two"),
        "--no-progress",
        "--set",
        "training.batch_size=4",
    ]
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert_same_update(one, two, start)
    assert_same_losses(tmp_path / "one", tmp_path / "two")
