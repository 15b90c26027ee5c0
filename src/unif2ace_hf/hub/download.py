"""Turn `from_pretrained`'s first argument into a local folder: a folder as is, a Hub repo id via the cache.

Why here: diffusers cannot load a pipeline whose components live in an installed package straight from a Hub id
(hf-stack-notes §3), so our pipeline downloads the repo itself, with the usual Hub arguments, and checks the
downloaded bytes before anything is loaded from them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .integrity import verify_snapshot

HUB_DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")
"""`from_pretrained` keyword arguments that select or fetch the snapshot rather than configure the model."""


def resolve_pretrained_folder(name_or_path: str | os.PathLike, argument: str, hub_kwargs: dict[str, Any]) -> Path:
    """A local folder, or the verified cache snapshot of the Hub repo `name_or_path` (at `revision`, if given)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError(f"{argument}: expected a folder or a Hub repo id, got {name_or_path!r}")
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{argument}: {str(path)!r} is a file; give the folder that holds the checkpoint")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    unknown = sorted(set(hub_kwargs) - set(HUB_DOWNLOAD_KWARGS))
    if unknown:
        raise ValueError(f"hub arguments: unknown {unknown}; known are {list(HUB_DOWNLOAD_KWARGS)}")
    try:
        snapshot = Path(snapshot_download(str(name_or_path), **hub_kwargs))
    except HFValidationError as error:
        raise ValueError(
            f"{argument}: {str(name_or_path)!r} is neither an existing folder nor a valid Hub repo id ({error})"
        ) from None
    verify_snapshot(snapshot)
    return snapshot


__all__ = ["HUB_DOWNLOAD_KWARGS", "resolve_pretrained_folder"]
