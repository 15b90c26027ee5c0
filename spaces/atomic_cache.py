"""Output images reach Gradio's cache atomically.

Gradio 6.31 saves an output image to a content-addressed path (`<cache>/<hash of the bytes>/image.png`) with
`Path.write_bytes`, which truncates and rewrites the file even when it already exists. Two requests that produce the
same image at the same time (same prompt, steps and seed) then race: a client downloading the first result can read
the file while the second request is rewriting it and get 0 bytes (found by the load test:
`RemoteProtocolError: peer closed connection without sending complete message body`). Writing a temporary file in
the same folder and renaming it over the target means every reader sees a complete file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils
from PIL import Image


def save_pil_to_cache_atomically(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Drop-in for `gradio.processing_utils.save_pil_to_cache`: same path, same bytes, written by rename."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return str(target)


def install() -> None:
    """Route every Gradio output-image save through the atomic writer (Gradio looks the function up per call)."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically
