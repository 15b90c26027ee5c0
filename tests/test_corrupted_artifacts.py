"""Damaged model folders and downloads fail loudly, naming the file or weight; none loads with random layers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor

from tiny_models import tiny_checkpoint
from unif2ace_hf import (
    UniF2aceForConditionalGeneration,
    UniF2aceMaskGITScheduler,
    UniF2aceModel,
    UniF2acePipeline,
    UniF2aceVQModel,
)
from unif2ace_hf.hub import CorruptedDownloadError

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A complete pipeline folder and a stand-alone image tokenizer folder, saved once."""
    root = tmp_path_factory.mktemp("saved")
    model, processor = tiny_checkpoint()
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    UniF2acePipeline(model=model, processor=processor, scheduler=scheduler).save_pretrained(root / "pipeline")
    model.vq_model.save_pretrained(root / "vq")
    return {"pipeline": root / "pipeline", "vq": root / "vq"}


def damaged_copy(saved: dict[str, Path], which: str, tmp_path: Path) -> Path:
    folder = tmp_path / which
    shutil.copytree(saved[which], folder)
    return folder


def edit_weights(folder: Path, edit) -> None:
    tensors = load_file(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("which, cls", [("pipeline", UniF2aceForConditionalGeneration), ("vq", UniF2aceVQModel)])
@pytest.mark.parametrize("keep", [0.5, 0.001, 0.0])
def test_truncated_safetensors_is_named(saved, tmp_path, which, cls, keep):
    folder = damaged_copy(saved, which, tmp_path)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(OSError, match=rf"{folder}: a weights file is not a complete safetensors file"):
        cls.from_pretrained(folder)


def test_truncated_weights_stop_the_pipeline_too(saved, tmp_path):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="not a complete safetensors file"):
        UniF2acePipeline.from_pretrained(folder)


@pytest.mark.parametrize("which, cls, key", [
    ("pipeline", UniF2aceForConditionalGeneration, "model.final_layernorm.weight"),
    ("vq", UniF2aceVQModel, "decoder.conv_in.bias"),
])  # fmt: skip
def test_a_tensor_of_the_wrong_shape_is_named(saved, tmp_path, which, cls, key):
    folder = damaged_copy(saved, which, tmp_path)
    edit_weights(folder, lambda t: t.__setitem__(key, torch.zeros(t[key].shape[0] + 1)))
    with pytest.raises(ValueError, match=rf"weight '{key}' has shape .* config does not match the weights"):
        cls.from_pretrained(folder)


@pytest.mark.parametrize("which, cls, key", [
    ("pipeline", UniF2aceForConditionalGeneration, "vq_model.decoder.conv_in.bias"),
    ("pipeline", UniF2aceForConditionalGeneration, "lm_head.weight"),
    ("vq", UniF2aceVQModel, "decoder.conv_in.bias"),
])  # fmt: skip
def test_a_missing_weight_is_never_randomly_initialised(saved, tmp_path, which, cls, key):
    folder = damaged_copy(saved, which, tmp_path)
    edit_weights(folder, lambda t: t.pop(key))
    with pytest.raises(ValueError, match=rf"no weight for '{key}'.*refusing to leave layers randomly initialised"):
        cls.from_pretrained(folder)


@pytest.mark.parametrize("which, cls", [("pipeline", UniF2aceForConditionalGeneration), ("vq", UniF2aceVQModel)])
def test_weights_the_config_has_no_place_for_are_an_error(saved, tmp_path, which, cls):
    folder = damaged_copy(saved, which, tmp_path)
    edit_weights(folder, lambda t: t.__setitem__("extra.weight", torch.ones(3)))
    with pytest.raises(ValueError, match=r"weights the config has no place for, e\.g\. 'extra\.weight'"):
        cls.from_pretrained(folder)


def test_a_config_with_fewer_layers_than_the_weights_is_an_error(saved, tmp_path):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    edit_config(folder, num_hidden_layers=1, token_moe_layers=[0], sequence_moe_layers=[0])
    with pytest.raises(ValueError, match=r"e\.g\. 'model\.layers\.1\..*config does not match the weights"):
        UniF2aceForConditionalGeneration.from_pretrained(folder)


def test_the_backbone_alone_still_loads_from_a_full_checkpoint(saved):
    """Leaving out the heads is what AutoModel asks for: not an error."""
    backbone = AutoModel.from_pretrained(saved["pipeline"])
    assert type(backbone) is UniF2aceModel


def test_a_config_with_a_different_tokenizer_size_is_named(saved, tmp_path):
    folder = damaged_copy(saved, "vq", tmp_path)
    edit_config(folder, base_channels=64)
    with pytest.raises(ValueError, match="has shape .* config does not match the weights"):
        UniF2aceVQModel.from_pretrained(folder)


def test_a_folder_without_config_is_named(saved, tmp_path):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(OSError, match=rf"{folder}: the folder has no config.json"):
        UniF2aceForConditionalGeneration.from_pretrained(folder)


def test_pickle_checkpoints_are_never_loaded(saved, tmp_path):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    tensors = load_file(folder / WEIGHTS)
    (folder / WEIGHTS).unlink()
    torch.save(tensors, folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="no file named model.safetensors"):
        UniF2aceForConditionalGeneration.from_pretrained(folder)


@pytest.mark.parametrize("missing", ["tokenizer.json", "processor_config.json"])
def test_a_missing_tokenizer_or_processor_file_is_named(saved, tmp_path, missing):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    (folder / missing).unlink()
    with pytest.raises(OSError, match=rf"the processor needs {missing}, which the folder lacks"):
        AutoProcessor.from_pretrained(folder)
    with pytest.raises(OSError, match=rf"the processor needs {missing}"):
        UniF2acePipeline.from_pretrained(folder)


@pytest.mark.parametrize("content", ["{}", '{"model": {"type": "BPE"}}', "not json"])
def test_a_damaged_tokenizer_file_is_named(saved, tmp_path, content):
    folder = damaged_copy(saved, "pipeline", tmp_path)
    (folder / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match=rf"{folder}: cannot load the processor; tokenizer.json or processor_config"):
        AutoProcessor.from_pretrained(folder)


def seed_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """The huggingface_hub cache layout by hand (blobs named by their sha256 ETag, snapshot links to them), as a
    download from the Hub leaves it; returns the weights blob."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    weights_blob = None
    for file in folder.iterdir():
        if file.is_file():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
            weights_blob = blob if file.name == WEIGHTS else weights_blob
    return weights_blob


def test_a_download_that_does_not_match_its_etag_is_refused(saved, tmp_path):
    cache = tmp_path / "hub-cache"
    blob = seed_hub_cache(cache, "tester/tiny-vq", saved["vq"])
    assert UniF2aceVQModel.from_pretrained("tester/tiny-vq", cache_dir=str(cache)) is not None
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: the size check passes, the hash does not
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptedDownloadError, match=r"tester/tiny-vq .*the downloaded file is corrupted"):
        UniF2aceVQModel.from_pretrained("tester/tiny-vq", cache_dir=str(cache))
