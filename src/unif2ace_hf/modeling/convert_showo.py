"""Show-o checkpoint -> UniF²ace format.

Show-o wraps transformers' Phi (`showo.` prefix, q/k LayerNorm forced on) in a diffusers-style folder: `config.json`
plus `pytorch_model.safetensors` (or `pytorch_model.bin`). Our backbone uses Phi's parameter names, so a dense
conversion is a prefix change. `moe="upcycle"` builds both MoE levels around the dense weights such that the converted
model still computes exactly the dense function (see `UniF2aceTokenMoE.upcycle_from_dense` and
`UniF2aceSequenceMoE.init_as_identity`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PhiConfig

from ..tokenization_unif2ace import SHOWO_SPECIAL_TOKENS, add_showo_special_tokens
from .configuration_unif2ace import UniF2aceConfig, showo_vocabulary_layout
from .modeling_unif2ace import UniF2aceForConditionalGeneration

SHOWO_PREFIX = "showo."
SHOWO_WEIGHT_FILES = ("pytorch_model.safetensors", "model.safetensors", "pytorch_model.bin")
MOE_MODES = ("dense", "upcycle")


def load_showo_config(showo_dir: str | os.PathLike) -> dict:
    path = Path(showo_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"showo_dir: no config.json in {showo_dir}")
    return json.loads(path.read_text())


def load_showo_state_dict(showo_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read Show-o weights: safetensors first; a `.bin` only with `torch.load(weights_only=True)`."""
    for name in SHOWO_WEIGHT_FILES:
        path = Path(showo_dir) / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            try:
                return load_file(str(path))
            except Exception as error:
                raise ValueError(f"showo_dir: cannot read {path.name}: {error}") from error
        return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"showo_dir: none of {SHOWO_WEIGHT_FILES} found in {showo_dir}")


def load_llm_config(llm_config: str | os.PathLike | None, showo_config: dict) -> PhiConfig:
    """The Phi config Show-o was built on: a config.json, a folder, or (default) Show-o's `llm_model_path`."""
    source = llm_config or showo_config.get("llm_model_path")
    if not source:
        raise ValueError("llm_config: not given and Show-o's config.json has no llm_model_path")
    path = Path(source)
    if path.is_file():
        return PhiConfig.from_json_file(str(path))
    try:
        return PhiConfig.from_pretrained(str(source))
    except OSError as error:
        raise FileNotFoundError(
            f"llm_config: cannot load the Phi config from {str(source)!r} (pass --llm-config with a local "
            f"config.json or folder): {error}"
        ) from error


def showo_token_layout(showo_config: dict, vocab_size: int) -> dict[str, int]:
    """Special-token ids, image-code offset and mask id of a Show-o vocabulary of `vocab_size` ids."""
    codebook_size = int(showo_config.get("codebook_size", 8192))
    text_vocab_size = int(
        showo_config.get("llm_vocab_size", vocab_size - len(SHOWO_SPECIAL_TOKENS) - codebook_size - 1)
    )
    if text_vocab_size <= 0:
        raise ValueError(
            f"showo config: codebook_size={codebook_size} leaves no room for text in vocab_size={vocab_size}"
        )
    return showo_vocabulary_layout(
        text_vocab_size, codebook_size, int(showo_config.get("mask_token_id", vocab_size - 1)), vocab_size
    )


