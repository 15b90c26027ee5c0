"""Example inputs for the Space: SynthFace faces rendered at start-up, and real photographs from installed packages.

Nothing is downloaded and no photograph is copied into this repository: the real faces are the public-domain
portraits that scikit-image (Eileen Collins, NASA) and matplotlib (Grace Hopper, US Navy) ship inside their wheels;
a package that is not installed just contributes no example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unif2ace_hf.data.synthface import make_caption, make_qa, render, sample_attributes

EXAMPLE_SIZE = 128
PHOTO_SIZE = 256


@dataclass(frozen=True)
class SynthFaceExample:
    """One rendered face with a caption describing it and a question whose exact answer is known."""

    image: Image.Image
    caption: str
    question: str
    answer: str


def synthface_examples(count: int = 3, seed: int = 2026) -> list[SynthFaceExample]:
    """Render `count` faces (deterministic for a seed); each comes with its caption and one open question."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        attributes = sample_attributes(rng)
        image = render(attributes, size=EXAMPLE_SIZE, seed=rng.getrandbits(31))
        caption, _ = make_caption(attributes, rng)
        pair = make_qa(attributes, rng, num_open=1, num_yes_no=0, num_reasoning=0)[0]
        examples.append(SynthFaceExample(image, caption, pair.question, pair.answer))
    return examples


def _square(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    return image.convert("RGB").crop(box).resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.LANCZOS)


def real_photo_examples() -> dict[str, Image.Image]:
    """Head-and-shoulders crops of the real portraits available in this environment, by name."""
    photos: dict[str, Image.Image] = {}
    try:
        from skimage import data as skimage_data

        photos["Eileen Collins (scikit-image)"] = _square(Image.fromarray(skimage_data.astronaut()), (90, 0, 360, 270))
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as hopper:
            photos["Grace Hopper (matplotlib)"] = _square(hopper, (96, 20, 416, 340))
    except ImportError:
        pass
    return photos


def hair_mask_layer(image: Image.Image) -> Image.Image:
    """A paint layer over the top third of a portrait (the hair), as the editor's brush would draw it."""
    layer = np.zeros((image.height, image.width, 4), dtype=np.uint8)
    layer[: image.height // 3, :, :] = (255, 255, 255, 255)
    return Image.fromarray(layer, mode="RGBA")
