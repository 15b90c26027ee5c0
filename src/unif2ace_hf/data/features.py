"""The `datasets` features shared by SynthFace and converted UniF²ace-130K-style data."""

from __future__ import annotations

from datasets import Features, Image, List, Value


def face_features() -> Features:
    """`id`, `image`, `caption`, `qa` (list of question/answer) and `attributes` (one string per category).

    Real data usually has no exact labels: its attribute values are null.
    """
    from .synthface.taxonomy import CATEGORIES  # local: synthface's builder imports this module

    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "caption": Value("string"),
            "qa": List({"question": Value("string"), "answer": Value("string")}),
            "attributes": {category: Value("string") for category in CATEGORIES},
        }
    )
