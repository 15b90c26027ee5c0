"""The joint trainer: batches, loss decrease, exact resume, bad input, and the saved folder's loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tiny_models import TINY_RECIPE_MODEL
from unif2ace_hf.cli import main as cli_main
from unif2ace_hf.training.collator import TrainingCollator
from unif2ace_hf.training.recipes import load_recipe

TINY_RECIPE = {
    "extends": "tiny-synthface",
    "model": TINY_RECIPE_MODEL,
    "training": {
        "batch_size": 8,
        "learning_rate": 3.0e-3,
        "warmup_steps": 5,
        "max_steps": 80,
        "mixed_precision": "no",
        "save_steps": 40,
        "eval_steps": 40,
        "eval_rows": 8,
        "threads": 1,
        "progress": False,
    },
}


def reset_accelerate() -> None:
    """AcceleratorState is a process singleton (hf-stack-notes §9)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def synthface_dir(tmp_path_factory) -> Path:
    from unif2ace_hf.data.synthface import write_synthface

    folder = tmp_path_factory.mktemp("synthface")
    write_synthface(folder, num_images=80, size=64, seed=1)  # 64 train, 4 validation rows
    return folder


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    return path


def train(recipe: Path, data: Path, output: Path, *extra: str) -> int:
    torch.set_num_threads(1)
    reset_accelerate()
    try:
        return cli_main(
            [
                "train",
                "--recipe",
                str(recipe),
                "--data",
                str(data),
                "--output-dir",
                str(output),
                "--no-progress",
                *extra,
            ]
        )
    finally:
        reset_accelerate()


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthface_dir, tiny_recipe) -> Path:
    output = tmp_path_factory.mktemp("run")
    assert train(tiny_recipe, synthface_dir, output, "--max-steps", "80") == 0
    return output


# ---------------------------------------------------------------------------------------------- the collator
@pytest.fixture(scope="module")
def collator():
    from tiny_models import tiny_checkpoint
    from unif2ace_hf import UniF2aceMaskGITScheduler

    _, processor = tiny_checkpoint()
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    return TrainingCollator(processor, scheduler, seed=3)


def fake_rows(count: int, epoch: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "codes": torch.randint(0, 64, (64,), generator=generator).tolist(),
            "caption": "a smiling woman with red hair",
            "qa": [{"question": "What colour is her hair?", "answer": "red"}],
            "_epoch": epoch,
            "_index": index,
        }
        for index in range(count)
    ]


def test_mmu_labels_cover_the_answer_and_eos_only(collator):
    processor = collator.processor
    batch = processor.build_mmu_training_inputs(
        torch.zeros(2, 64, dtype=torch.long), ["What colour is her hair?", None], ["red", "a child with freckles"]
    )
    eos = processor.tokenizer.eos_token_id
    for row, answer in zip(range(2), ["red", "a child with freckles"]):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert labelled[-1] == eos
        assert processor.decode(labelled[:-1]).strip() == answer
        # the prompt before the answer is exactly the inference prompt
        prompt = batch["input_ids"][row][batch["attention_mask"][row].bool()][: -len(labelled)]
        inference = processor.build_mmu_inputs(torch.zeros(3, 16, 16), ["What colour is her hair?", None][row])[
            "input_ids"
        ][0]
        assert torch.equal(prompt[-20:], inference[-20:])


def test_t2i_rows_are_masked_where_labelled(collator):
    batch = collator(fake_rows(16))
    config_mask = collator.processor.mask_token_id
    offset = collator.processor.image_token_offset
    t2i_rows = batch["mask_ratio"] > 0
    assert 0 < int(t2i_rows.sum()) < 16
    labelled = batch["image_labels"] != -100
    assert bool((batch["input_ids"][labelled] == config_mask).all())
    # unmasked image slots hold the clean codes
    image_slots = torch.zeros_like(labelled)
    image_slots[t2i_rows, -65:-1] = True
    clean = image_slots & ~labelled
    assert bool(((batch["input_ids"][clean] >= offset) & (batch["input_ids"][clean] < offset + 64)).all())
    assert int(batch["num_image_tokens"]) == int(labelled.sum())
    assert not bool(labelled[~t2i_rows].any()) and not bool((batch["labels"][t2i_rows] != -100).any())


def test_rows_get_the_same_noise_in_any_batch(collator):
    rows = fake_rows(8)
    whole = collator(rows)
    halves = [collator(rows[:4]), collator(rows[4:])]
    assert int(whole["num_image_tokens"]) == sum(int(h["num_image_tokens"]) for h in halves)
    assert int(whole["num_mmu_tokens"]) == sum(int(h["num_mmu_tokens"]) for h in halves)
    assert torch.equal(whole["mask_ratio"].sort().values, torch.cat([h["mask_ratio"] for h in halves]).sort().values)
    assert not torch.equal(collator(fake_rows(8, epoch=1))["input_ids"], whole["input_ids"])


