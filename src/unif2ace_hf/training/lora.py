"""LoRA adapters for UniF²ace with peft: which weights get adapters, and how adapters are saved, loaded and merged.

peft 0.21.2 is the newest release, and transformers 5.24's own adapter API (`model.load_adapter`, `set_adapter`)
needs peft >= 0.22, so everything here goes through `peft.PeftModel` directly (`hf-stack-notes.md` §6).

Targets:
* linear layers by name (default: the attention projections `self_attn.{q_proj,k_proj,v_proj,dense}`), resolved to
  full module names here so that a bare `q_proj` cannot also catch the sequence-MoE resamplers' `q_proj` by accident;
* the token-MoE routed experts, which are fused `[E, in, out]` `nn.Parameter`s (`experts.up_proj` /
  `experts.down_proj` of every group), through peft's `target_parameters`. peft refuses dropout on those, so the
  config is built with `lora_dropout=0` and the requested dropout is put on the linear-layer adapters afterwards.

The image tokenizer (`vq_model`) is never adapted: it defines the image codes the rest of the model was trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

DEFAULT_TARGET_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense")
"""Attention projections of every decoder layer (Phi's names)."""

EXPERT_PARAMETERS = ("up_proj", "down_proj")
"""The fused routed-expert weights of `UniF2aceRoutedExperts` (biases stay frozen, as with LoRA on nn.Linear)."""

NEVER_ADAPTED = "vq_model"
"""Prefix of the image tokenizer's modules."""

LORA_SETTINGS = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.0,
    "target_modules": list(DEFAULT_TARGET_MODULES),
    "target_experts": True,
    "modules_to_save": None,
}
"""Keys a recipe's `lora:` section may set, with their defaults."""


def check_lora_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and every value checked, so a bad recipe fails before the model is touched."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(LORA_SETTINGS))
    if unknown:
        raise ValueError(f"lora: unknown key(s) {unknown}; known keys are {sorted(LORA_SETTINGS)}")
    merged = {**LORA_SETTINGS, **settings}
    r, alpha, dropout = merged["r"], merged["alpha"], merged["dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"lora.r: expected a positive integer, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"lora.alpha: expected a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"lora.dropout: expected a number in [0, 1), got {dropout!r}")
    for key in ("target_modules", "modules_to_save"):
        value = merged[key]
        if isinstance(value, str):
            value = [value]
        if value is not None and (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)):
            raise ValueError(f"lora.{key}: expected a list of module names, got {value!r}")
        merged[key] = None if value is None else list(value)
    if not isinstance(merged["target_experts"], bool):
        raise ValueError(f"lora.target_experts: expected true or false, got {merged['target_experts']!r}")
    if not merged["target_modules"] and not merged["target_experts"]:
        raise ValueError("lora: nothing to adapt (target_modules is empty and target_experts is false)")
    return merged


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern)


def resolve_target_modules(model: nn.Module, patterns: list[str]) -> list[str]:
    """Full names of the linear layers matching `patterns` (a name or a dotted suffix of one), outside `vq_model`.

    Each pattern must match at least one linear layer: a typo would otherwise train nothing and only show up as an
    unchanged model after hours of training.
    """
    linear_names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not (name == NEVER_ADAPTED or name.startswith(NEVER_ADAPTED + "."))
    ]
    resolved: list[str] = []
    for pattern in patterns:
        hits = [name for name in linear_names if _matches(name, pattern)]
        if not hits:
            raise ValueError(
                f"lora.target_modules: {pattern!r} matches no linear layer of the model (outside {NEVER_ADAPTED}); "
                f"linear layers look like {linear_names[:3]}"
            )
        resolved.extend(hit for hit in hits if hit not in resolved)
    return resolved


def resolve_expert_parameters(model: nn.Module) -> list[str]:
    """Full names of the fused routed-expert weights (`...token_moe.groups.<g>.experts.{up_proj,down_proj}`)."""
    from ..modeling.moe import UniF2aceRoutedExperts

    names = [
        f"{module_name}.{parameter}"
        for module_name, module in model.named_modules()
        if isinstance(module, UniF2aceRoutedExperts)
        for parameter in EXPERT_PARAMETERS
    ]
    if not names:
        raise ValueError("lora.target_experts: the model has no token-MoE routed experts; set target_experts: false")
    return names


