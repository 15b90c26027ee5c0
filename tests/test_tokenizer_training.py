"""Tokenizer training (accelerate, metrics, resume), its data sources, and `unif2ace eval-tokenizer`."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from unif2ace_hf import UniF2aceVQModel
from unif2ace_hf.cli import main
from unif2ace_hf.modeling.image_tokenizer import UniF2aceVQAttnBlock, UniF2aceVQResnetBlock
from unif2ace_hf.training.tokenizer_data import load_images, render_synthface
from unif2ace_hf.training.tokenizer_eval import judge_accuracy, judge_accuracy_by_category
from unif2ace_hf.training.tokenizer_init import zero_residual_branches
from unif2ace_hf.training.tokenizer_trainer import (
    TOKENIZER_PRESETS,
    TokenizerTrainingArguments,
    build_vq_config,
    train_tokenizer,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small convolutions gain nothing from a second thread on a shared 2-core machine; oversubscribed, they crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return render_synthface(12, size=32, seed=1, workers=1)


def arguments(output_dir, **overrides) -> TokenizerTrainingArguments:
    values = dict(
        data="unused",
        output_dir=str(output_dir),
        config="micro",
        max_steps=3,
        batch_size=4,
        warmup_steps=1,
        save_steps=2,
        log_steps=2,
        progress=False,
    )
    return TokenizerTrainingArguments(**{**values, **overrides})


def read_metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_three_steps_write_metrics_a_model_and_resume_exactly(tmp_path, faces):
    summary = train_tokenizer(arguments(tmp_path / "full", max_steps=5, save_steps=3), images=faces)
    assert summary["steps"] == 5
    full = read_metrics(tmp_path / "full")
    assert [row["step"] for row in full] == [1, 2, 3, 4, 5]
    assert {"loss", "l1", "gradient", "commitment", "entropy", "psnr", "lr", "seconds"} <= set(full[0])
    model = UniF2aceVQModel.from_pretrained(tmp_path / "full")
    assert model.config.image_size == 32
    # the machine is recorded: a time budget's step count depends on it
    machine = summary["machine"]
    assert machine["cpu"] and isinstance(machine["cpu_flags"], list) and machine["threads"] == torch.get_num_threads()

    # A run stopped at step 3 and resumed gives the uninterrupted run's steps 4 and 5.
    short = train_tokenizer(arguments(tmp_path / "short", max_steps=3), images=faces)
    assert short["steps"] == 3 and [row["step"] for row in read_metrics(tmp_path / "short")] == [1, 2, 3]
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-5")
    summary = train_tokenizer(arguments(resumed_dir, max_steps=5, save_steps=3, resume=True), images=faces)
    assert summary["steps"] == 5
    resumed = read_metrics(resumed_dir)
    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed[3:], full[3:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # the training clock carries over a resume (it drives the time budget's learning-rate decay)
    seconds = [row["seconds"] for row in resumed]
    assert seconds == sorted(seconds) and seconds[3] >= seconds[2]


def test_muon_trains_saves_both_optimizers_and_resumes_exactly(tmp_path, faces):
    train_tokenizer(
        arguments(tmp_path / "full", optimizer="muon", max_steps=5, save_steps=3, log_steps=1), images=faces
    )
    checkpoint = tmp_path / "full" / "checkpoints" / "step-3"
    # AdamW's state (the pixel and code layers, biases, norms) and Muon's momentum buffers (the hidden kernels)
    assert {"optimizer.bin", "optimizer_1.bin"} <= {path.name for path in checkpoint.iterdir()}
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-5")
    train_tokenizer(
        arguments(tmp_path / "resumed", optimizer="muon", max_steps=5, save_steps=3, log_steps=1, resume=True),
        images=faces,
    )
    full, resumed = ([row["loss"] for row in read_metrics(tmp_path / run)] for run in ("full", "resumed"))
    assert len(full) == len(resumed) == 5
    assert resumed[3:] == pytest.approx(full[3:], rel=1e-5)
    assert full[-1] < full[0]


def test_upsampling_is_nearest_neighbour_exactly():
    from unif2ace_hf.modeling.image_tokenizer import UniF2aceVQUpsample

    upsample = UniF2aceVQUpsample(4)
    x = torch.randn(2, 4, 5, 3)
    with torch.no_grad():
        expected = upsample.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        assert torch.equal(upsample(x), expected)


@pytest.mark.slow  # compiling forward and backward takes most of a minute on a CPU
def test_compiled_bf16_training_gets_the_eager_gradients(tmp_path, faces):
    """torch.compile once returned zero gradients for everything below the decoder's upsampling in bf16 (the
    nearest-neighbour interpolation's backward); a run with it learned nothing."""
    from unif2ace_hf.training.tokenizer_trainer import build_vq_config

    torch.manual_seed(0)
    model = UniF2aceVQModel(build_vq_config("micro")).train()
    compiled = copy.deepcopy(model)
    pixel_values = faces[:4].permute(0, 3, 1, 2).float() / 127.5 - 1
    for forward in (model, torch.compile(compiled)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = forward(pixel_values)
        (output.reconstruction.float() - pixel_values).abs().mean().backward()
    # conv weights only: a bias followed by GroupNorm has a true gradient of zero, so both hold rounding noise
    for (name, eager), (_, other) in zip(model.named_parameters(), compiled.named_parameters(), strict=True):
        if eager.dim() == 4:
            assert other.grad.norm() == pytest.approx(eager.grad.norm().item(), rel=0.1), name
    # and the trainer's option runs and saves the module's own weight names
    train_tokenizer(arguments(tmp_path / "compiled", max_steps=2, compile=True, bf16=True), images=faces)
    UniF2aceVQModel.from_pretrained(tmp_path / "compiled")


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, faces):
    train_tokenizer(arguments(tmp_path / "run", max_steps=1), images=faces)
    with pytest.raises(ValueError, match="output_dir.*already holds a run"):
        train_tokenizer(arguments(tmp_path / "run", max_steps=1), images=faces)
    with pytest.raises(ValueError, match="resume.*no checkpoint"):
        train_tokenizer(arguments(tmp_path / "fresh", resume=True), images=faces)
    with pytest.raises(ValueError, match="data.*expects 64"):
        train_tokenizer(arguments(tmp_path / "wrong", config="tiny"), images=faces)


