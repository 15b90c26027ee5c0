"""The SynthFace attribute taxonomy: categories, values, the words used for them, and coherence rules.

The categories mirror the UniF²ace-130K sunburst (appearance: hair, beard, accessories, skin, others;
emotion; action) so that models trained on SynthFace are asked the same kind of fine-grained questions.
Every value is a plain string; the first value of a category is its "default" (usually "none").
"""

from __future__ import annotations

from collections.abc import Mapping

# category -> values. Order matters: the judge's output heads follow it.
TAXONOMY: dict[str, tuple[str, ...]] = {
    # hair
    "hair_color": ("black", "brown", "blond", "red", "gray", "white", "blue", "pink"),
    "hair_length": ("buzz cut", "short", "chin-length", "shoulder-length", "long"),
    "hair_texture": ("straight", "wavy", "curly", "coily"),
    "bangs": ("none", "blunt", "side-swept", "curtain"),
    "hairline": ("straight", "rounded", "widow's peak", "receding"),
    "bald": ("no", "yes"),
    # facial hair
    "moustache": ("none", "pencil", "chevron", "handlebar"),
    "beard": ("none", "goatee", "short", "full"),
    "stubble": ("no", "yes"),
    "sideburns": ("none", "short", "long"),
    # accessories
    "glasses": ("none", "round", "rectangular", "half-rim", "sunglasses"),
    "earrings": ("none", "studs", "hoops", "drops"),
    "hat": ("none", "beanie", "baseball cap", "top hat", "sun hat"),
    "necklace": ("none", "chain", "pearls", "pendant"),
    "face_mask": ("none", "surgical", "black cloth"),
    # skin
    "skin_tone": ("pale", "light", "tan", "brown", "dark"),
    "freckles": ("no", "yes"),
    "moles": ("none", "cheek", "above lip"),
    "wrinkles": ("none", "forehead", "crow's feet", "forehead and crow's feet"),
    "blush": ("no", "yes"),
    # face and features
    "face_shape": ("oval", "round", "square", "heart", "long"),
    "eyebrow_shape": ("straight", "arched", "rounded"),
    "eyebrow_thickness": ("thin", "medium", "thick"),
    "eye_color": ("brown", "blue", "green", "gray"),
    "eyes": ("open", "closed"),
    "nose": ("button", "straight", "wide", "hooked"),
    "lips": ("thin", "medium", "full"),
    "lipstick": ("none", "red", "pink", "plum"),
    # emotion, action, age, scene
    "emotion": ("neutral", "happy", "sad", "surprised", "angry"),
    "action": ("none", "smiling", "laughing", "mouth open", "glaring"),
    "age": ("child", "young adult", "middle-aged", "elderly"),
    "background": ("white", "gray", "blue", "green", "yellow", "purple"),
}

CATEGORIES: tuple[str, ...] = tuple(TAXONOMY)

# Which actions each emotion allows: the mouth is drawn by the action, the brows and eyes by the emotion,
# so incompatible pairs (a sad laugh) would give a face whose labels contradict what it shows.
EMOTION_ACTIONS: dict[str, tuple[str, ...]] = {
    "neutral": ("none", "mouth open", "glaring"),
    "happy": ("smiling", "laughing"),
    "sad": ("none",),
    "surprised": ("none", "mouth open"),
    "angry": ("none", "glaring", "mouth open"),
}

# The part of the taxonomy tree (UniF²ace-130K sunburst) each category belongs to; used by the card.
GROUPS: dict[str, str] = {
    **dict.fromkeys(("hair_color", "hair_length", "hair_texture", "bangs", "hairline", "bald"), "appearance / hair"),
    **dict.fromkeys(("moustache", "beard", "stubble", "sideburns"), "appearance / beard"),
    **dict.fromkeys(("glasses", "earrings", "hat", "necklace", "face_mask"), "appearance / accessories"),
    **dict.fromkeys(("skin_tone", "freckles", "moles", "wrinkles", "blush"), "appearance / skin"),
    **dict.fromkeys(
        ("face_shape", "eyebrow_shape", "eyebrow_thickness", "eye_color", "eyes", "nose", "lips", "lipstick"),
        "appearance / others",
    ),
    "emotion": "emotion",
    "action": "action",
    "age": "appearance / others",
    "background": "scene",
}

_MOUTH_ACTIONS = ("smiling", "laughing", "mouth open")


