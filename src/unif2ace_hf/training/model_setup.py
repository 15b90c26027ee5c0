"""What a training run starts from: the data (checked before anything heavy), the model, processor and scheduler.

Every check here runs before the first optimizer step, so a bad recipe, data folder or `--init-from` fails in
seconds with a message naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset
from safetensors.torch import load_file

from ..modeling import UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2aceVQModel
from ..modeling.configuration_unif2ace import showo_vocabulary_layout
from ..pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler
from ..processing_unif2ace import UniF2aceImageProcessor, UniF2aceProcessor
from ..tokenization_unif2ace import SHOWO_SPECIAL_TOKENS
from .codes_cache import CODES_COLUMN

REQUIRED_COLUMNS = ("caption", "qa")
"""Besides `image` (or pre-computed `codes`)."""

LAYOUT_KEYS = (
    "text_vocab_size",
    "pad_token_id",
    "soi_token_id",
    "eoi_token_id",
    "t2i_token_id",
    "mmu_token_id",
    "reserved_task_token_ids",
    "bos_token_id",
    "eos_token_id",
    "image_token_offset",
    "codebook_size",
    "mask_token_id",
    "vocab_size",
    "vq_config",
)
"""Config fields that come from the tokenizers, never from a recipe."""


def resolve_init_from(init_from: str) -> Path:
    """`default` -> `unif2ace_hf.DEFAULT_MODEL`; otherwise an existing checkpoint folder."""
    if init_from == "default":
        import unif2ace_hf

        default = getattr(unif2ace_hf, "DEFAULT_MODEL", None)
        if default is None:
            raise ValueError(
                "init_from: 'default' names unif2ace_hf.DEFAULT_MODEL, but the default model is not shipped yet; "
                "pass --init-from PATH to a checkpoint folder"
            )
        init_from = str(default)
    path = Path(init_from)
    if not path.is_dir():
        raise ValueError(f"init_from: {init_from!r} is not a checkpoint folder (it does not exist)")
    if not (path / "config.json").is_file():
        raise ValueError(f"init_from: {init_from!r} has no config.json; expected a saved UniF2ace model folder")
    return path


def check_model_section(model: dict[str, Any]) -> None:
    """Unknown or tokenizer-owned config fields in a recipe's `model:` section are errors (the v5 config would
    accept and ignore them silently)."""
    fields = {field.name for field in dataclasses.fields(UniF2aceConfig)}
    unknown = sorted(set(model) - fields)
    if unknown:
        raise ValueError(f"recipe: unknown UniF2aceConfig field(s) in `model`: {unknown}")
    owned = sorted(set(model) & set(LAYOUT_KEYS))
    if owned:
        raise ValueError(f"recipe: `model` must not set {owned}; they come from the text and image tokenizers")


def load_training_data(
    path: str | Path | None, train_split: str, eval_split: str | None
) -> tuple[Dataset, Dataset | None]:
    """Load a datasets folder and check it has the splits and columns training needs."""
    if path is None:
        raise ValueError("data: no data folder given (pass --data DIR or set data.path in the recipe)")
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"data: {str(path)!r} is not a folder")
    try:
        dataset = load_dataset(str(folder))
    except Exception as error:  # datasets raises many types for unreadable folders
        raise ValueError(f"data: cannot load {str(path)!r} with datasets.load_dataset: {error}") from error
    if not isinstance(dataset, DatasetDict) or train_split not in dataset:
        splits = list(dataset) if isinstance(dataset, DatasetDict) else []
        raise ValueError(f"data: {str(path)!r} has no {train_split!r} split (splits: {splits})")
    for split in (train_split, eval_split):
        if split is None or split not in dataset:
            continue
        columns = dataset[split].column_names
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if "image" not in columns and CODES_COLUMN not in columns:
            missing.append("image")
        if missing:
            raise ValueError(
                f"data: split {split!r} of {str(path)!r} lacks the column(s) {missing} (has {columns}); training "
                "needs image, caption and qa (a list of {question, answer})"
            )
    if len(dataset[train_split]) == 0:
        raise ValueError(f"data: split {train_split!r} of {str(path)!r} is empty")
    eval_data = dataset[eval_split] if eval_split and eval_split in dataset and len(dataset[eval_split]) else None
    return dataset[train_split], eval_data


def vocabulary_layout(tokenizer, codebook_size: int) -> dict[str, Any]:
    """Show-o's layout from a tokenizer with Show-o's special tokens: text, specials, codes, mask (last)."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SHOWO_SPECIAL_TOKENS}
    expected = list(range(ids[SHOWO_SPECIAL_TOKENS[0]], ids[SHOWO_SPECIAL_TOKENS[0]] + len(SHOWO_SPECIAL_TOKENS)))
    if list(ids.values()) != expected or len(tokenizer) != expected[-1] + 1:
        raise ValueError(
            "text_tokenizer: Show-o's special tokens must be the last ids, in order (add_showo_special_tokens)"
        )
    layout = showo_vocabulary_layout(expected[0], codebook_size)
    return {**layout, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}


