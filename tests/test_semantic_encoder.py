"""The frozen semantic encoder (for the Semantic expert and `semantic_input_embedding`): config checks, features
from `pixel_values`, where the input embedding adds them, cached answers, save/load (frozen, eval mode), bad input,
the training collator's features, and the script that adds it to a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import unif2ace_hf
from tiny_models import tiny_checkpoint, tiny_config
from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration
from unif2ace_hf.data.synthface.taxonomy import TAXONOMY
from unif2ace_hf.evaluation.attribute_judge import AttributeJudge, AttributeJudgeModel
from unif2ace_hf.modeling.semantic_encoder import UniF2aceSemanticEncoder

REPO = Path(__file__).resolve().parents[1]
ENCODER = {"width": 4, "hidden": 8, "image_size": 16}


def with_encoder(model: UniF2aceForConditionalGeneration) -> UniF2aceForConditionalGeneration:
    """The same weights plus a random semantic encoder (and the Semantic resamplers and input map it feeds)."""
    settings = model.config.to_dict()
    settings.update(semantic_encoder=dict(ENCODER), semantic_input_embedding=True, num_image_tokens=64)
    settings.pop("semantic_feature_dim", None)
    extended = UniF2aceForConditionalGeneration(UniF2aceConfig.from_dict(settings)).eval()
    kept = {name: tensor for name, tensor in model.state_dict().items() if ".experts.2.resampler." not in name}
    extended.load_state_dict(kept, strict=False)
    with torch.no_grad():
        for name, parameter in extended.named_parameters():
            if "semantic_encoder" in name or ".resampler." in name or "semantic_proj" in name:
                parameter.normal_(std=0.3)
        for layer in extended.config.sequence_moe_layers:
            # route every understanding row through the Semantic expert, so its features matter
            extended.model.layers[layer].sequence_moe.groups["mmu"].router.bias[2] += 20.0
    return extended


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    model = with_encoder(model)
    folder = tmp_path_factory.mktemp("semantic-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def faces(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)) for _ in range(count)]


def test_config_takes_the_feature_width_from_the_encoder_and_names_bad_settings():
    config = tiny_config(semantic_encoder=dict(ENCODER))
    assert config.semantic_feature_dim == ENCODER["hidden"]
    with pytest.raises(ValueError, match="semantic_encoder"):
        tiny_config(semantic_encoder={"width": 4, "hidden": 8})
    with pytest.raises(ValueError, match="semantic_encoder"):
        tiny_config(semantic_encoder={"width": 4, "hidden": 8, "image_size": 20})
    with pytest.raises(ValueError, match="semantic_feature_dim"):
        tiny_config(semantic_encoder=dict(ENCODER), semantic_feature_dim=16)
    with pytest.raises(ValueError, match="semantic_input_embedding"):
        tiny_config(semantic_input_embedding=True, num_image_tokens=8)
    with pytest.raises(ValueError, match="num_image_tokens"):
        tiny_config(semantic_encoder=dict(ENCODER), semantic_input_embedding=True)


def test_the_input_map_starts_at_zero_and_adds_features_to_understanding_images_only(checkpoint):
    _, model, processor = checkpoint
    config = model.config
    inputs = processor(images=faces(2), text=["What colour is her hair?"] * 2)
    ids = model.fill_image_placeholders(inputs["input_ids"], inputs["pixel_values"])
    features = model.semantic_encoder(inputs["pixel_values"])
    embedding = model.model.image_input_embedding
    mask = inputs["attention_mask"].bool()
    tasks = model.model._resolve_tasks(ids, mask, None, None, 2, ids.device)
    with torch.no_grad():
        extra = embedding(ids, mask, tasks, torch.float32, features)
        plain = embedding(ids, mask, tasks, torch.float32, torch.zeros_like(features))
        unit = torch.nn.functional.layer_norm(features[:, 0], (8,)) / 8**0.5
        projected = embedding.semantic_proj(unit)
    difference = extra - plain
    soi = (ids == config.soi_token_id).int().argmax(dim=1)
    for row in range(2):
        image = torch.zeros(ids.shape[1], dtype=torch.bool)
        image[int(soi[row]) + 1 : int(soi[row]) + 65] = True
        torch.testing.assert_close(difference[row, image], projected[row].expand(64, -1))
        assert difference[row, ~image].abs().max() == 0
    t2i_ids = torch.tensor(
        [[config.t2i_token_id, 5, config.soi_token_id] + [config.mask_token_id] * 64 + [config.eoi_token_id]]
    )
    t2i_mask = torch.ones_like(t2i_ids, dtype=torch.bool)
    t2i_tasks = model.model._resolve_tasks(t2i_ids, t2i_mask, None, None, 1, t2i_ids.device)
    with torch.no_grad():
        assert embedding(t2i_ids, t2i_mask, t2i_tasks, torch.float32, features[:1]).abs().max() == 0
    fresh = UniF2aceForConditionalGeneration(model.config)
    assert fresh.model.image_input_embedding.semantic_proj.weight.abs().max() == 0


def test_pixel_values_give_the_encoder_features_and_they_change_the_answer(checkpoint):
    _, model, processor = checkpoint
    images = faces(2)
    inputs = processor(images=images, text=["What colour is her hair?"] * 2)
    filled = model.fill_image_placeholders(inputs["input_ids"], inputs["pixel_values"])
    with torch.no_grad():
        from_pixels = model(**inputs).logits
        explicit = model(input_ids=filled, semantic_features=model.semantic_encoder(inputs["pixel_values"])).logits
        swapped = model(
            input_ids=filled, semantic_features=model.semantic_encoder(inputs["pixel_values"].flip(0))
        ).logits
    torch.testing.assert_close(from_pixels, explicit)
    assert (from_pixels - swapped).abs().max() > 1e-3  # the Semantic expert reads them


def test_cached_answers_equal_recomputing_the_sequence(checkpoint):
    folder, model, processor = checkpoint
    vqa = pipeline("face-understanding", model=str(folder), device="cpu")
    for image in faces(2):
        answer = vqa(image, question="Is he wearing glasses?", max_new_tokens=6)["answer"]
        inputs = processor(images=image, text="Is he wearing glasses?")
        features = model.semantic_encoder(inputs["pixel_values"])
        sequence = model.fill_image_placeholders(inputs["input_ids"], inputs["pixel_values"])
        start = sequence.shape[1]
        with torch.no_grad():
            for _ in range(6):
                logits = model(input_ids=sequence, semantic_features=features, use_cache=False).logits[:, -1]
                logits[:, model.config.non_text_token_ids()] = -float("inf")
                token = logits.argmax(-1, keepdim=True)
                sequence = torch.cat([sequence, token], dim=1)
                if int(token) == model.config.eos_token_id:
                    break
        assert answer == processor.batch_decode(sequence[:, start:], skip_special_tokens=True)[0].strip()


def test_saved_encoder_loads_and_stays_frozen_in_eval_mode(checkpoint):
    folder, model, processor = checkpoint
    loaded = UniF2aceForConditionalGeneration.from_pretrained(folder)
    for name, tensor in model.semantic_encoder.state_dict().items():
        torch.testing.assert_close(loaded.semantic_encoder.state_dict()[name], tensor)
    loaded.train()
    assert not loaded.semantic_encoder.training and loaded.model.training
    inputs = processor(images=faces(1), text="What colour is her hair?")
    loaded(**inputs).logits.sum().backward()
    assert all(p.grad is None for p in loaded.semantic_encoder.parameters())
    assert loaded.lm_head.weight.grad is not None


def test_bad_pixel_values_are_named(checkpoint):
    _, model, processor = checkpoint
    inputs = processor(images=faces(2), text=["What colour is her hair?"] * 2)
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:1])
    with pytest.raises(ValueError, match="pixel_values"):
        model.semantic_encoder(torch.zeros(1, 1, 16, 16))
    filled = model.fill_image_placeholders(inputs["input_ids"], inputs["pixel_values"])
    with pytest.raises(ValueError, match="semantic_features"):
        model(input_ids=filled)  # codes without the image: the features cannot be computed


def test_a_judge_network_loads_into_the_encoder_and_gives_its_hidden_layer():
    torch.manual_seed(0)
    judge = AttributeJudgeModel([len(v) for v in TAXONOMY.values()], width=4, hidden=8).eval()
    encoder = UniF2aceSemanticEncoder(width=4, hidden=8, image_size=64)
    encoder.load_state_dict(UniF2aceSemanticEncoder.state_dict_from_judge(judge.state_dict()), strict=True)
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        hidden = judge.classifier[:4](judge.features(pixels))
    torch.testing.assert_close(encoder(pixels)[:, 0], hidden)


def test_collator_passes_features_in_the_batch_row_order():
    from unif2ace_hf import UniF2aceMaskGITScheduler
    from unif2ace_hf.training.collator import TrainingCollator

    _, processor = tiny_checkpoint()
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    collator = TrainingCollator(processor, scheduler, seed=0, t2i_fraction=0.5)
    rows = [
        {
            "codes": [i] * 64,
            "caption": "a face",
            "qa": [{"question": "Hair?", "answer": "red"}],
            "semantic_features": [[float(i)] * 8],
            "_epoch": 0,
            "_index": i,
        }
        for i in range(8)
    ]
    batch = collator(rows)
    assert batch["semantic_features"].shape == (8, 1, 8)
    assert sorted(batch["semantic_features"][:, 0, 0].tolist()) == [float(i) for i in range(8)]
    # an understanding row keeps its codes, which name the row the features must come from
    understanding = (batch["labels"] != -100).any(dim=1)
    assert 0 < int(understanding.sum()) < 8
    start = processor.image_token_offset
    for row in understanding.nonzero().flatten().tolist():
        codes = batch["input_ids"][row][(batch["input_ids"][row] >= start) & (batch["input_ids"][row] < start + 64)]
        assert codes.numel() == 64 and float(codes[0] - start) == batch["semantic_features"][row, 0, 0]


def add_semantic_encoder(*arguments) -> subprocess.CompletedProcess:
    script = REPO / "scripts" / "add_semantic_encoder.py"
    command = [sys.executable, str(script), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_script_adds_the_encoder_to_a_trained_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    model.save_pretrained(tmp_path / "source")
    processor.save_pretrained(tmp_path / "source")
    judge = AttributeJudge(AttributeJudgeModel([len(v) for v in TAXONOMY.values()], width=4, hidden=8))
    judge.save_pretrained(tmp_path / "encoder")
    result = add_semantic_encoder(
        tmp_path / "source", tmp_path / "out", "--encoder", tmp_path / "encoder", "--router-bias", 3
    )
    assert result.returncode == 0, result.stdout + result.stderr
    extended = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert extended.config.semantic_encoder == {"width": 4, "hidden": 8, "image_size": 64}
    assert extended.config.semantic_input_embedding
    assert extended.model.image_input_embedding.semantic_proj.weight.abs().max() == 0
    source_state = model.state_dict()
    for name, tensor in extended.state_dict().items():
        if name in source_state and ".experts.2.resampler." not in name and "router.bias" not in name:
            torch.testing.assert_close(tensor, source_state[name])
    for layer in extended.config.sequence_moe_layers:
        group = extended.model.layers[layer].sequence_moe.groups["mmu"]
        assert 0 < group.experts[2].resampler.o_proj.weight.abs().max() < 1  # a fresh resampler
        source_bias = source_state[f"model.layers.{layer}.sequence_moe.groups.mmu.router.bias"]
        torch.testing.assert_close(group.router.bias - source_bias, torch.tensor([0.0, 0.0, 3.0, 0.0]))
    bad = add_semantic_encoder(tmp_path / "source", tmp_path / "out2", "--encoder", tmp_path)
    assert bad.returncode == 2 and "--encoder" in bad.stderr


@pytest.mark.skipif(unif2ace_hf.DEFAULT_MODEL is None, reason="no default model in this checkout")
def test_reliance_script_swaps_features_and_answers_break(tmp_path):
    """`scripts/semantic_feature_reliance.py` on the shipped model: with another face's features its open answers
    and captions (read from the features, docs/default_model.md) must get worse; too few faces is named."""
    from unif2ace_hf.data.synthface import write_synthface

    write_synthface(tmp_path / "faces", num_images=160, size=64, seed=5)
    script = REPO / "scripts" / "semantic_feature_reliance.py"
    command = [sys.executable, str(script), "--data", str(tmp_path / "faces"), "--num-examples", "6"]
    result = subprocess.run(
        [*command, "--output", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    own, swapped = report["own"], report["another face's"]
    assert own["per_kind"]["open"][1] == swapped["per_kind"]["open"][1] > 0
    assert own["per_kind"]["open"][0] > swapped["per_kind"]["open"][0]
    assert own["caption_attribute_precision"] > swapped["caption_attribute_precision"]
    bad = subprocess.run([*command[:-1], "1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--num-examples" in bad.stderr


@pytest.mark.skipif(unif2ace_hf.DEFAULT_MODEL is None, reason="no default model in this checkout")
def test_presence_probe_script_reports_each_category_and_names_bad_ones(tmp_path):
    from unif2ace_hf.data.synthface import write_synthface

    write_synthface(tmp_path / "faces", num_images=800, size=64, seed=5)
    script = REPO / "scripts" / "presence_readout_probe.py"
    command = [sys.executable, str(script), "--data", str(tmp_path / "faces"), "--num-examples", "40"]
    result = subprocess.run([*command, "--categories", "glasses"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| glasses |"))
    accuracies = [float(cell.split()[0]) for cell in row.strip("|").split("|")[3:]]
    assert all(0 <= value <= 1 for value in accuracies)
    assert accuracies[2] > 0.75  # the semantic features show glasses: the probe must find them
    bad = subprocess.run([*command, "--categories", "eye_color"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--categories" in bad.stderr
