"""Shared fixtures: offline environment and tiny configurations built in-process (no downloads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import unif2ace_hf  # noqa: E402,F401  (registers the Auto classes)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