def _default_path(value: str, attribute: str) -> str:
    if value != "default":
        if not Path(value).is_dir():
            raise ValueError(f"recipe: {attribute.lower()} {value!r} is not a folder")
        return value
    import unif2ace_hf

    return getattr(unif2ace_hf, attribute)


def semantic_encoder_from_judge(path: str) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """`config.semantic_encoder` and the `semantic_encoder.*` weights from a `unif2ace data train-judge` folder, or
    from the shipped SynthFace feature network for "default"."""
    from ..evaluation.attribute_judge import CONFIG_NAME, INPUT_SIZE, WEIGHTS_NAME
    from ..modeling.semantic_encoder import UniF2aceSemanticEncoder
    from .perceptual_loss import DEFAULT_PERCEPTUAL_NET

    folder = Path(DEFAULT_PERCEPTUAL_NET if str(path) == "default" else path)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"semantic_encoder: {str(path)!r} is not a folder written by `unif2ace data train-judge`")
    settings = json.loads((folder / CONFIG_NAME).read_text())
    config = {
        "width": int(settings["width"]),
        "hidden": int(settings["hidden"]),
        "image_size": int(settings.get("input_size", INPUT_SIZE)),
    }
    judge_state = {name: tensor.float() for name, tensor in load_file(str(folder / WEIGHTS_NAME)).items()}
    state = UniF2aceSemanticEncoder.state_dict_from_judge(judge_state)
    return config, {f"semantic_encoder.{name}": tensor for name, tensor in state.items()}


def build_from_scratch(recipe: dict[str, Any]) -> tuple[UniF2aceForConditionalGeneration, UniF2aceProcessor]:
    """A new model sized by the recipe's `model:` section, with the text tokenizer's layout and the (frozen)
    image tokenizer's weights."""
    from transformers import AutoTokenizer

    check_model_section(recipe["model"])
    tokenizer = AutoTokenizer.from_pretrained(_default_path(recipe["text_tokenizer"], "DEFAULT_TEXT_TOKENIZER"))
    vq = UniF2aceVQModel.from_pretrained(_default_path(recipe["vq_model"], "DEFAULT_VQ_MODEL"))
    layout = vocabulary_layout(tokenizer, vq.config.codebook_size)
    vq_config = vq.config.to_dict()
    vq_config.pop("_name_or_path", None)  # a path of the training machine, meaningless in the saved model
    settings = dict(recipe["model"])
    slots = vq.config.latent_size**2
    if settings.get("image_position_embedding") and settings.setdefault("num_image_tokens", slots) != slots:
        raise ValueError(
            f"recipe: model.num_image_tokens={settings['num_image_tokens']} but the image tokenizer gives {slots} "
            "codes per image"
        )
    encoder_state = None
    if recipe["semantic_encoder"] is not None:
        settings["semantic_encoder"], encoder_state = semantic_encoder_from_judge(recipe["semantic_encoder"])
    config = UniF2aceConfig(**settings, **layout, vq_config=vq_config)
    model = UniF2aceForConditionalGeneration(config)
    model.vq_model.load_state_dict(vq.state_dict())
    if encoder_state is not None:
        model.load_state_dict(encoder_state, strict=False)
    size = vq.config.image_size
    data = recipe["data"]
    processor = UniF2aceProcessor(
        image_processor=UniF2aceImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer,
        num_image_tokens=slots,
        image_token_offset=config.image_token_offset,
        codebook_size=config.codebook_size,
        mask_token_id=config.mask_token_id,
        max_text_length=data["max_text_length"],
        max_question_length=data["max_question_length"],
    )
    return model, processor


def build_model(
    recipe: dict[str, Any],
) -> tuple[UniF2aceForConditionalGeneration, UniF2aceProcessor, UniF2aceMaskGITScheduler]:
    """Model (float32 weights, image tokenizer and semantic encoder frozen), processor and training scheduler for a recipe."""
    if recipe["init_from"] is not None:
        if recipe["semantic_encoder"] is not None:
            raise ValueError(
                "semantic_encoder: applies to a model built from scratch; give a checkpoint one with "
                "scripts/add_semantic_encoder.py"
            )
        path = resolve_init_from(recipe["init_from"])
        model = UniF2aceForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        processor = UniF2aceProcessor.from_pretrained(path)
    else:
        model, processor = build_from_scratch(recipe)
    if model.vq_model is None:
        raise ValueError("init_from: the checkpoint has no image tokenizer (config.vq_config is None)")
    model.vq_model.requires_grad_(False).eval()
    if model.semantic_encoder is not None:
        model.semantic_encoder.requires_grad_(False)
    codebook = model.config.codebook_size
    scheduler = UniF2aceMaskGITScheduler(
        mask_token_id=codebook, codebook_size=codebook, masking_schedule=recipe["loss"]["masking_schedule"]
    )
    return model, processor, scheduler


__all__ = [
    "build_model",
    "build_from_scratch",
    "check_model_section",
    "load_training_data",
    "resolve_init_from",
    "semantic_encoder_from_judge",
    "vocabulary_layout",
]
