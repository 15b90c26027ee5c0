"""The model behind the Space: one copy of the weights serves understanding, generation and editing.

Kept apart from the Gradio layout so that it can be exercised and load-tested without a browser. Every method
validates its arguments and raises `ValueError` naming the argument; the app turns those into `gr.Error`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from transformers import pipeline

import unif2ace_hf
from unif2ace_hf import UniF2acePipeline
from unif2ace_hf.processing_unif2ace import load_image

MODEL_ENV = "UNIF2ACE_MODEL"
"""Environment variable naming the checkpoint (a local folder or a Hub repo id); the shipped default otherwise."""

MAX_PROMPT_CHARS = 1000
MAX_QUESTION_CHARS = 300
MAX_STEPS = 48
MAX_GUIDANCE = 20.0
MAX_SEED = 2**31 - 1
MAX_NEW_TOKENS = 96

StepCallback = Callable[[int, int], None]
"""`on_step(done, total)`: called after every diffusion step (the app feeds Gradio's progress bar with it)."""


def resolve_model_path(model_path: str | None = None) -> str:
    """The explicit argument, else `$UNIF2ACE_MODEL`, else `unif2ace_hf.DEFAULT_MODEL`: never a user's input."""
    chosen = model_path or os.environ.get(MODEL_ENV, "").strip() or unif2ace_hf.DEFAULT_MODEL
    return str(chosen)


def _text(value, argument: str, max_chars: int, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{argument}: expected text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise ValueError(f"{argument}: must not be empty; describe the face")
    if len(value) > max_chars:
        raise ValueError(f"{argument}: {len(value)} characters is too long (at most {max_chars})")
    return value


def _integer(value, argument: str, low: int, high: int) -> int:
    """Gradio sliders and numbers send floats; accept integral ones only, within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{argument}: expected an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{argument}: must be between {low} and {high}, got {int(value)}")
    return int(value)


def _number(value, argument: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN != NaN
        raise ValueError(f"{argument}: expected a number, got {value!r}")
    if not low <= float(value) <= high:
        raise ValueError(f"{argument}: must be between {low} and {high}, got {value}")
    return float(value)


class FaceService:
    """Loads the checkpoint once; requests run one at a time on it (the scheduler keeps per-call state)."""

    def __init__(self, model_path: str | None = None):
        self.model_path = resolve_model_path(model_path)
        is_folder = Path(self.model_path).is_dir()
        try:
            self.generator = UniF2acePipeline.from_pretrained(self.model_path)
        except Exception as error:  # noqa: BLE001 - any loader failure must name where the path came from
            where = "a local folder" if is_folder else "not a local folder, tried as a Hub repo id"
            raise ValueError(
                f"{MODEL_ENV}: cannot load the model from {self.model_path!r} ({where}): {error}"
            ) from error
        self.understander = pipeline(
            "face-understanding", model=self.generator.model, processor=self.generator.processor
        )
        self.generator.set_progress_bar_config(disable=True)
        self.image_size = self.generator.model.vq_model.config.image_size
        self._lock = threading.Lock()

    def understand(self, image, question: str | None = None) -> str:
        """Answer `question` about the face, or caption it when the question is empty."""
        if image is None:
            raise ValueError("image: upload a face photo (or pick an example)")
        face = load_image(image, "image")
        question = _text(question, "question", MAX_QUESTION_CHARS, required=False)
        with self._lock:
            result = self.understander(face, question=question or None, max_new_tokens=MAX_NEW_TOKENS)
        return result.get("answer", result.get("caption", ""))

    def generate(
        self, prompt: str, steps: int, guidance: float, seed: int, on_step: StepCallback | None = None
    ) -> Image.Image:
        """A face from a description: `steps` MaskGIT steps, diffusers-style guidance, a reproducible seed."""
        return self._sample(prompt, steps, guidance, seed, on_step)

    def edit(
        self,
        image,
        mask,
        prompt: str,
        steps: int,
        guidance: float,
        seed: int,
        on_step: StepCallback | None = None,
    ) -> Image.Image:
        """Regenerate the white part of `mask` following `prompt`; the rest of the face keeps its image codes."""
        if image is None:
            raise ValueError("image: upload a face photo (or pick an example) to edit")
        if mask is None:
            raise ValueError("mask: draw over the part of the face to regenerate")
        face = load_image(image, "image")
        mask = load_image(mask, "mask").convert("L")
        if mask.size != face.size:
            raise ValueError(f"mask: size {mask.size} does not match the image's size {face.size}")
        return self._sample(prompt, steps, guidance, seed, on_step, image=face, mask_image=mask)

    def _sample(self, prompt, steps, guidance, seed, on_step, **edit_inputs) -> Image.Image:
        prompt = _text(prompt, "prompt", MAX_PROMPT_CHARS, required=True)
        steps = _integer(steps, "steps", 1, MAX_STEPS)
        guidance = _number(guidance, "guidance", 0.0, MAX_GUIDANCE)
        seed = _integer(seed, "seed", 0, MAX_SEED)

        def report(pipe, step_index, timestep, tensors):
            if on_step is not None:
                on_step(step_index + 1, steps)
            return tensors

        with self._lock:
            return self.generator(
                prompt,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed),
                callback_on_step_end=report,
                **edit_inputs,
            ).images[0]
