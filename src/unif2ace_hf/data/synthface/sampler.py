"""Sampling coherent SynthFace attribute sets, and the held-out value pairs that define the `novel` split."""

from __future__ import annotations

import random
from collections.abc import Mapping

from .taxonomy import EMOTION_ACTIONS, TAXONOMY, make_coherent

# Sampling weights (same order as TAXONOMY values); categories not listed are uniform. Rare values are the ones
# that hide other attributes (masks, sunglasses, closed eyes), so that most labels stay visible.
WEIGHTS: dict[str, tuple[float, ...]] = {
    "hair_color": (0.2, 0.18, 0.15, 0.1, 0.1, 0.07, 0.1, 0.1),
    "hair_length": (0.08, 0.3, 0.2, 0.2, 0.22),
    "hair_texture": (0.4, 0.25, 0.2, 0.15),
    "bangs": (0.55, 0.15, 0.15, 0.15),
    "bald": (0.9, 0.1),
    "moustache": (0.7, 0.1, 0.1, 0.1),
    "beard": (0.64, 0.12, 0.12, 0.12),
    "stubble": (0.8, 0.2),
    "sideburns": (0.6, 0.2, 0.2),
    "glasses": (0.53, 0.145, 0.145, 0.14, 0.04),
    "earrings": (0.55, 0.15, 0.15, 0.15),
    "hat": (0.6, 0.1, 0.1, 0.1, 0.1),
    "necklace": (0.55, 0.15, 0.15, 0.15),
    "face_mask": (0.9, 0.05, 0.05),
    "freckles": (0.75, 0.25),
    "moles": (0.6, 0.2, 0.2),
    "wrinkles": (0.55, 0.15, 0.15, 0.15),
    "blush": (0.75, 0.25),
    "eyes": (0.91, 0.09),
    "lipstick": (0.55, 0.15, 0.15, 0.15),
    "emotion": (0.3, 0.3, 0.12, 0.14, 0.14),
    "age": (0.15, 0.4, 0.25, 0.2),
}

# The `novel` split: every row shows at least one of these value pairs, and no train/validation/test row shows
# any. Each single value still appears in training; only the combination is new (compositional generalisation).
NOVEL_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("hair_color", "blue"), ("beard", "full")),
    (("glasses", "round"), ("hat", "top hat")),
    (("lipstick", "red"), ("moustache", "handlebar")),
    (("hair_texture", "curly"), ("hair_color", "pink")),
    (("face_shape", "square"), ("earrings", "hoops")),
    (("emotion", "surprised"), ("glasses", "rectangular")),
    (("background", "yellow"), ("hat", "beanie")),
    (("skin_tone", "dark"), ("hair_color", "blond")),
)


def novel_pairs_in(attributes: Mapping[str, str]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The held-out pairs present in `attributes`."""
    return [pair for pair in NOVEL_PAIRS if all(attributes[c] == v for c, v in pair)]


def _draw(rng: random.Random) -> dict[str, str]:
    attributes = {}
    for category, values in TAXONOMY.items():
        weights = WEIGHTS.get(category)
        attributes[category] = rng.choices(values, weights=weights)[0] if weights else rng.choice(values)
    # The action is drawn among those the emotion allows (otherwise coherence would skew it to the first one).
    attributes["action"] = rng.choice(EMOTION_ACTIONS[attributes["emotion"]])
    return attributes


def sample_attributes(rng: random.Random, novel: bool = False, max_tries: int = 1000) -> dict[str, str]:
    """Sample one coherent attribute set.

    With `novel=False` the set contains none of `NOVEL_PAIRS` (train/validation/test); with `novel=True` it
    contains at least one (one pair is forced, the rest sampled, and the set kept only if coherence left the
    pair intact).
    """
    for _ in range(max_tries):
        attributes = _draw(rng)
        if novel:
            pair = rng.choice(NOVEL_PAIRS)
            for category, value in pair:
                attributes[category] = value
            if attributes["emotion"] == "surprised" and attributes["action"] not in EMOTION_ACTIONS["surprised"]:
                attributes["action"] = rng.choice(EMOTION_ACTIONS["surprised"])
        attributes = make_coherent(attributes)
        if bool(novel_pairs_in(attributes)) == novel:
            return attributes
    raise RuntimeError(f"Could not sample a coherent attribute set (novel={novel}) in {max_tries} tries.")
