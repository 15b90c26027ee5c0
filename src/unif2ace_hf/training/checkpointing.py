"""Crash-safe checkpoint folders: a run killed at any instant (even `kill -9` in the middle of writing) leaves the
previous checkpoint and the `latest` pointer intact.

A checkpoint is written into a temporary sibling folder, every file in it is fsynced, and only then is the folder
renamed into place (an atomic rename on POSIX file systems) and the `latest` pointer replaced (a temp file, fsync,
`os.replace`). A reader trusts `latest` only if the folder it names is complete; otherwise it falls back to the
newest complete folder. Temporary folders left by a killed run are ignored and removed by the next save.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

LATEST_FILE = "latest"
_TEMP_MARK = ".tmp-"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` to disk (files first, then the folders that name them)."""
    for parent, _, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync_path(Path(parent) / name)
        _fsync_path(Path(parent))


def temporary_folder(final: Path) -> Path:
    """Where `final` is written before it is complete; the same name in every process of a distributed run."""
    return final.parent / f".{final.name}{_TEMP_MARK}partial"


def begin_checkpoint(final: Path) -> Path:
    """A fresh, empty temporary folder for `final` (left-overs of a killed run are removed first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".*{_TEMP_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = temporary_folder(final)
    temporary.mkdir()
    return temporary


def commit_checkpoint(temporary: Path, final: Path, latest_dir: Path | None = None) -> Path:
    """Make the fully written `temporary` folder the checkpoint `final`, then point `latest` at it."""
    fsync_tree(temporary)
    if final.exists():  # re-saving a step: move the old copy away first, the rename below must not merge folders
        previous = final.parent / f".{final.name}{_TEMP_MARK}previous"
        os.replace(final, previous)
        os.replace(temporary, final)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(temporary, final)
    _fsync_path(final.parent)
    write_latest(latest_dir or final.parent, final)
    return final


def write_latest(directory: Path, checkpoint: Path) -> None:
    """Atomically replace `directory/latest` with the name of `checkpoint`."""
    pointer = directory / LATEST_FILE
    partial = directory / f".{LATEST_FILE}{_TEMP_MARK}partial"
    with open(partial, "w") as handle:
        handle.write(checkpoint.name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, pointer)
    _fsync_path(directory)


def find_latest(directory: Path, pattern: str, is_complete: Callable[[Path], bool], step_of: Callable[[Path], int]) -> Path | None:  # fmt: skip
    """The checkpoint `latest` names if it is complete, else the newest complete one matching `pattern`."""
    pointer = directory / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text().strip()
        if name and "/" not in name and "\\" not in name and name not in (".", "..") and is_complete(directory / name):
            return directory / name
    found = [p for p in directory.glob(pattern) if _TEMP_MARK not in p.name and is_complete(p)]
    return max(found, key=step_of) if found else None


__all__ = [
    "LATEST_FILE",
    "begin_checkpoint",
    "commit_checkpoint",
    "find_latest",
    "fsync_tree",
    "temporary_folder",
    "write_latest",
]
