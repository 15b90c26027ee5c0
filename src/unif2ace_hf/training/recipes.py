"""Training recipes: YAML files with a fixed schema, so a typo fails before any training starts.

A recipe is a shipped name (`tiny-synthface`, `lora-finetune`, files in `training/recipes/`) or a path to a YAML
file. A file may start from another recipe with `extends: NAME_OR_PATH` and override any key (deep merge).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

TRAINING_OPTIMIZERS = ("adamw", "muon")
"""`training.optimizer`: AdamW for every parameter, or Muon for the hidden matrices (training/optimizers.py)."""

DEFAULTS: dict[str, Any] = {
    "description": "",
    # from scratch: UniF2aceConfig fields (the vocabulary layout comes from the tokenizer, vq_config from the
    # image tokenizer); exclusive with `init_from`
    "model": None,
    "init_from": None,  # a checkpoint folder, or "default" (unif2ace_hf.DEFAULT_MODEL)
    "text_tokenizer": "default",  # from scratch: a tokenizer folder, or "default" (DEFAULT_TEXT_TOKENIZER)
    "vq_model": "default",  # from scratch: an image tokenizer folder, or "default" (DEFAULT_VQ_MODEL); frozen
    # from scratch: the Semantic expert's frozen image encoder, a `unif2ace data train-judge` folder or "default"
    # (the shipped SynthFace feature network); null = none (the expert reads the image's own embeddings)
    "semantic_encoder": None,
    "data": {
        "path": None,  # a datasets folder (parquet + README configs, e.g. `unif2ace data synthface`)
        "train_split": "train",
        "eval_split": "validation",
        "t2i_fraction": 0.5,  # share of rows used as text-to-image examples (the rest: understanding)
        "caption_dropout": 0.1,  # t2i rows with an empty caption (classifier-free guidance)
        "caption_qa_fraction": 0.2,  # mmu rows whose answer is (unpacked) or that also hold (packed) the caption
        # questions packed into one understanding row after its image (each sees the image and itself only);
        # 1 = one question per row
        "questions_per_image": 1,
        "max_text_length": 128,  # t2i text part, Show-o's fixed length
        "max_question_length": 128,
        "max_answer_length": 256,
        "max_train_rows": None,
        "codes_batch_size": 32,  # image-tokenizer batch when pre-computing codes
    },
    "loss": {
        "mmu_weight": 1.0,
        "t2i_weight": 1.0,
        "aux_weight": 1.0,  # times the model's own per-group λ (config.token_moe_balance_coefficients etc.)
        "d3diff_alpha": 0.01,
        "masking_schedule": "cosine",
    },
    "training": {
        "seed": 0,
        "batch_size": 8,  # per process and micro-step
        "gradient_accumulation_steps": 1,
        "learning_rate": 3e-4,
        # "adamw", or "muon": Muon for the transformer's hidden matrices, AdamW for the rest (training/optimizers.py)
        "optimizer": "adamw",
        "muon_momentum": 0.95,
        "weight_decay": 0.01,
        "adam_betas": [0.9, 0.95],
        "warmup_steps": 100,
        "max_steps": 1000,
        "max_minutes": None,  # a wall-clock budget: stop when spent, and decay the learning rate over it
        "min_lr_ratio": 0.1,  # cosine decays to this share of the peak
        "max_grad_norm": 1.0,
        "mixed_precision": "no",  # "no" or "bf16"
        "save_steps": 500,
        "eval_steps": 200,  # 0 = no evaluation
        "eval_rows": 32,
        "threads": None,
        # processes that collate the next micro-batches while the model steps (0: collate in the training loop).
        # On a GPU the collator's host time otherwise adds to every step; on a 2-core CPU it competes with the step.
        "dataloader_workers": 0,
        "cpu": False,  # force the CPU even where a GPU is visible (CPU-only machines use it anyway)
        "progress": True,
    },
    "lora": None,  # settings passed to unif2ace_hf.training.lora.apply_lora
}

CHECKED_SECTIONS = ("data", "loss", "training")
"""Sections whose keys are fixed; `model` and `lora` are passed on and checked by their consumers."""


def available_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def _read(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix and (RECIPES_DIR / f"{name_or_path}.yaml").is_file():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"recipe: {str(name_or_path)!r} is neither a shipped recipe ({', '.join(available_recipes())}) nor a "
            "YAML file"
        )
    if str(path.resolve()) in seen:
        raise ValueError(f"recipe: {path} extends itself (cycle: {' -> '.join(seen)})")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"recipe: {path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"recipe: {path} must be a mapping of sections, got {type(content).__name__}")
    parent = content.pop("extends", None)
    if parent is None:
        return content
    parent_path = Path(parent)
    if not parent_path.is_absolute() and (path.parent / parent_path).is_file():
        parent = path.parent / parent_path
    return deep_merge(_read(parent, seen + (str(path.resolve()),)), content)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_recipe(recipe: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """Reject unknown keys (naming them and the known ones) and fill in defaults."""
    unknown = sorted(set(recipe) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known top-level keys: {sorted(DEFAULTS)}")
    for section in CHECKED_SECTIONS:
        value = recipe.get(section) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{source}: `{section}` must be a mapping, got {type(value).__name__}")
        bad = sorted(set(value) - set(DEFAULTS[section]))
        if bad:
            raise ValueError(f"{source}: unknown key(s) {bad} in `{section}`; known: {sorted(DEFAULTS[section])}")
    for section in ("model", "lora"):
        if recipe.get(section) is not None and not isinstance(recipe[section], dict):
            raise ValueError(f"{source}: `{section}` must be a mapping, got {type(recipe[section]).__name__}")
    full = deep_merge(DEFAULTS, recipe)
    if (full["model"] is None) == (full["init_from"] is None):
        raise ValueError(f"{source}: give exactly one of `model` (from scratch) or `init_from` (a checkpoint)")
    training, data = full["training"], full["data"]
    if training["mixed_precision"] not in ("no", "bf16"):
        raise ValueError(
            f"{source}: training.mixed_precision must be 'no' or 'bf16', got {training['mixed_precision']!r}"
        )
    if training["optimizer"] not in TRAINING_OPTIMIZERS:
        raise ValueError(
            f"{source}: training.optimizer must be one of {TRAINING_OPTIMIZERS}, got {training['optimizer']!r}"
        )
    for key in ("batch_size", "gradient_accumulation_steps", "max_steps", "save_steps"):
        if not isinstance(training[key], int) or training[key] < 1:
            raise ValueError(f"{source}: training.{key} must be an integer >= 1, got {training[key]!r}")
    packed = data["questions_per_image"]
    if isinstance(packed, bool) or not isinstance(packed, int) or packed < 1:
        raise ValueError(f"{source}: data.questions_per_image must be an integer >= 1, got {packed!r}")
    workers = training["dataloader_workers"]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"{source}: training.dataloader_workers must be an integer >= 0, got {workers!r}")
    minutes = training["max_minutes"]
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
        raise ValueError(f"{source}: training.max_minutes must be a number > 0 or null, got {minutes!r}")
    for key in ("t2i_fraction", "caption_dropout", "caption_qa_fraction"):
        if not 0.0 <= float(data[key]) <= 1.0:
            raise ValueError(f"{source}: data.{key} must be in [0, 1], got {data[key]!r}")
    return full


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a recipe (following `extends`), apply `overrides` (same nesting), validate and fill defaults."""
    recipe = _read(name_or_path)
    if overrides:
        recipe = deep_merge(recipe, overrides)
    return validate_recipe(recipe, source=f"recipe {str(name_or_path)!r}")


__all__ = ["DEFAULTS", "TRAINING_OPTIMIZERS", "available_recipes", "deep_merge", "load_recipe", "validate_recipe"]
