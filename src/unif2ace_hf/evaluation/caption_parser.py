"""Read SynthFace attributes back out of a caption, to score generated captions against the exact labels.

SynthFace captions are built from fixed sentence shapes and a closed vocabulary (`data/synthface/captions.py`,
`phrases.py`), so a parser that knows both can say which (category, value) pairs a caption asserts. Words shared by
several categories ("short", "blue", "thin") are only read in their slot (before "hair", "eyes", "eyebrows", after
"looks", ...); distinctive phrases ("a pencil moustache") are read anywhere, longest first. On a reference caption
the parser recovers exactly the categories the caption mentions (tests/test_evaluation.py checks it on renders);
on a model's caption it asserts only what it can read, so malformed text lowers recall, not precision.
"""

from __future__ import annotations

import re

from ..data.synthface.phrases import _SYNONYMS

# Categories read from their own sentence slot; every other category is read by its distinctive phrases.
_SLOT_CATEGORIES = frozenset(
    {
        "hair_color",
        "hair_length",
        "hair_texture",
        "bald",
        "skin_tone",
        "face_shape",
        "eyebrow_shape",
        "eyebrow_thickness",
        "eye_color",
        "eyes",
        "emotion",
        "action",
        "background",
    }
)
_PHRASES = sorted(
    (
        (words.lower(), category, value)
        for (category, value), options in _SYNONYMS.items()
        for words in options
        if category not in _SLOT_CATEGORIES
    ),
    key=lambda item: -len(item[0]),
)
_NONE_STATEMENTS = {
    "a clean-shaven face": {"moustache": "none", "beard": "none", "stubble": "no"},
    "no accessories are visible": {
        "glasses": "none",
        "earrings": "none",
        "hat": "none",
        "necklace": "none",
        "face_mask": "none",
    },
    "they wear no glasses, hat or jewelry": {
        "glasses": "none",
        "earrings": "none",
        "hat": "none",
        "necklace": "none",
        "face_mask": "none",
    },
}
_ACTIONS = {
    "has the mouth open": "mouth open",
    "has an open mouth": "mouth open",
    **{
        f"is {words}": value
        for (category, value), options in _SYNONYMS.items()
        if category == "action"
        for words in options
    },
}


def _synonyms(category: str) -> list[tuple[str, str]]:
    """(phrase, value) pairs of one category, longest phrase first."""
    pairs = [
        (words.lower(), value) for (cat, value), options in _SYNONYMS.items() if cat == category for words in options
    ]
    return sorted(pairs, key=lambda item: -len(item[0]))


def _exact(category: str, text: str) -> str | None:
    text = text.strip(" ,.").lower()
    return next((value for words, value in _synonyms(category) if words == text), None)


def _strip_suffix(category: str, text: str) -> tuple[str | None, str]:
    """Match one of `category`'s phrases at the end of `text`; return (value, the rest)."""
    for words, value in _synonyms(category):
        if text == words or text.endswith(" " + words):
            return value, text[: len(text) - len(words)].strip()
    return None, text


def parse_caption(caption: str) -> dict[str, str]:
    """The (category -> value) pairs that `caption` asserts, in SynthFace's caption language."""
    text = " ".join(str(caption).lower().split())
    found: dict[str, str] = {}

    # Distinctive phrases, longest first; a matched span is blanked so that shorter phrases inside it do not count.
    rest = text
    for statement, values in _NONE_STATEMENTS.items():
        if statement in rest:
            found.update(values)
            rest = rest.replace(statement, " ")
    for words, category, value in _PHRASES:
        pattern = rf"(?<![\w-]){re.escape(words)}(?![\w-])"
        if re.search(pattern, rest):
            found.setdefault(category, value)
            rest = re.sub(pattern, " ", rest)

    # Skin and face shape, in the opening sentence's two shapes.
    if match := re.search(r"with ([\w\s,-]+?) skin and an? ([\w\s,-]+?) face", text):
        _set(found, "skin_tone", _exact("skin_tone", match.group(1)))
        _set(found, "face_shape", _exact("face_shape", match.group(2)))
    if match := re.search(r"whose face is ([\w\s,-]+?) and skin ([\w\s-]+?)(?:,|\.|$)", text):
        _set(found, "face_shape", _exact("face_shape", match.group(1)))
        _set(found, "skin_tone", _exact("skin_tone", match.group(2)))

    # Hair: bald with a fringe of coloured hair, or "has <length> <texture> <colour> hair".
    if match := re.search(r"(?:is|are) bald on top, with a fringe of short ([\w\s-]+?) hair", text):
        found["bald"] = "yes"
        _set(found, "hair_color", _exact("hair_color", match.group(1)))
    else:
        for match in re.finditer(r"(?=(?:has|have) ([\w\s-]+?) hair(?![\w-]))", text):
            words = match.group(1).strip()
            color, words = _strip_suffix("hair_color", words)
            texture, words = _strip_suffix("hair_texture", words)
            length = _exact("hair_length", words) if words else None
            if color is not None and (not words or length is not None):
                found["hair_color"] = color
                _set(found, "hair_texture", texture)
                _set(found, "hair_length", length)
                break

    # Eyebrows "<thickness> <shape> eyebrows"; eyes "<colour> eyes" or "closed eyes".
    for match in re.finditer(r"(?=(?:^|, | and | have | shows | are )([\w\s-]+?) eyebrows)", text):
        shape, words = _strip_suffix("eyebrow_shape", match.group(1).strip())
        thickness = _exact("eyebrow_thickness", words) if words else None
        if shape is not None and thickness is not None:
            found["eyebrow_shape"], found["eyebrow_thickness"] = shape, thickness
            break
    if re.search(r"(?:^|, | and | have | shows | are )closed eyes", text):
        found["eyes"] = "closed"
    else:
        for match in re.finditer(r"(?=(?:^|, | and | have | shows | are )([\w\s-]+?) eyes(?![\w-]))", text):
            color = _exact("eye_color", match.group(1))
            if color is not None:
                found["eye_color"], found["eyes"] = color, "open"
                break

    # Expression: "looks [rather] <emotion>[ and <action>]".
    if match := re.search(r"looks (?:rather )?([\w-]+)(?: and ([\w\s'-]+?))?\.", text):
        _set(found, "emotion", _exact("emotion", match.group(1)))
        if match.group(2):
            _set(found, "action", _ACTIONS.get(match.group(2).strip()))

    # Background: "set against a <colour> background" or "The backdrop is plain <colour>."
    if match := re.search(r"against an? ([\w\s-]+?) background", text):
        _set(found, "background", _exact("background", match.group(1)))
    elif match := re.search(r"backdrop is plain ([\w\s-]+?)\.", text):
        _set(found, "background", _exact("background", match.group(1)))
    return found


def _set(found: dict[str, str], category: str, value: str | None) -> None:
    if value is not None:
        found[category] = value


__all__ = ["parse_caption"]
