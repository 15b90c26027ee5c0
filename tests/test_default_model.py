"""The embedded default model: ships inside the package, loads everywhere a model is asked for, offline."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForCausalLM, pipeline

import unif2ace_hf
from unif2ace_hf import UniF2aceForConditionalGeneration, UniF2aceModel, UniF2acePipeline

pytestmark = pytest.mark.skipif(
    getattr(unif2ace_hf, "DEFAULT_MODEL", None) is None, reason="the default model is not shipped in this checkout"
)


def test_default_model_is_small_safetensors_and_loads_with_auto_classes():
    folder = Path(unif2ace_hf.DEFAULT_MODEL)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 60 * 1024 * 1024 and (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert isinstance(AutoModelForCausalLM.from_pretrained(folder), UniF2aceForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(folder), UniF2aceModel)


def test_default_model_answers_and_generates():
    face = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    vqa = pipeline("face-understanding", model=unif2ace_hf.DEFAULT_MODEL)
    assert isinstance(vqa(face, question="What colour is the hair?", max_new_tokens=8)["answer"], str)
    pipe = UniF2acePipeline.from_pretrained(unif2ace_hf.DEFAULT_MODEL)
    codes = pipe(
        "a smiling woman with red hair",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="codes",
    ).images
    assert codes.shape == (1, 256)
