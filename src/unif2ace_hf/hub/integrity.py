"""Check that the files of a downloaded Hub snapshot are the bytes the Hub announced.

Why: over plain HTTP, huggingface_hub 2.4 checks only a file's size. A download with the right size but wrong
bytes (a broken proxy or disk) would load as a silently broken model, because safetensors has no checksum. The
cache names every blob by its ETag, which is the file's sha256 for LFS files and its git blob id otherwise, so the
content can be checked against it without any network call.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


class CorruptedDownloadError(OSError):
    """A cached Hub file whose bytes do not match the hash the Hub gave for it."""


def _digest(path: Path, git_blob: bool) -> str:
    digest = hashlib.sha1() if git_blob else hashlib.sha256()
    if git_blob:
        digest.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_blob(blob: Path, shown_as: str) -> bool:
    """Hash one cache blob against its name (its ETag); False when the name is not a hash (nothing to check)."""
    expected = blob.name
    if _SHA256.match(expected):
        actual = _digest(blob, git_blob=False)
    elif _GIT_SHA1.match(expected):
        actual = _digest(blob, git_blob=True)
    else:
        return False
    if actual != expected:
        raise CorruptedDownloadError(
            f"{shown_as}: the downloaded file is corrupted (its hash is {actual}, the Hub announced {expected}). "
            f"Nothing was loaded. Download it again with force_download=True, or delete {blob}."
        )
    return True


def verify_snapshot(snapshot_dir: str | os.PathLike) -> int:
    """Hash every file of a huggingface_hub cache snapshot against its blob name; return how many were checked.

    Files that are not links into the cache's `blobs/` (a plain local folder, or a cache without symlinks) carry no
    expected hash and are skipped. Raises `CorruptedDownloadError` naming the file and how to recover.
    """
    snapshot_dir = Path(snapshot_dir)
    checked = 0
    for path in sorted(snapshot_dir.rglob("*")):
        if not path.is_symlink() or not path.is_file():
            continue
        blob = Path(os.path.realpath(path))
        if blob.parent.name == "blobs":
            checked += _check_blob(blob, path.relative_to(snapshot_dir).as_posix())
    return checked


def verify_cached_repo(repo_id: str, cache_dir: str | os.PathLike | None = None, repo_type: str = "model") -> int:
    """Hash every downloaded blob of `repo_id` in the huggingface_hub cache (all revisions); return how many.

    For loaders that do not say which snapshot they used (transformers' `pipeline()`); a repo that is not in the
    cache (a local folder, another `cache_dir`) has nothing to check.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    blobs = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type) / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(_check_blob(blob, f"{repo_id} (blob {blob.name})") for blob in sorted(blobs.iterdir()) if blob.is_file())


__all__ = ["CorruptedDownloadError", "verify_cached_repo", "verify_snapshot"]