def validate_attributes(attributes: Mapping[str, str], argument: str = "attributes") -> None:
    """Raise a `ValueError` naming the category when `attributes` is not a full, valid SynthFace label set."""
    if not isinstance(attributes, Mapping):
        raise TypeError(f"`{argument}` must be a mapping of category -> value, got {type(attributes).__name__}.")
    missing = [c for c in CATEGORIES if c not in attributes]
    if missing:
        raise ValueError(f"`{argument}` is missing categories: {', '.join(missing)}.")
    unknown = [c for c in attributes if c not in TAXONOMY]
    if unknown:
        raise ValueError(f"`{argument}` has unknown categories: {', '.join(map(str, unknown))}.")
    for category, values in TAXONOMY.items():
        if attributes[category] not in values:
            raise ValueError(
                f"`{argument}[{category!r}]` is {attributes[category]!r}; expected one of {', '.join(values)}."
            )


def make_coherent(attributes: Mapping[str, str]) -> dict[str, str]:
    """Return a copy where every attribute is visible and consistent with the others.

    The renderer draws any combination, but a label must describe what the image shows: bangs hide the
    hairline, a mask hides the mouth, a bald head has no bangs. Each rule maps the hidden or contradictory
    attribute to the value the image actually shows, so labels stay exact and the judge can learn them.
    """
    a = dict(attributes)
    if a["age"] == "child":
        a.update(moustache="none", beard="none", stubble="no", sideburns="none", bald="no", lipstick="none")
        a["wrinkles"] = "none"
    if a["bald"] == "yes":
        # A bald crown with a fringe of short hair at the sides; no hat, which would hide the crown.
        a.update(hair_length="short", hair_texture="straight", bangs="none", hairline="receding", hat="none")
    if a["hair_length"] == "buzz cut":
        a.update(hair_texture="straight", bangs="none")
    if a["bangs"] != "none":
        a["hairline"] = "straight"  # hidden under the fringe
        a["wrinkles"] = {"forehead": "none", "forehead and crow's feet": "crow's feet"}.get(
            a["wrinkles"], a["wrinkles"]
        )
    if a["beard"] in ("short", "full"):
        a["stubble"] = "no"  # covered by the beard
        if a["moles"] == "above lip":
            a["moles"] = "none"
    if a["skin_tone"] in ("brown", "dark"):
        a["freckles"] = "no"
    if a["face_mask"] != "none":
        # The mask covers nose, mouth, lower cheeks and chin.
        a.update(moustache="none", beard="none", stubble="no", lipstick="none", lips="medium", nose="straight")
        a["blush"] = "no"
        if a["moles"] == "above lip":
            a["moles"] = "none"
        if a["emotion"] == "happy":
            a["emotion"] = "neutral"
        if a["action"] in _MOUTH_ACTIONS:
            a["action"] = "none"
    if a["action"] not in EMOTION_ACTIONS[a["emotion"]]:
        a["action"] = EMOTION_ACTIONS[a["emotion"]][0]
    if a["emotion"] == "surprised" or a["action"] == "glaring":
        a["eyes"] = "open"  # both are shown by the eyes
    return a


def hidden_categories(attributes: Mapping[str, str]) -> frozenset[str]:
    """Categories whose value is not seen in the render but fixed by a coherence rule or simply covered.

    Captions and questions never mention them; the judge still predicts them (the rules make most of them
    predictable from what is visible: bangs imply a "straight" hairline label, a mask a "none" beard label).
    """
    a = attributes
    hidden = set()
    if a["eyes"] == "closed" or a["glasses"] == "sunglasses":
        hidden.add("eye_color")
    if a["glasses"] == "sunglasses":
        hidden.add("eyes")
    if a["bangs"] != "none" or a["bald"] == "yes":
        hidden.add("hairline")
    if a["bald"] == "yes":
        hidden.update(("hair_length", "hair_texture"))
    if a["hair_length"] == "buzz cut":
        hidden.add("hair_texture")
    if a["beard"] in ("short", "full"):
        hidden.update(("stubble", "moles"))
    if a["face_mask"] != "none":
        hidden.update(("moustache", "beard", "stubble", "lipstick", "lips", "nose", "blush", "moles", "action"))
    return frozenset(hidden)


def default_attributes() -> dict[str, str]:
    """A plain, fully visible face: the base that tests and examples change one category at a time."""
    base = {category: values[0] for category, values in TAXONOMY.items()}
    base.update(hair_length="short", age="young adult", background="gray")
    return base


def num_values() -> int:
    """Total number of values over all categories."""
    return sum(len(v) for v in TAXONOMY.values())
