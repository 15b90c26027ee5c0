"""MAGVIT-v2 checkpoint (the `showlab/magvitv2` layout used by Show-o) -> a `UniF2aceVQModel` folder.

The public folder holds a diffusers-style `config.json` without sizes (the original class takes no arguments) and
`pytorch_model.safetensors`. Our module names are the checkpoint's, so conversion is: read the weights, infer every
size from their shapes, check that the LFQ buffers encode bits most significant first, load strictly, save.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_unif2ace import UniF2aceVQConfig
from .image_tokenizer import UniF2aceVQModel, _codebook

MAGVIT_WEIGHT_FILES = (
    "pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
)
DEFAULT_IMAGE_SIZE = 256
"""Show-o's MAGVIT-v2 runs at 256×256 (and 512×512); the weights do not record it."""


def load_magvit_state_dict(src: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a MAGVIT-v2 folder (safetensors preferred; `.bin` only through `weights_only=True`)."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"`src`: {src} is not a folder.")
    for name in MAGVIT_WEIGHT_FILES:
        path = src / name
        if path.is_file():
            if path.suffix == ".safetensors":
                return load_file(str(path))
            state = torch.load(path, map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
    raise ValueError(f"`src`: {src} has none of {', '.join(MAGVIT_WEIGHT_FILES)}.")


def _levels(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Residual blocks per level under `prefix` (`encoder.down` or `decoder.up`), from the key names."""
    counts: dict[int, int] = {}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.block\.(\d+)\.conv1\.weight$")
    for key in state:
        match = pattern.match(key)
        if match:
            level, block = int(match[1]), int(match[2])
            counts[level] = max(counts.get(level, 0), block + 1)
    if not counts or sorted(counts) != list(range(len(counts))):
        raise ValueError(
            f"`src`: cannot read the levels of {prefix} from the checkpoint (found levels {sorted(counts)})."
        )
    return [counts[level] for level in range(len(counts))]


def infer_vq_config(state: dict[str, torch.Tensor], image_size: int = DEFAULT_IMAGE_SIZE) -> UniF2aceVQConfig:
    """Every size of the tokenizer, read from the weight shapes and key names."""
    for key in ("encoder.conv_in.weight", "encoder.quant_conv.weight", "decoder.conv_in.weight"):
        if key not in state:
            raise ValueError(f"`src`: the checkpoint has no {key!r}; is this a MAGVIT-v2 tokenizer?")
    base_channels, num_channels = state["encoder.conv_in.weight"].shape[:2]
    encoder_blocks, decoder_blocks = _levels(state, "encoder.down"), _levels(state, "decoder.up")

    def multipliers(prefix: str, count: int) -> list[int]:
        widths = [state[f"{prefix}.{level}.block.0.conv1.weight"].shape[0] for level in range(count)]
        if any(w % base_channels for w in widths):
            raise ValueError(f"`src`: {prefix} widths {widths} are not multiples of the base width {base_channels}.")
        return [w // base_channels for w in widths]

    attn_sides = set()
    for prefix in ("encoder.down", "decoder.up"):
        for key in state:
            match = re.match(rf"^{re.escape(prefix)}\.(\d+)\.attn\.", key)
            if match:
                attn_sides.add(image_size // 2 ** int(match[1]))
    return UniF2aceVQConfig(
        image_size=image_size,
        num_channels=int(num_channels),
        base_channels=int(base_channels),
        encoder_channel_multipliers=multipliers("encoder.down", len(encoder_blocks)),
        encoder_num_res_blocks=encoder_blocks,
        decoder_channel_multipliers=multipliers("decoder.up", len(decoder_blocks)),
        decoder_num_res_blocks=decoder_blocks,
        attn_resolutions=sorted(attn_sides),
        codebook_dim=int(state["encoder.quant_conv.weight"].shape[0]),
    )


def _check_lfq_buffers(state: dict[str, torch.Tensor], codebook_dim: int) -> None:
    """The stored codebook must be ours: row i = the bits of i, most significant first."""
    embedding, power_vals = _codebook(codebook_dim)
    for key, expected in (("quantize.embedding", embedding), ("quantize.power_vals", power_vals)):
        if key in state and not torch.equal(state[key].to(expected.dtype), expected):
            raise ValueError(
                f"`src`: {key!r} does not encode codes as sign bits read most significant first; the codes of this "
                "checkpoint would not match ours."
            )


def _image_size_from_config(src: Path) -> int | None:
    path = src / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    for key in ("image_size", "resolution"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def convert_magvit_checkpoint(
    src: str | Path,
    output_dir: str | Path | None = None,
    image_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> UniF2aceVQModel:
    """Convert the folder `src` and, if `output_dir` is given, save the model there (safetensors + config)."""
    src = Path(src)
    state = load_magvit_state_dict(src)
    image_size = image_size or _image_size_from_config(src) or DEFAULT_IMAGE_SIZE
    config = infer_vq_config(state, image_size=image_size)
    _check_lfq_buffers(state, config.codebook_dim)
    model = UniF2aceVQModel(config)
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise ValueError(f"`src`: unexpected weight {key!r} (not part of a MAGVIT-v2 tokenizer with these sizes).")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"`src`: weight {key!r} has shape {tuple(tensor.shape)}, the inferred config needs "
                f"{tuple(expected[key].shape)}."
            )
    missing = sorted(set(expected) - set(state) - {"quantize.embedding", "quantize.power_vals"})
    if missing:
        raise ValueError(f"`src`: the checkpoint has no weight for {missing[0]!r} ({len(missing)} missing).")
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    model = model.to(dtype).eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


__all__ = ["convert_magvit_checkpoint", "infer_vq_config", "load_magvit_state_dict", "MAGVIT_WEIGHT_FILES"]
