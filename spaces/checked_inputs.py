"""Input components for the Space that check what arrives before Gradio processes it, and name the argument.

Gradio decodes an uploaded image in the component's `preprocess`, before the event handler runs, so a size check in
the handler would come after a decompression bomb had already been expanded in memory. `checked` makes a `gr.Image`
or `gr.ImageEditor` first read only the file header and raise a `gr.Error` naming the argument when the image is too
large or is not an image. Sliders and numbers get the argument's name in front of Gradio's own out-of-range message.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TypeVar

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

MAX_UPLOAD_SIZE = "8mb"
"""Largest file the server accepts (`launch(max_file_size=...)`): a face photo never needs more."""

MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest image decoded. The model sees 64×64 pixels; this still admits any camera photo of a face."""


def check_image_header(source: str | Path | bytes, argument: str) -> tuple[int, int]:
    """Read the image header only and refuse what is not an image or is too large; returns (width, height)."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as opened:  # lazy: reads the header, decodes no pixel
            width, height = opened.size
    except Image.DecompressionBombError:
        raise gr.Error(f"{argument}: the image has too many pixels (a decompression bomb?); refused") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise gr.Error(f"{argument}: not an image file that can be read (use PNG, JPEG or WebP)") from None
    if width < 1 or height < 1:
        raise gr.Error(f"{argument}: the image is empty ({width}x{height})")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise gr.Error(
            f"{argument}: {width}x{height} is larger than this Space accepts "
            f"(at most {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS} pixels); refused before decoding"
        )
    return width, height


def _check_payload(payload: FileData | bytes | None, argument: str) -> None:
    if payload is None:
        return
    if isinstance(payload, (bytes, bytearray, memoryview)):
        check_image_header(bytes(payload), argument)
    elif payload.url and payload.url.startswith("data:"):
        try:
            data = base64.b64decode(payload.url.split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            raise gr.Error(f"{argument}: malformed data URL") from None
        check_image_header(data, argument)
    elif payload.path is not None:
        check_image_header(payload.path, argument)


ComponentT = TypeVar("ComponentT", bound=gr.components.Component)


def checked(component: ComponentT, argument: str) -> ComponentT:
    """Give `component` its checks, naming `argument` in every error; returns the same component.

    The checks wrap this instance's own methods rather than subclassing: a subclass of a Gradio component writes a
    `.pyi` file next to its source at import time and needs a custom front-end name.
    """
    if isinstance(component, gr.ImageEditor):  # the background and each layer pass through this method
        convert = component.convert_and_format_image

        def checked_convert(file, flatten_on_white: bool = False):
            _check_payload(file, argument)
            return convert(file, flatten_on_white=flatten_on_white)

        component.convert_and_format_image = checked_convert
    elif isinstance(component, gr.Image):
        preprocess = component.preprocess

        def checked_preprocess(payload):
            _check_payload(payload, argument)
            return preprocess(payload)

        component.preprocess = checked_preprocess
    elif isinstance(component, (gr.Slider, gr.Number)):  # API calls can send any number
        preprocess = component.preprocess

        def named_preprocess(payload):
            try:
                return preprocess(payload)
            except gr.Error as error:
                raise gr.Error(f"{argument}: {error.message}") from None

        component.preprocess = named_preprocess
    else:
        raise TypeError(f"component: no checks for {type(component).__name__}")
    return component


def editor_image_and_mask(value: dict | None, argument: str = "image") -> tuple[Image.Image, Image.Image]:
    """The editor's value -> (face, mask): white where any drawn layer has paint, black elsewhere."""
    if not value or value.get("background") is None:
        raise gr.Error(f"{argument}: upload a face photo (or pick an example) to edit")
    background = value["background"]
    if not isinstance(background, Image.Image):
        raise gr.Error(f"{argument}: expected an image, got {type(background).__name__}")
    painted = np.zeros((background.height, background.width), dtype=bool)
    for index, layer in enumerate(value.get("layers") or []):
        if not isinstance(layer, Image.Image):
            raise gr.Error(f"mask: layer {index} is not an image ({type(layer).__name__})")
        if layer.size != background.size:  # layers follow the canvas; map them onto the photo
            layer = layer.resize(background.size, Image.Resampling.NEAREST)
        alpha = np.asarray(layer.convert("RGBA"))[..., 3]
        painted |= alpha > 0
    if not painted.any():
        raise gr.Error("mask: draw over the part of the face to regenerate (nothing is painted)")
    mask = Image.fromarray(painted.astype(np.uint8) * 255, mode="L")
    return background, mask
