"""Natural-language captions for SynthFace attribute sets: several templates, synonyms and a random order."""

from __future__ import annotations

import random
from collections.abc import Mapping

from .phrases import join, phrase
from .taxonomy import hidden_categories

_OPENINGS = (
    "A portrait of {subject}",
    "A close-up headshot of {subject}",
    "This image shows {subject}",
    "An illustrated face of {subject}",
    "A front-facing picture of {subject}",
)


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def make_caption(attributes: Mapping[str, str], rng: random.Random) -> tuple[str, list[str]]:
    """Describe the visible attributes in a few sentences; return the caption and the categories it mentions.

    Hidden categories (`hidden_categories`) are never mentioned, so a caption never states what the image
    cannot show.
    """
    a, hidden = attributes, hidden_categories(attributes)
    said: list[str] = []

    def use(category: str) -> bool:
        if category in hidden:
            return False
        said.append(category)
        return True

    def p(category: str) -> str:
        return phrase(category, a[category], rng)

    use("age")
    use("skin_tone")
    use("face_shape")
    first = rng.choice(_OPENINGS).format(subject=p("age"))
    first += rng.choice(
        (
            f" with {p('skin_tone')} skin and {_article(p('face_shape'))} face",
            f", whose face is {p('face_shape')} and skin {p('skin_tone')}",
        )
    )
    sentences: list[str] = []

    # Hair.
    hair = []
    if a["bald"] == "yes":
        use("bald")
        use("hair_color")
        hair.append(f"{{is}} bald on top, with a fringe of short {p('hair_color')} hair at the sides")
    else:
        parts = [p("hair_length")] if use("hair_length") else []
        if use("hair_texture"):
            parts.append(p("hair_texture"))
        use("hair_color")
        parts.append(p("hair_color"))
        hair.append(f"{{has}} {' '.join(parts)} hair")
        extras = []
        if a["bangs"] != "none" and use("bangs"):
            extras.append(p("bangs"))
        if use("hairline"):
            extras.append(p("hairline"))
        if extras:
            hair[-1] += rng.choice((" with ", ", worn with ")) + join(extras)
    subject, verbs = rng.choice((("The person", {"is": "is", "has": "has"}), ("They", {"is": "are", "has": "have"})))
    sentences.append(f"{subject} " + hair[0].format(**verbs) + ".")

    # Facial features.
    features = []
    if use("eyebrow_shape") and use("eyebrow_thickness"):
        features.append(f"{p('eyebrow_thickness')} {p('eyebrow_shape')} eyebrows")
    if a["eyes"] == "closed" and use("eyes"):
        features.append("closed eyes")
    elif use("eye_color"):
        use("eyes")
        features.append(f"{p('eye_color')} eyes")
    if use("nose"):
        features.append(p("nose"))
    if use("lips"):
        lips = p("lips")
        if a["lipstick"] != "none" and use("lipstick"):
            lips += f" wearing {p('lipstick')}"
        features.append(lips)
    rng.shuffle(features)
    if features:
        sentences.append(
            rng.choice(("They have ", "Their face shows ", "Notable features are ")) + join(features) + "."
        )

    # Facial hair and skin details.
    details = []
    for category in ("moustache", "beard", "stubble", "sideburns", "freckles", "moles", "wrinkles", "blush"):
        if a[category] not in ("none", "no") and use(category):
            details.append(p(category))
    if (
        a["age"] != "child"
        and all(a[c] in ("none", "no") for c in ("moustache", "beard", "stubble"))
        and a["face_mask"] == "none"
    ):
        if rng.random() < 0.5:
            said.extend(("moustache", "beard", "stubble"))
            details.append("a clean-shaven face")
    if details:
        rng.shuffle(details)
        sentences.append(
            rng.choice(("You can also see ", "Other details include ", "The face has ")) + join(details) + "."
        )

    # Accessories.
    worn = []
    for category in ("glasses", "earrings", "hat", "necklace", "face_mask"):
        if a[category] != "none" and use(category):
            worn.append(p(category))
    if worn:
        rng.shuffle(worn)
        sentences.append(
            rng.choice(("They are wearing ", "Accessories include ", "The person wears ")) + join(worn) + "."
        )
    elif rng.random() < 0.7:
        said.extend(("glasses", "earrings", "hat", "necklace", "face_mask"))
        sentences.append(rng.choice(("No accessories are visible.", "They wear no glasses, hat or jewelry.")))

    # Expression.
    use("emotion")
    mood = f"look{'s' if rng.random() < 0.5 else 's rather'} {p('emotion')}"
    if a["action"] != "none" and use("action"):
        act = (
            rng.choice(("has the mouth open", "has an open mouth"))
            if a["action"] == "mouth open"
            else f"is {p('action')}"
        )
        sentences.append(f"The person {mood} and {act}.")
    else:
        sentences.append(f"The person {mood}.")

    rng.shuffle(sentences)
    use("background")
    background = p("background")
    if rng.random() < 0.5:
        first += f", set against a {background} background."
        text = " ".join([first] + sentences)
    else:
        text = " ".join([first + "."] + sentences + [f"The backdrop is plain {background}."])
    return text, list(dict.fromkeys(said))