def test_caption_dropout_rate(collator):
    rows = fake_rows(400)
    batch = collator(rows)
    t2i = batch["mask_ratio"] > 0
    # an empty caption leaves `[t2i][sot][eot]` as the only text: count rows whose text part has 3 tokens
    pad = collator.processor.tokenizer.pad_token_id
    text_tokens = (batch["input_ids"][t2i][:, : -(64 + 2)] != pad).sum(dim=1)
    share = float((text_tokens == 3).float().mean())
    assert 0.05 < share < 0.15


# ---------------------------------------------------------------------------------------------- training runs
def test_loss_drops_by_ten_percent_in_80_steps(trained):
    rows = metrics(trained)
    assert [r["step"] for r in rows] == list(range(1, 81))
    assert {"loss", "mmu_loss", "t2i_loss", "aux_loss", "lr", "grad_norm"} <= set(rows[0])
    assert "eval_loss" in rows[39] and "eval_loss" in rows[79]
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    assert rows[79]["eval_loss"] < rows[39]["eval_loss"] or rows[79]["eval_loss"] < 0.9 * first
    assert (trained / "checkpoint-40").is_dir() and (trained / "checkpoint-80").is_dir()


def test_final_folder_loads_in_both_pipelines(trained):
    from transformers import pipeline

    from unif2ace_hf import UniF2acePipeline

    final = trained / "final"
    pipe = UniF2acePipeline.from_pretrained(final)
    assert pipe.processor.num_image_tokens == 256 and pipe.processor.image_processor.crop_size["height"] == 64
    image = pipe("a man", num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)).images[
        0
    ]
    assert image.size == (64, 64)
    vqa = pipeline("face-understanding", model=str(final))
    answer = vqa(image, question="Is he smiling?", max_new_tokens=3)
    assert isinstance(answer, (dict, list))


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])  # muon: the recipe's, with a second optimizer to restore
def test_resume_gives_the_same_next_losses(tmp_path, synthface_dir, tiny_recipe, optimizer):
    full = tmp_path / "full"
    choice = f"training.optimizer={optimizer}"
    assert (
        train(tiny_recipe, synthface_dir, full, "--max-steps", "6", "--set", "training.save_steps=3", "--set", choice)
        == 0
    )
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    assert train(tiny_recipe, synthface_dir, resumed, "--max-steps", "6", "--resume", "--set", choice) == 0
    expected = metrics(full)[3:]
    got = metrics(resumed)
    assert [r["step"] for r in got] == [4, 5, 6]
    for a, b in zip(expected, got):
        for key in ("loss", "mmu_loss", "t2i_loss", "aux_loss", "lr", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a["step"], key)


