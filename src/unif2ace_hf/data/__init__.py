"""Face data for UniF²ace: SynthFace (procedural, exact labels) and UniF²ace-130K-style real data.

Names that need `datasets` are imported on first use, so the renderer, sampler and taxonomy work where `datasets`
is not installed (the GPU machines that train tokenizers).
"""

import importlib

from .synthface import TAXONOMY, render, sample_attributes

_NEEDS_DATASETS = {
    "face_features": ".features",
    "build_synthface": ".synthface",
    "write_synthface": ".synthface",
    "ConversionReport": ".unif2ace_130k",
    "MalformedRowError": ".unif2ace_130k",
    "convert_unif2ace_130k": ".unif2ace_130k",
    "load_unif2ace_130k": ".unif2ace_130k",
}


def __getattr__(name: str):
    if name in _NEEDS_DATASETS:
        value = getattr(importlib.import_module(_NEEDS_DATASETS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConversionReport",
    "MalformedRowError",
    "TAXONOMY",
    "build_synthface",
    "convert_unif2ace_130k",
    "face_features",
    "load_unif2ace_130k",
    "render",
    "sample_attributes",
    "write_synthface",
]
