"""Launch the Gradio Space (spaces/app.py) in-process on a free 127.0.0.1 port, for the Space tests."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces"


def import_space_module(name: str):
    """Import a module of the Space the way the Space runs it: its folder on `sys.path`."""
    if str(SPACE_DIR) not in sys.path:
        sys.path.insert(0, str(SPACE_DIR))
    return __import__(name)


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (all probes held open together, so no port is handed out twice)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def free_port() -> int:
    return free_ports(1)[0]


@contextlib.contextmanager
def launched_space(temp_dir: Path, model_path: str | None = None, port: int | None = None) -> Iterator[str]:
    """Yield the local URL of a running Space; its cached files stay under `temp_dir` (never the system /tmp)."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)  # read when the components are built
    try:
        app = import_space_module("app")
        demo = app.build_app(model_path)
        _, url, _ = app.launch(
            demo, server_name="127.0.0.1", server_port=port or free_port(), prevent_thread_lock=True, quiet=True
        )
        try:
            yield url
        finally:
            demo.close()
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