def build_config(
    showo_config: dict,
    phi_config: PhiConfig,
    vocab_size: int,
    moe: str = "dense",
    num_routed_experts: int = 8,
    num_experts_per_tok: int = 4,
    moe_intermediate_size: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> UniF2aceConfig:
    """UniF²ace config with Show-o's vocabulary, Phi's sizes and the chosen MoE layout."""
    if moe not in MOE_MODES:
        raise ValueError(f"moe: {moe!r} is not one of {MOE_MODES}")
    rope = phi_config.rope_parameters or {}
    layers = list(range(phi_config.num_hidden_layers))
    kwargs = dict(
        **showo_token_layout(showo_config, vocab_size),
        bos_token_id=bos_token_id if bos_token_id is not None else phi_config.bos_token_id,
        eos_token_id=eos_token_id if eos_token_id is not None else phi_config.eos_token_id,
        hidden_size=phi_config.hidden_size,
        intermediate_size=phi_config.intermediate_size,
        num_hidden_layers=phi_config.num_hidden_layers,
        num_attention_heads=phi_config.num_attention_heads,
        num_key_value_heads=phi_config.num_key_value_heads,
        hidden_act=phi_config.hidden_act,
        layer_norm_eps=phi_config.layer_norm_eps,
        partial_rotary_factor=rope.get("partial_rotary_factor", 0.5),
        rope_theta=rope.get("rope_theta", 10000.0),
        max_position_embeddings=phi_config.max_position_embeddings,
        qk_layernorm=True,  # Show-o forces it on
        initializer_range=phi_config.initializer_range,
        tie_word_embeddings=False,
    )
    if moe == "upcycle":
        kwargs.update(
            token_moe_layers=layers,
            sequence_moe_layers=layers,
            num_shared_experts=1,
            shared_expert_intermediate_size=phi_config.intermediate_size,
            num_routed_experts=num_routed_experts,
            num_experts_per_tok=num_experts_per_tok,
            moe_intermediate_size=moe_intermediate_size or max(1, phi_config.intermediate_size // num_routed_experts),
        )
    return UniF2aceConfig(**kwargs)


def strip_showo_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `showo.` prefix; refuse weights this converter would otherwise lose."""
    unsupported = [key for key in state_dict if not key.startswith(SHOWO_PREFIX)]
    if any(key.startswith("mm_projector.") for key in unsupported):
        raise ValueError("showo_dir: this is a CLIP-ViT Show-o variant (mm_projector.*), which is not supported")
    if unsupported:
        raise ValueError(f"showo_dir: unexpected weight {unsupported[0]!r} (expected keys prefixed {SHOWO_PREFIX!r})")
    return {key[len(SHOWO_PREFIX) :]: value for key, value in state_dict.items()}


def load_dense_weights(model: UniF2aceForConditionalGeneration, phi_state: dict[str, torch.Tensor]) -> None:
    """Copy Phi weights into the model, strictly: every Phi weight must land, with the right shape, and every
    model weight that is not an MoE weight must come from the checkpoint."""
    own = model.state_dict()
    for key, value in phi_state.items():
        target_key = key
        if key not in own:
            if ".mlp." in key:
                continue  # dense FFN of an upcycled layer: consumed by upcycle_from_dense
            if key.endswith("rotary_emb.inv_freq"):
                continue
            raise ValueError(f"showo_dir: weight {SHOWO_PREFIX}{key} has no counterpart in the UniF²ace model")
        if own[target_key].shape != value.shape:
            raise ValueError(
                f"showo_dir: weight {SHOWO_PREFIX}{key} has shape {tuple(value.shape)}, but the config built from "
                f"--llm-config and Show-o's config.json expects {tuple(own[target_key].shape)}"
            )
    moe_markers = (".token_moe.", ".sequence_moe.")
    missing = [key for key in own if key not in phi_state and not any(m in key for m in moe_markers)]
    if missing:
        raise ValueError(
            f"showo_dir: the checkpoint has no weight for {SHOWO_PREFIX}{missing[0]} ({len(missing)} missing)"
        )
    model.load_state_dict({k: v for k, v in phi_state.items() if k in own}, strict=False)


def upcycle(model: UniF2aceForConditionalGeneration, phi_state: dict[str, torch.Tensor]) -> None:
    """Initialise both MoE levels of every layer from the dense FFN / as identity."""
    from .moe import UniF2aceMLP

    config = model.config
    for layer in model.model.layers:
        if hasattr(layer, "token_moe"):
            prefix = f"model.layers.{layer.layer_idx}.mlp."
            dense = UniF2aceMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
            dense.load_state_dict(
                {
                    name: phi_state[prefix + name].float()
                    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
                }
            )
            layer.token_moe.upcycle_from_dense(dense)
        if hasattr(layer, "sequence_moe"):
            layer.sequence_moe.init_as_identity()


def prepare_tokenizer(tokenizer_dir: str | os.PathLike, layout: UniF2aceConfig):
    """Phi's tokenizer with Show-o's special tokens added at Show-o's ids (checked, not assumed)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), padding_side="left")
    if len(tokenizer) != layout.text_vocab_size:
        raise ValueError(
            f"tokenizer_dir: the tokenizer has {len(tokenizer)} tokens but Show-o's layout expects "
            f"llm_vocab_size={layout.text_vocab_size}"
        )
    add_showo_special_tokens(tokenizer)
    return tokenizer


def convert_showo_checkpoint(
    showo_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    llm_config: str | os.PathLike | None = None,
    moe: str = "dense",
    tokenizer_dir: str | os.PathLike | None = None,
    num_routed_experts: int = 8,
    num_experts_per_tok: int = 4,
    moe_intermediate_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> UniF2aceForConditionalGeneration:
    """Convert a Show-o folder; save it to `output_dir` when given and return the model."""
    showo_config = load_showo_config(showo_dir)
    if showo_config.get("w_clip_vit"):
        raise ValueError("showo_dir: CLIP-ViT Show-o variants (w_clip_vit=true) are not supported")
    phi_config = load_llm_config(llm_config, showo_config)
    phi_state = strip_showo_prefix(load_showo_state_dict(showo_dir))
    if "model.embed_tokens.weight" not in phi_state:
        raise ValueError(f"showo_dir: no {SHOWO_PREFIX}model.embed_tokens.weight in the checkpoint")
    vocab_size = phi_state["model.embed_tokens.weight"].shape[0]
    if showo_config.get("vocab_size") not in (None, vocab_size):
        raise ValueError(
            f"showo_dir: config.json says vocab_size={showo_config['vocab_size']} but the embedding has {vocab_size} rows"
        )

    tokenizer = None
    bos = eos = None
    if tokenizer_dir is not None:
        provisional = showo_token_layout(showo_config, vocab_size)
        tokenizer = prepare_tokenizer(tokenizer_dir, UniF2aceConfig(**provisional))
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    config = build_config(
        showo_config,
        phi_config,
        vocab_size,
        moe,
        num_routed_experts,
        num_experts_per_tok,
        moe_intermediate_size,
        bos,
        eos,
    )
    torch.manual_seed(seed)
    model = UniF2aceForConditionalGeneration(config)
    load_dense_weights(model, phi_state)
    if moe == "upcycle":
        upcycle(model, phi_state)
    model.eval()
    if dtype is not None:
        model.to(dtype)
    if output_dir is not None:
        model.save_pretrained(output_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
    return model


__all__ = ["convert_showo_checkpoint", "build_config", "showo_token_layout", "load_showo_state_dict", "MOE_MODES"]