def test_prefetching_workers_give_the_same_losses(tmp_path, synthface_dir, tiny_recipe):
    """`training.dataloader_workers` collates ahead of the step in forked processes; the batches must not change."""
    inline, prefetched = tmp_path / "inline", tmp_path / "prefetched"
    assert train(tiny_recipe, synthface_dir, inline, "--max-steps", "4", "--set", "training.save_steps=100") == 0
    workers = ("--set", "training.dataloader_workers=2", "--set", "training.save_steps=100")
    assert train(tiny_recipe, synthface_dir, prefetched, "--max-steps", "4", *workers) == 0
    expected, got = metrics(inline), metrics(prefetched)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got):
        for key in ("loss", "mmu_loss", "t2i_loss", "aux_loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a["step"], key)


def test_resuming_with_another_optimizer_is_refused(tmp_path, capsys, synthface_dir, tiny_recipe):
    full = tmp_path / "muon"
    assert train(tiny_recipe, synthface_dir, full, "--max-steps", "1", "--set", "training.optimizer=muon") == 0
    common = ("--recipe", str(tiny_recipe), "--data", str(synthface_dir), "--output-dir", str(full))
    err = run_cli_error(capsys, *common, "--resume", "--set", "training.optimizer=adamw")
    assert "resume_from" in err and "training.optimizer" in err, err


# ---------------------------------------------------------------------------------------------- bad input
def run_cli_error(capsys, *argv: str) -> str:
    reset_accelerate()
    assert cli_main(["train", *argv]) == 2
    return capsys.readouterr().err


def test_unknown_recipe_keys_fail_before_training(tmp_path, capsys, synthface_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: tiny-synthface\ntraining:\n  batch_sise: 4\n")
    err = run_cli_error(capsys, "--recipe", str(bad), "--data", str(synthface_dir), "--output-dir", str(tmp_path / "o"))
    assert "batch_sise" in err and "training" in err
    bad.write_text("extends: tiny-synthface\noptimiser: adam\n")
    assert "optimiser" in run_cli_error(capsys, "--recipe", str(bad), "--output-dir", str(tmp_path / "o"))
    bad.write_text("extends: tiny-synthface\nmodel:\n  hidden_sise: 64\n")
    err = run_cli_error(capsys, "--recipe", str(bad), "--data", str(synthface_dir), "--output-dir", str(tmp_path / "o"))
    assert "hidden_sise" in err
    assert "no-such-recipe" in run_cli_error(capsys, "--recipe", "no-such-recipe", "--output-dir", str(tmp_path / "o"))
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_data_without_needed_columns_fails(tmp_path, capsys):
    from datasets import Dataset

    folder = tmp_path / "data"
    Dataset.from_dict({"id": ["a", "b"], "caption": ["x", "y"]}).to_parquet(str(folder / "train.parquet"))
    err = run_cli_error(
        capsys, "--recipe", "tiny-synthface", "--data", str(folder), "--output-dir", str(tmp_path / "o")
    )
    assert "qa" in err and "image" in err
    err = run_cli_error(
        capsys, "--recipe", "tiny-synthface", "--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")
    )
    assert "nope" in err


def test_missing_init_from_fails(tmp_path, capsys, synthface_dir):
    err = run_cli_error(
        capsys,
        "--recipe",
        "tiny-synthface",
        "--init-from",
        str(tmp_path / "missing"),
        "--data",
        str(synthface_dir),
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert "init_from" in err and "missing" in err
    import unif2ace_hf

    if not hasattr(unif2ace_hf, "DEFAULT_MODEL"):
        err = run_cli_error(
            capsys,
            "--recipe",
            "lora-finetune",
            "--init-from",
            "default",
            "--data",
            str(synthface_dir),
            "--output-dir",
            str(tmp_path / "o"),
        )
        assert "not shipped" in err


def test_shipped_recipes_validate():
    recipe = load_recipe("tiny-synthface")
    assert recipe["model"]["hidden_size"] == 256 and recipe["training"]["mixed_precision"] == "bf16"
    lora = load_recipe("lora-finetune")
    assert lora["init_from"] == "default" and lora["lora"]["r"] == 16


def test_lora_finetune_saves_an_adapter(trained, tmp_path, synthface_dir):
    pytest.importorskip("unif2ace_hf.training.lora")
    from safetensors.torch import load_file

    output = tmp_path / "lora"
    assert (
        train(
            Path("lora-finetune"),
            synthface_dir,
            output,
            "--init-from",
            str(trained / "final"),
            "--max-steps",
            "3",
            "--set",
            "training.threads=1",
            "--set",
            "training.eval_steps=0",
        )
        == 0
    )
    final = output / "final"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    assert (final / "processor_config.json").is_file() and (final / "scheduler" / "scheduler_config.json").is_file()
    adapter = load_file(final / "adapter_model.safetensors")
    assert adapter and all("lora" in name for name in adapter)
    assert [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_time_budget_stops_early_with_a_checkpoint_and_a_decayed_rate(tmp_path, synthface_dir, tiny_recipe):
    output = tmp_path / "timed"
    # a budget spent after the first step: the run stops there and still saves a checkpoint and the final model
    assert train(tiny_recipe, synthface_dir, output, "--max-steps", "50", "--set", "training.max_minutes=1e-6") == 0
    rows = metrics(output)
    assert [r["step"] for r in rows] == [1]
    assert (output / "checkpoint-1").is_dir() and (output / "final" / "model.safetensors").is_file()


def test_bad_worker_count_is_refused(tmp_path, capsys, synthface_dir, tiny_recipe):
    output = ["--output-dir", str(tmp_path / "o"), "--set", "training.dataloader_workers=-1"]
    err = run_cli_error(capsys, "--recipe", str(tiny_recipe), "--data", str(synthface_dir), *output)
    assert "training.dataloader_workers" in err


def test_bad_time_budget_is_refused(tmp_path, capsys, synthface_dir, tiny_recipe):
    err = run_cli_error(
        capsys,
        "--recipe",
        str(tiny_recipe),
        "--data",
        str(synthface_dir),
        "--output-dir",
        str(tmp_path / "o"),
        "--set",
        "training.max_minutes=-3",
    )
    assert "training.max_minutes" in err


def test_a_semantic_encoder_from_scratch_is_loaded_and_stays_frozen(tmp_path, synthface_dir, tiny_recipe):
    from safetensors.torch import load_file

    from unif2ace_hf.training.model_setup import semantic_encoder_from_judge

    output = tmp_path / "semantic"
    assert train(tiny_recipe, synthface_dir, output, "--max-steps", "2", "--set", "semantic_encoder=default") == 0
    encoder_config, encoder_state = semantic_encoder_from_judge("default")
    saved = load_file(str(output / "final" / "model.safetensors"))
    for name, tensor in encoder_state.items():
        torch.testing.assert_close(saved[name].float(), tensor, atol=1e-2, rtol=1e-2)  # saved in the model dtype
    config = json.loads((output / "final" / "config.json").read_text())
    assert config["semantic_encoder"] == encoder_config and config["semantic_feature_dim"] == encoder_config["hidden"]


def test_semantic_encoder_with_init_from_and_a_zero_save_interval_are_refused(tmp_path, capsys, synthface_dir, trained):
    common = ("--recipe", "tiny-synthface", "--init-from", str(trained / "final"), "--data", str(synthface_dir))
    for setting, expected in (
        ("semantic_encoder=default", ("semantic_encoder", "add_semantic_encoder")),
        ("training.save_steps=0", ("training.save_steps",)),
    ):
        err = run_cli_error(capsys, *common, "--output-dir", str(tmp_path / "o"), "--set", setting)
        assert all(text in err for text in expected), err