def apply_lora(model: nn.Module, lora_settings: dict[str, Any] | None = None) -> PeftModel:
    """Wrap `model` in a `PeftModel` with fresh LoRA adapters; only the adapters (and `modules_to_save`) train.

    `lora_settings` keys: `r`, `alpha`, `dropout` (linear-layer adapters only), `target_modules` (names or dotted
    suffixes of linear layers; default the attention projections), `target_experts` (adapt the fused routed experts,
    default true), `modules_to_save` (whole modules trained and saved with the adapter, e.g. `["lm_head"]`).
    Works on a full-precision and on an 8-/4-bit model (QLoRA: the quantised linear layers get bitsandbytes LoRA
    layers; the fused experts are never quantised).
    """
    from .quantization import prepare_4bit_for_training

    settings = check_lora_settings(lora_settings)
    target_modules = resolve_target_modules(model, settings["target_modules"]) if settings["target_modules"] else []
    target_parameters = resolve_expert_parameters(model) if settings["target_experts"] else []
    for name in settings["modules_to_save"] or []:
        if name == NEVER_ADAPTED or name.startswith(NEVER_ADAPTED + "."):
            raise ValueError(f"lora.modules_to_save: {name!r} is the image tokenizer, which is never trained here")
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        # peft refuses dropout on parameter targets (ParamWrapper); the module adapters get theirs below.
        lora_dropout=0.0 if target_parameters else settings["dropout"],
        target_modules=target_modules,
        target_parameters=target_parameters or None,
        modules_to_save=settings["modules_to_save"],
        bias="none",
    )
    prepare_4bit_for_training(model)  # QLoRA: evaluation between steps must not break the next backward
    peft_model = get_peft_model(model, config)
    if target_parameters and settings["dropout"] > 0:
        _set_module_dropout(peft_model, settings["dropout"])
    return peft_model


def _set_module_dropout(peft_model: PeftModel, p: float) -> None:
    """Give every linear-layer adapter (not the expert ParamWrappers) dropout `p` on its input.

    The saved `adapter_config.json` still says `lora_dropout: 0`; dropout only acts while training, so a reloaded
    adapter gives the same outputs, but a run resumed from the adapter folder alone must pass `dropout` again.
    """
    from peft.tuners.lora.layer import LoraLayer, ParamWrapper

    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and not isinstance(module, ParamWrapper):
            for adapter in list(module.lora_dropout.keys()):
                module.lora_dropout[adapter] = nn.Dropout(p=p)


def save_adapter(model: PeftModel, output_dir: str | os.PathLike) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` (adapter weights only) to `output_dir`."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"save_adapter: expected a peft.PeftModel (from apply_lora), got {type(model).__name__}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir), safe_serialization=True)


def load_adapter(base_model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool = False) -> PeftModel:
    """Attach a saved adapter (a folder, or a Hub repo id that peft downloads) to `base_model` (full precision or
    quantised); `is_trainable` to keep training it."""
    folder = Path(adapter_dir)
    if folder.is_dir() and not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder}: no adapter_config.json (is this a folder written by save_adapter?)")
    return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)


def load_with_adapter(
    base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, merge: bool = True, **from_pretrained_kwargs: Any
) -> nn.Module:
    """Load a checkpoint and an adapter for inference.

    With `merge=True` (default) the adapter is folded into the weights (`merge_and_unload`) and a plain
    `UniF2aceForConditionalGeneration` comes back: both `UniF2acePipeline(model=...)` and
    `pipeline("face-understanding", model=...)` take it, and it runs at the base model's speed. `merge=False` returns
    the `PeftModel` (the adapter stays separate, e.g. to switch it off). Extra kwargs go to `from_pretrained`.
    """
    from ..modeling import UniF2aceForConditionalGeneration

    base = UniF2aceForConditionalGeneration.from_pretrained(base_dir, **from_pretrained_kwargs)
    peft_model = load_adapter(base, adapter_dir)
    if not merge:
        return peft_model.eval()
    return peft_model.merge_and_unload().eval()


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters an optimizer would update (for tests and logs)."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


@torch.no_grad()
def adapter_parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LORA_SETTINGS",
    "apply_lora",
    "adapter_parameter_count",
    "load_adapter",
    "load_with_adapter",
    "check_lora_settings",
    "resolve_expert_parameters",
    "resolve_target_modules",
    "save_adapter",
    "trainable_parameter_names",
]
