"""Push a saved checkpoint folder to the Hub in one commit.

Why our own: diffusers' and transformers' `push_to_hub` both write their library's generic README over the
folder's, so a pipeline that writes its own model card (and, here, one folder for several loaders) saves into a
temporary folder and uploads exactly that.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi


def push_saved_folder(
    save: Callable[[Path], None],
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    revision: str | None = None,
) -> CommitInfo:
    """Create `repo_id` if needed, call `save(folder)` on a temporary folder and upload it as one commit."""
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id: expected a Hub repo id such as 'user/name', got {repo_id!r}")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        save(Path(folder))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            create_pr=create_pr,
            revision=revision,
        )


__all__ = ["push_saved_folder"]
