"""Strict `from_pretrained` for our model classes: a checkpoint either fills the model exactly or loading fails with
a message naming the file or the weight.

transformers only warns (and initialises at random) when weights are missing, drops weights the config has no room
for, reports a truncated safetensors file without naming it, and falls back to pickle-based `.bin` files. For a
model that must reproduce what was trained, each of these is an error here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError


def _local_folder(source: Any, subfolder: str | None) -> Path | None:
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_dir():
        return None
    return Path(source) / subfolder if subfolder else Path(source)


def strict_from_pretrained(load: Callable[..., Any], source: Any, *args: Any, **kwargs: Any) -> Any:
    """Call transformers' `from_pretrained` (`load`) with safetensors only, then check a Hub download's bytes."""
    kwargs.setdefault("use_safetensors", True)
    folder = _local_folder(source, kwargs.get("subfolder"))
    needs_config = (
        folder is not None and kwargs.get("config") is None and not (folder / "adapter_config.json").is_file()
    )
    if needs_config and not (folder / "config.json").is_file():
        raise OSError(f"{source}: the folder has no config.json; a model folder needs it next to model.safetensors.")
    try:
        model = load(source, *args, **kwargs)
    except SafetensorError as error:
        raise OSError(
            f"{source}: a weights file is not a complete safetensors file (truncated or damaged?): {error}. "
            "Nothing was loaded; save or download it again."
        ) from error
    if folder is None and isinstance(source, str):  # loaded by Hub repo id: compare the cached bytes with the ETags
        try:
            from unif2ace_hf.hub.integrity import verify_cached_repo
        except ImportError:  # remote code without the package installed: huggingface_hub's size check only
            return model
        verify_cached_repo(source, cache_dir=kwargs.get("cache_dir"))
    return model


def check_loading_report(model: Any, load_config: Any, loading_info: Any, finish: Callable[..., Any]) -> Any:
    """Turn transformers' loading report into errors: mis-shaped, missing, or (for a checkpoint saved from this very
    class) unexpected weights. `finish` is transformers' own `_finalize_model_loading`."""
    source = load_config.pretrained_model_name_or_path
    if loading_info.mismatched_keys and not load_config.ignore_mismatched_sizes:
        key, checkpoint_shape, model_shape = sorted(loading_info.mismatched_keys)[0]
        raise ValueError(
            f"{source}: weight {key!r} has shape {tuple(checkpoint_shape)} in the checkpoint but the config asks for "
            f"{tuple(model_shape)} ({len(loading_info.mismatched_keys)} mismatched weight(s)); the config does not "
            "match the weights."
        )
    loading_info = finish(model, load_config, loading_info)
    if loading_info.missing_keys:
        missing = sorted(loading_info.missing_keys)
        raise ValueError(
            f"{source}: the checkpoint has no weight for {missing[0]!r} ({len(missing)} missing: "
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); refusing to leave layers randomly "
            "initialised. Is the config right for these weights?"
        )
    saved_by_this_class = type(model).__name__ in (getattr(model.config, "architectures", None) or [])
    if loading_info.unexpected_keys and saved_by_this_class and getattr(load_config, "hf_quantizer", None) is None:
        unexpected = sorted(loading_info.unexpected_keys)
        raise ValueError(
            f"{source}: the checkpoint has weights the config has no place for, e.g. {unexpected[0]!r} "
            f"({len(unexpected)} unexpected); the config does not match the weights."
        )
    return loading_info


__all__ = ["check_loading_report", "strict_from_pretrained"]
