"""Visual question-answer pairs for SynthFace: open questions, yes/no questions and short reasoning questions.

Every answer is computed from the attribute set, and only visible categories are asked about. Each pair
keeps the category and kind it came from (`QAPair`), so tests can re-derive the answer independently.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .phrases import phrase
from .taxonomy import TAXONOMY, hidden_categories

# Open questions: category -> question templates; the answer is the canonical phrase of the value.
OPEN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "hair_color": ("What color is the person's hair?", "What is the hair color?"),
    "hair_length": ("How long is the person's hair?",),
    "hair_texture": ("What is the texture of the person's hair?", "Is the hair straight, wavy, curly or coily?"),
    "bangs": ("What kind of bangs does the person have?",),
    "hairline": ("What shape is the person's hairline?",),
    "skin_tone": ("What is the person's skin tone?",),
    "face_shape": ("What shape is the person's face?", "How would you describe the face shape?"),
    "eyebrow_shape": ("What shape are the eyebrows?",),
    "eyebrow_thickness": ("How thick are the eyebrows?",),
    "eye_color": ("What color are the person's eyes?",),
    "nose": ("What kind of nose does the person have?",),
    "lips": ("How full are the person's lips?",),
    "emotion": ("What emotion does the person show?", "How does the person feel?"),
    "age": ("About how old does the person look?", "What age group does the person belong to?"),
    "background": ("What color is the background?",),
    "glasses": ("What kind of glasses is the person wearing?",),
    "hat": ("What is the person wearing on their head?",),
    "earrings": ("What kind of earrings does the person wear?",),
    "necklace": ("What kind of necklace is the person wearing?",),
    "beard": ("What kind of beard does the person have?",),
    "moustache": ("What style is the moustache?",),
}
# For categories with a "none" value, an open question is only asked when the value is present.
_NEEDS_PRESENT = {"bangs", "glasses", "hat", "earrings", "necklace", "beard", "moustache"}

# Yes/no presence questions: category -> question; "yes" iff the value is not the category's default.
PRESENCE_QUESTIONS: dict[str, str] = {
    "glasses": "Is the person wearing glasses?",
    "hat": "Is the person wearing a hat?",
    "earrings": "Does the person wear earrings?",
    "necklace": "Is the person wearing a necklace?",
    "face_mask": "Is the person wearing a face mask?",
    "beard": "Does the person have a beard?",
    "moustache": "Does the person have a moustache?",
    "stubble": "Does the person have stubble?",
    "sideburns": "Does the person have sideburns?",
    "freckles": "Does the person have freckles?",
    "moles": "Are there any moles on the face?",
    "wrinkles": "Are there wrinkles on the face?",
    "blush": "Are the person's cheeks rosy?",
    "bangs": "Does the person have bangs?",
    "bald": "Is the person bald?",
    "lipstick": "Is the person wearing lipstick?",
}

# Yes/no value questions: "Does the person have {value} {noun}?" for a value that may or may not be right.
VALUE_QUESTIONS: dict[str, str] = {
    "hair_color": "Is the person's hair {value}?",
    "hair_texture": "Is the person's hair {value}?",
    "eye_color": "Are the person's eyes {value}?",
    "face_shape": "Is the person's face {value}?",
    "eyebrow_shape": "Are the eyebrows {value}?",
    "skin_tone": "Is the person's skin tone {value}?",
    "background": "Is the background {value}?",
}


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    category: str
    kind: str  # "open", "presence", "value", "reasoning"
    value: str | None = None  # the value asked about (kind "value")


NUM_YES_NO_QUESTIONS = 3
"""Yes/no questions per face by default; evaluation draws its questions with this count and the natural mix."""


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _value_question(category: str, template: str, asked: str, a: Mapping[str, str]) -> QAPair:
    words = phrase(category, asked)
    return QAPair(template.format(value=words), _yes(asked == a[category]), category, "value", asked)


def _presence_questions(a: Mapping[str, str], hidden: frozenset[str]) -> list[QAPair]:
    return [
        QAPair(question, _yes(a[category] not in ("none", "no")), category, "presence")
        for category, question in PRESENCE_QUESTIONS.items()
        if category not in hidden
    ]


def _balanced_yes_no(
    a: Mapping[str, str], hidden: frozenset[str], rng: random.Random, count: int, with_values: bool = True
) -> list[QAPair]:
    """`count` yes/no questions, half answered "yes" and half "no" (a coin decides the odd one)."""
    pools: dict[str, list[QAPair]] = {"yes": [], "no": []}
    for pair in _presence_questions(a, hidden):
        pools[pair.answer].append(pair)
    for category, template in VALUE_QUESTIONS.items():
        if category in hidden or not with_values:
            continue
        pools["yes"].append(_value_question(category, template, a[category], a))
        false_values = [v for v in TAXONOMY[category] if v != a[category]]
        pools["no"].append(_value_question(category, template, rng.choice(false_values), a))
    num_yes = min(count // 2 + (count % 2 and rng.random() < 0.5), len(pools["yes"]))
    num_no = min(count - num_yes, len(pools["no"]))
    num_yes = min(count - num_no, len(pools["yes"]))  # a short "no" pool leaves its share to "yes"
    drawn = rng.sample(pools["yes"], num_yes) + rng.sample(pools["no"], num_no)
    rng.shuffle(drawn)
    return drawn


YES_NO_BALANCES = (False, True, "pooled", "per-question")
"""`balanced_yes_no` values: the natural mix (False), the pooled balance (True or "pooled"), or "per-question"."""


def check_balance(balanced_yes_no: bool | str) -> None:
    if balanced_yes_no not in YES_NO_BALANCES:
        raise ValueError(f"`balanced_yes_no` must be False, True, 'pooled' or 'per-question', got {balanced_yes_no!r}.")


PRESENCE_BASE_RATES: dict[str, float] = {
    "glasses": 0.448,
    "hat": 0.346,
    "earrings": 0.431,
    "necklace": 0.452,
    "face_mask": 0.102,
    "beard": 0.291,
    "moustache": 0.240,
    "stubble": 0.161,
    "sideburns": 0.345,
    "freckles": 0.154,
    "moles": 0.394,
    "wrinkles": 0.336,
    "blush": 0.250,
    "bangs": 0.377,
    "bald": 0.088,
    "lipstick": 0.371,
}
"""Share of SynthFace faces on which each presence category is present, among those where it is visible (20 000
faces of the sampler; a test re-estimates them). The per-question balance needs them to thin out the common answer."""


def _per_question_presence(
    a: Mapping[str, str], hidden: frozenset[str], rng: random.Random, count: int, max_tries: int = 64
) -> list[QAPair]:
    """Up to `count` presence questions (`max_tries` proposals), each answered "yes" on half of the faces it is asked
    about.

    The pooled balance (`_balanced_yes_no`) makes the whole yes/no mix half "yes", but a question about a common
    feature is then mostly answered "yes" and one about a rare feature mostly "no" (0.19 to 0.68 over the training
    faces), so the question alone predicts the answer and a model can skip the image. Here a category is proposed
    uniformly and kept with probability `min(p, 1 - p) / P(this face's answer)`, `p` its base rate: over many faces
    each question's answers are half "yes", and only the image tells which.
    """
    candidates = {pair.category: pair for pair in _presence_questions(a, hidden)}
    drawn: list[QAPair] = []
    for _ in range(max_tries):
        if len(drawn) == count or not candidates:
            break
        category = rng.choice(sorted(candidates))
        rate = PRESENCE_BASE_RATES[category]
        answer_rate = rate if candidates[category].answer == "yes" else 1 - rate
        if rng.random() < min(rate, 1 - rate) / answer_rate:
            drawn.append(candidates.pop(category))
    return drawn


def _value_pairs(a: Mapping[str, str], hidden: frozenset[str], rng: random.Random, count: int) -> list[QAPair]:
    """`count` value categories, each asked twice: with the true value ("yes") and with a false one ("no").

    A model that only ever sees one of the two learns to say "yes" to any value it is offered; asking the same
    category both ways makes the answer depend on comparing the offered value with the image.
    """
    categories = [c for c in VALUE_QUESTIONS if c not in hidden]
    pairs: list[QAPair] = []
    for category in rng.sample(categories, min(count, len(categories))):
        template = VALUE_QUESTIONS[category]
        false_value = rng.choice([v for v in TAXONOMY[category] if v != a[category]])
        pairs += [
            _value_question(category, template, a[category], a),
            _value_question(category, template, false_value, a),
        ]
    return pairs


# Reasoning questions: (question, categories needed visible, rule -> (is_yes, explanation)).
def _surprised(a):
    if a["emotion"] == "surprised":
        return True, "the eyebrows are raised high and the eyes are wide open"
    return False, f"the expression is {phrase('emotion', a['emotion'])}"


def _happy(a):
    if a["emotion"] == "happy":
        return True, f"the person is {a['action']}"
    return False, f"the person looks {phrase('emotion', a['emotion'])}"


def _sun(a):
    covered = a["hat"] in ("sun hat", "baseball cap") or a["glasses"] == "sunglasses"
    items = [
        x
        for x in (
            a["hat"] if a["hat"] in ("sun hat", "baseball cap") else None,
            "sunglasses" if a["glasses"] == "sunglasses" else None,
        )
        if x
    ]
    return covered, ("they wear " + " and ".join(items)) if items else "they wear neither a brimmed hat nor sunglasses"


def _child(a):
    return a["age"] == "child", f"they look like {phrase('age', a['age'])}"


def _facial_hair(a):
    parts = [c for c in ("moustache", "beard", "stubble", "sideburns") if a[c] not in ("none", "no")]
    return bool(parts), (
        "there is " + ", ".join(phrase(c, a[c]) for c in parts)
    ) if parts else "the face is clean-shaven"


def _jewelry(a):
    parts = [phrase(c, a[c]) for c in ("earrings", "necklace") if a[c] != "none"]
    return bool(parts), ("they wear " + " and ".join(parts)) if parts else "no earrings or necklace are visible"


def _teeth(a):
    return a["action"] == "laughing", "they are laughing with the mouth open" if a[
        "action"
    ] == "laughing" else "the teeth are not showing"


def _mouth_hidden(a):
    return a["face_mask"] != "none", f"a {a['face_mask']} mask covers it" if a[
        "face_mask"
    ] != "none" else "no mask covers it"


def _angry(a):
    hostile = a["emotion"] == "angry" or a["action"] == "glaring"
    if a["action"] == "glaring":
        return True, "the person is glaring with narrowed eyes"
    if hostile:
        return True, "the eyebrows are drawn down in a frown"
    return False, f"the expression is {phrase('emotion', a['emotion'])}"


REASONING_QUESTIONS: tuple[tuple[str, tuple[str, ...], Callable[[Mapping[str, str]], tuple[bool, str]]], ...] = (
    ("Does the person look surprised?", ("emotion",), _surprised),
    ("Does the person seem to be in a good mood?", ("emotion", "action"), _happy),
    ("Is the person protected from the sun?", ("hat", "glasses"), _sun),
    ("Could this person be a child?", ("age",), _child),
    ("Does the person have any facial hair?", ("moustache", "beard", "stubble", "sideburns"), _facial_hair),
    ("Is the person wearing any jewelry?", ("earrings", "necklace"), _jewelry),
    ("Can you see the person's teeth?", ("action",), _teeth),
    ("Is the person's mouth covered?", ("face_mask",), _mouth_hidden),
    ("Does the person look hostile or annoyed?", ("emotion", "action"), _angry),
)


def make_qa(
    attributes: Mapping[str, str],
    rng: random.Random,
    num_open: int = 3,
    num_yes_no: int = NUM_YES_NO_QUESTIONS,
    num_reasoning: int = 2,
    balanced_yes_no: bool | str = False,
    value_pairs: int = 0,
) -> list[QAPair]:
    """Draw question-answer pairs about the visible attributes (8 by default).

    The natural yes/no mix leans to "no" (most presence categories are absent on most faces), and a model trained on
    it learns to fall back on "no". `balanced_yes_no` draws half of the yes/no questions from those answered "yes"
    and half from those answered "no" (every value question is offered both ways: the true value and a false one),
    so the frequent answer is no longer a safe guess. With `value_pairs` > 0 the `num_yes_no` questions are presence
    questions only, and `value_pairs` value categories are each asked both ways (true value and a false one) on top.
    `balanced_yes_no="per-question"` balances each presence question on its own instead (`_per_question_presence`):
    the yes/no questions are presence questions, each answered "yes" on half of the faces it is asked about, and
    value questions come only from `value_pairs`. All of these are training-data options; evaluation keeps the
    natural mix.
    """
    check_balance(balanced_yes_no)
    a, hidden = attributes, hidden_categories(attributes)
    pairs: list[QAPair] = []

    open_cats = [c for c in OPEN_QUESTIONS if c not in hidden and not (c in _NEEDS_PRESENT and a[c] == "none")]
    if a["bald"] == "yes":
        open_cats = [c for c in open_cats if c != "bangs"]
    for category in rng.sample(open_cats, min(num_open, len(open_cats))):
        question = rng.choice(OPEN_QUESTIONS[category])
        pairs.append(QAPair(question, phrase(category, a[category]), category, "open"))

    if balanced_yes_no == "per-question":
        pairs.extend(_per_question_presence(a, hidden, rng, num_yes_no))
    elif balanced_yes_no:
        pairs.extend(_balanced_yes_no(a, hidden, rng, num_yes_no, with_values=not value_pairs))
    else:
        yes_no = _presence_questions(a, hidden)
        for category, template in VALUE_QUESTIONS.items():
            if category in hidden or value_pairs:  # with value pairs, the value questions come in pairs below
                continue
            asked = a[category] if rng.random() < 0.5 else rng.choice(TAXONOMY[category])
            yes_no.append(_value_question(category, template, asked, a))
        pairs.extend(rng.sample(yes_no, min(num_yes_no, len(yes_no))))
    if value_pairs:
        pairs.extend(_value_pairs(a, hidden, rng, value_pairs))

    reasoning = [r for r in REASONING_QUESTIONS if not set(r[1]) & hidden]
    for question, needed, rule in rng.sample(reasoning, min(num_reasoning, len(reasoning))):
        flag, why = rule(a)
        pairs.append(QAPair(question, f"{'Yes' if flag else 'No'}, {why}.", ",".join(needed), "reasoning"))
    return pairs