def test_bf16_run_after_an_fp32_run_in_one_process(tmp_path, faces):
    train_tokenizer(arguments(tmp_path / "fp32", max_steps=1), images=faces)
    summary = train_tokenizer(arguments(tmp_path / "bf16", max_steps=1, bf16=True), images=faces)
    assert summary["mixed_precision"] == "bf16" and read_metrics(tmp_path / "bf16")[0]["loss"] > 0


@pytest.mark.parametrize("preset, codebook_size", [("tiny", 1024), ("small", 4096)])
def test_default_sized_presets_fit_the_size_budget(preset, codebook_size):
    from unif2ace_hf import UniF2aceVQConfig

    config = UniF2aceVQConfig(**TOKENIZER_PRESETS[preset])
    model = UniF2aceVQModel(config)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size <= 15_000_000 and config.codebook_size == codebook_size and config.latent_size == 16


def test_data_sources_agree(tmp_path, faces):
    np.save(tmp_path / "faces.npy", faces.numpy())
    (tmp_path / "pngs").mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face.numpy()).save(tmp_path / "pngs" / f"{i:03d}.png")
    assert torch.equal(load_images(tmp_path / "faces.npy"), faces)
    assert torch.equal(load_images(tmp_path / "pngs"), faces)
    assert load_images(tmp_path / "pngs", image_size=16, limit=3).shape == (3, 16, 16, 3)
    assert torch.equal(load_images("synthface:12:1", image_size=32), faces)
    with pytest.raises(ValueError, match="data"):
        load_images(tmp_path / "nothing-here")


