"""The Hub side of unif2ace_hf: model cards, pushing saved folders, and resolving and checking downloads."""

from .download import resolve_pretrained_folder
from .integrity import CorruptedDownloadError, verify_cached_repo, verify_snapshot
from .model_card import check_eval_results, load_eval_files, model_card_from_eval, write_model_card
from .push import push_saved_folder

__all__ = [
    "CorruptedDownloadError",
    "check_eval_results",
    "load_eval_files",
    "model_card_from_eval",
    "push_saved_folder",
    "resolve_pretrained_folder",
    "verify_cached_repo",
    "verify_snapshot",
    "write_model_card",
]
