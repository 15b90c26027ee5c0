"""SynthFace: a procedural face data set with exact fine-grained labels (the embedded stand-in for UniF²ace-130K).

The builder (which writes `datasets` folders) is imported on first use, so rendering, sampling, captions and QA
work where `datasets` is not installed.
"""

import importlib

from .captions import make_caption
from .qa import QAPair, make_qa
from .render import render
from .sampler import NOVEL_PAIRS, novel_pairs_in, sample_attributes
from .taxonomy import (
    CATEGORIES,
    TAXONOMY,
    default_attributes,
    hidden_categories,
    make_coherent,
    num_values,
    validate_attributes,
)

__all__ = [
    "CATEGORIES",
    "NOVEL_PAIRS",
    "QAPair",
    "TAXONOMY",
    "build_synthface",
    "default_attributes",
    "generate_rows",
    "hidden_categories",
    "make_caption",
    "make_coherent",
    "make_qa",
    "make_row",
    "novel_pairs_in",
    "num_values",
    "render",
    "sample_attributes",
    "split_sizes",
    "validate_attributes",
    "write_synthface",
]


_BUILDER_NAMES = {"build_synthface", "generate_rows", "make_row", "split_sizes", "write_synthface"}


def __getattr__(name: str):
    if name in _BUILDER_NAMES:
        value = getattr(importlib.import_module(".builder", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
