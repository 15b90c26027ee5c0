"""Face data for UniF²ace: SynthFace (procedural, exact labels) and UniF²ace-130K-style real data."""

from .features import face_features
from .synthface import TAXONOMY, build_synthface, render, sample_attributes, write_synthface
from .unif2ace_130k import ConversionReport, MalformedRowError, convert_unif2ace_130k, load_unif2ace_130k

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
