"""The Space's output-image cache writer: readers never see a half-written file, even while identical images are
saved again and again (the race the load test found in Gradio's own writer)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from space_server import import_space_module  # noqa: E402


def hammer(save, cache_dir, image: Image.Image, seconds: float = 1.5) -> tuple[int, list[int]]:
    """Two threads keep saving the same image while a third keeps reading it; returns (full size, short reads)."""
    path = save(image, cache_dir, format="png")
    size = len(open(path, "rb").read())
    stop = threading.Event()
    short: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            save(image, cache_dir, format="png")

    def reader() -> None:
        while not stop.is_set():
            with open(path, "rb") as handle:
                length = len(handle.read())
            if length != size:
                short.append(length)

    threads = [threading.Thread(target=f) for f in (writer, writer, reader)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return size, short


def test_identical_outputs_are_never_read_half_written(tmp_path):
    atomic_cache = import_space_module("atomic_cache")
    from gradio import processing_utils

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    path = atomic_cache.save_pil_to_cache_atomically(image, str(tmp_path / "atomic"), format="png")
    assert path == processing_utils.save_pil_to_cache(image, str(tmp_path / "atomic"), format="png")
    size, short = hammer(atomic_cache.save_pil_to_cache_atomically, str(tmp_path / "atomic"), image)
    assert size > 0 and short == []
    assert not list((tmp_path / "atomic").rglob("*.partial")), "temporary files left behind"


def test_install_routes_gradio_saves_through_it(monkeypatch):
    atomic_cache = import_space_module("atomic_cache")
    from gradio import processing_utils

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", processing_utils.save_pil_to_cache)
    atomic_cache.install()
    assert processing_utils.save_pil_to_cache is atomic_cache.save_pil_to_cache_atomically