def test_cli_trains_and_evaluates_on_a_parquet_dataset(tmp_path, capsys):
    pytest.importorskip("datasets")
    synthface = pytest.importorskip("unif2ace_hf.data.synthface")
    synthface.write_synthface(tmp_path / "data", 80, size=32, seed=0)
    assert load_images(tmp_path / "data", split="test").shape == (4, 32, 32, 3)
    code = main(
        [
            "train-tokenizer",
            "--data", str(tmp_path / "data"),
            "--output-dir", str(tmp_path / "vq"),
            "--config", "micro",
            "--max-steps", "2",
            "--batch-size", "4",
            "--no-progress",
            "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0 and "trained 2 steps" in capsys.readouterr().out
    grid = tmp_path / "recon.png"
    code = main(
        ["eval-tokenizer", "--model", str(tmp_path / "vq"), "--data", str(tmp_path / "data"), "--split", "test",
         "--grid", str(grid), "--json", str(tmp_path / "eval.json")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "PSNR:" in out and "codebook usage:" in out
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_images"] == 4 and 0 < result["codebook_usage"] <= 1
    by_category = result["judge_accuracy_by_category"]
    assert set(by_category) >= {"eyebrow_shape", "hair_color"} and "most lost:" in out
    assert all(0 <= v["originals"] <= 1 and 0 <= v["reconstructions"] <= 1 for v in by_category.values())
    assert Image.open(grid).size == (4 * 32, 2 * 32)

    # A second judge (here an untrained one) cross-checks the tokenizer; a folder without one is an error.
    from unif2ace_hf.data.synthface.taxonomy import TAXONOMY
    from unif2ace_hf.evaluation.attribute_judge import AttributeJudge, AttributeJudgeModel

    torch.manual_seed(0)
    AttributeJudge(AttributeJudgeModel([len(v) for v in TAXONOMY.values()], width=8, hidden=16)).save_pretrained(
        tmp_path / "other-judge"
    )
    evaluate = ["eval-tokenizer", "--model", str(tmp_path / "vq"), "--data", str(tmp_path / "data"), "--split", "test"]
    code = main([*evaluate, "--judge", str(tmp_path / "other-judge"), "--json", str(tmp_path / "other.json")])
    other = json.loads((tmp_path / "other.json").read_text())
    assert code == 0 and other["judge_accuracy_originals"] != result["judge_accuracy_originals"]
    capsys.readouterr()
    assert main([*evaluate, "--judge", str(tmp_path / "data")]) == 2
    assert "`--judge`" in capsys.readouterr().err


def test_judge_accuracy_per_category_skips_unknown_truth_and_unpredicted_categories():
    truth = [{"eyes": "blue", "nose": "long", "hat": None}, {"eyes": "brown", "nose": "short", "hat": "cap"}]
    predicted = [{"eyes": "blue", "nose": "short", "hat": "cap"}, {"eyes": "blue", "nose": "short"}]
    assert judge_accuracy_by_category(predicted, truth) == {"eyes": 0.5, "nose": 0.5}
    assert judge_accuracy(predicted, truth) == 0.5  # 2 of the same 4 (image, category) pairs


def test_warm_start_continues_from_a_saved_tokenizer(tmp_path, faces):
    train_tokenizer(arguments(tmp_path / "first", max_steps=2), images=faces)
    first = UniF2aceVQModel.from_pretrained(tmp_path / "first")
    summary = train_tokenizer(
        arguments(tmp_path / "second", max_steps=1, learning_rate=0.0, init_from=str(tmp_path / "first")), images=faces
    )
    assert summary["steps"] == 1
    second = UniF2aceVQModel.from_pretrained(tmp_path / "second")
    assert second.config.to_diff_dict() == first.config.to_diff_dict()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name  # learning rate 0: the weights are the first run's


def test_weight_average_is_saved_checkpointed_and_resumed(tmp_path, faces):
    from safetensors.torch import load_file

    decay = 0.5
    train_tokenizer(arguments(tmp_path / "full", max_steps=4, save_steps=1, ema_decay=decay), images=faces)
    checkpoints = tmp_path / "full" / "checkpoints"
    raw = {step: load_file(checkpoints / f"step-{step}" / "model.safetensors") for step in (3, 4)}
    average = {step: load_file(checkpoints / f"step-{step}" / "ema.safetensors") for step in (3, 4)}
    saved = load_file(tmp_path / "full" / "model.safetensors")
    assert saved.keys() == raw[4].keys()
    for name, value in saved.items():
        torch.testing.assert_close(value, average[4][name])
        if value.is_floating_point():  # integer buffers (the code-bit table) are constants, copied
            torch.testing.assert_close(average[4][name], decay * average[3][name] + (1 - decay) * raw[4][name])
    assert any(not saved[name].equal(raw[4][name]) for name in saved)  # the saved model is the average, not the last

    resumed_dir = tmp_path / "resumed"
    train_tokenizer(arguments(resumed_dir, max_steps=2, save_steps=2, ema_decay=decay), images=faces)
    train_tokenizer(arguments(resumed_dir, max_steps=4, save_steps=2, ema_decay=decay, resume=True), images=faces)
    for name, value in load_file(resumed_dir / "model.safetensors").items():
        torch.testing.assert_close(value, saved[name], rtol=1e-4, atol=1e-6)

    with pytest.raises(ValueError, match="ema_decay.*without a weight average"):
        train_tokenizer(arguments(tmp_path / "noema", max_steps=1), images=faces)
        train_tokenizer(arguments(tmp_path / "noema", max_steps=2, ema_decay=decay, resume=True), images=faces)
    with pytest.raises(ValueError, match="ema_decay"):
        train_tokenizer(arguments(tmp_path / "bad", ema_decay=1.0), images=faces)


def test_zeroed_residual_branches_make_every_block_an_identity():
    model = UniF2aceVQModel(build_vq_config("micro"))
    blocks = [m for m in model.modules() if isinstance(m, (UniF2aceVQResnetBlock, UniF2aceVQAttnBlock))]
    assert zero_residual_branches(model) == len(blocks) > 0
    hidden = torch.randn(2, 64, 8, 8)
    for block in (model.decoder.mid.block_1, model.decoder.mid.attn_1, model.encoder.mid.block_2):
        assert torch.equal(block(hidden), hidden)
    widening = next(b for b in blocks if getattr(b, "nin_shortcut", None) is not None)
    narrow = torch.randn(2, widening.conv1.in_channels, 8, 8)
    assert torch.equal(widening(narrow), widening.nin_shortcut(narrow))
    # the branch's first layer keeps its initialisation: it starts learning once the last one is non-zero
    assert model.decoder.mid.block_1.conv1.weight.abs().sum() > 0


@pytest.mark.parametrize("zero_init", [True, False])
def test_fresh_runs_start_from_zeroed_branches_unless_asked_not_to(tmp_path, faces, zero_init):
    learning_rate = 1e-3
    train_tokenizer(
        arguments(tmp_path, max_steps=1, learning_rate=learning_rate, zero_init_residual=zero_init), images=faces
    )
    trained = UniF2aceVQModel.from_pretrained(tmp_path)
    largest = max(m.conv2.weight.abs().max().item() for m in trained.modules() if hasattr(m, "conv2"))
    # Adam's first step moves each weight by at most the learning rate, so zeroed branches stay that close to zero
    if zero_init:
        assert largest <= learning_rate * 1.001
    else:
        assert largest > 10 * learning_rate


def test_cli_can_turn_zero_initialisation_off(tmp_path):
    code = main(
        ["train-tokenizer", "--data", "synthface:8:0", "--output-dir", str(tmp_path / "vq"), "--config", "micro",
         "--max-steps", "1", "--batch-size", "4", "--no-zero-init-residual", "--no-progress", "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    arguments_used = json.loads((tmp_path / "vq" / "training_summary.json").read_text())["arguments"]
    assert arguments_used["zero_init_residual"] is False
