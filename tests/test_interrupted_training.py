"""Interrupted training: `kill -9` in the middle of writing a checkpoint leaves the previous checkpoint and the
`latest` pointer intact, and resuming from it gives the uninterrupted run's next losses; a data worker that dies
surfaces as a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from unif2ace_hf.training import checkpointing, tokenizer_data
from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, train_tokenizer

DATA = "synthface:12:1"
RUN = dict(data=DATA, config="micro", max_steps=6, batch_size=4, warmup_steps=1, save_steps=2, log_steps=1)

# The child trains like the parent, but on the second checkpoint its weights file is written half-way and the
# process then SIGKILLs itself: no Python cleanup, no `finally`, like `kill -9` or the OOM killer.
KILLED_RUN = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import accelerate.utils.other as other
from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, train_tokenizer

real_save = other.safe_save_file
calls = []

def save_then_die(tensors, filename, *args, **kwargs):
    real_save(tensors, filename, *args, **kwargs)
    calls.append(filename)
    if len(calls) == 2:
        size = os.path.getsize(filename)
        with open(filename, "r+b") as handle:
            handle.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

other.safe_save_file = save_then_die
train_tokenizer(TokenizerTrainingArguments(output_dir=sys.argv[1], progress=False, **{run}))
"""


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_kill_9_while_saving_keeps_the_previous_checkpoint_and_resume_is_exact(tmp_path, one_thread):
    reference = tmp_path / "reference"
    train_tokenizer(TokenizerTrainingArguments(output_dir=str(reference), progress=False, **RUN))

    killed = tmp_path / "killed"
    script = textwrap.dedent(KILLED_RUN).replace("{run}", repr(RUN))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script, str(killed)], env=env, capture_output=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]

    checkpoints = killed / "checkpoints"
    assert (checkpoints / checkpointing.LATEST_FILE).read_text().strip() == "step-2"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["latest", "step-2"]
    partial = [p for p in checkpoints.iterdir() if p.name.startswith(".step-4")]
    assert partial, "the interrupted save should have been writing into a temporary folder"
    assert [row["step"] for row in metrics(killed)][-1] >= 2

    summary = train_tokenizer(TokenizerTrainingArguments(output_dir=str(killed), progress=False, resume=True, **RUN))
    assert summary["steps"] == 6
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")], "left-over temporary folders"
    resumed, full = metrics(killed), metrics(reference)
    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5, 6]
    for got, want in zip(resumed[2:], full[2:]):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), got["step"]


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    complete = lambda p: (p / "state.json").is_file()  # noqa: E731
    step = lambda p: int(p.name.split("-")[1])  # noqa: E731
    for n in (1, 3):
        folder = checkpointing.begin_checkpoint(tmp_path / f"step-{n}")
        (folder / "state.json").write_text("{}")
        checkpointing.commit_checkpoint(folder, tmp_path / f"step-{n}")
    assert checkpointing.find_latest(tmp_path, "step-*", complete, step).name == "step-3"
    checkpointing.begin_checkpoint(tmp_path / "step-5")  # a save that never finished
    assert checkpointing.find_latest(tmp_path, "step-*", complete, step).name == "step-3"
    (tmp_path / "step-3" / "state.json").unlink()  # `latest` names a damaged folder: use the newest good one
    assert checkpointing.find_latest(tmp_path, "step-*", complete, step).name == "step-1"
    (tmp_path / "latest").write_text("../../etc\n")
    assert checkpointing.find_latest(tmp_path, "step-*", complete, step).name == "step-1"


def replace_render_range(monkeypatch, function) -> None:
    """Swap the worker function; named like the original so the pool pickles it by reference (forked workers
    inherit the patched module)."""
    function.__module__, function.__qualname__ = tokenizer_data.__name__, "_render_range"
    monkeypatch.setattr(tokenizer_data, "_render_range", function)


def test_a_dead_data_worker_is_a_clear_error(monkeypatch):
    parent = os.getpid()
    real = tokenizer_data._render_range

    def die_in_worker(args):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(args)

    replace_render_range(monkeypatch, die_in_worker)
    with pytest.raises(RuntimeError, match=r"`data`: a SynthFace rendering worker died \(killed, or out of memory\)"):
        tokenizer_data.render_synthface(1000, size=8, workers=2)


def test_an_error_inside_a_data_worker_names_it(monkeypatch):
    def fail(args):
        raise OSError("disk vanished")

    replace_render_range(monkeypatch, fail)
    with pytest.raises(RuntimeError, match="`data`: a SynthFace rendering worker failed: OSError: disk vanished"):
        tokenizer_data.render_synthface(1000, size=8, workers=2)
