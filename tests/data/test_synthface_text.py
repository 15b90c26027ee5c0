import random

import pytest

from unif2ace_hf.data.synthface import (
    CATEGORIES,
    NOVEL_PAIRS,
    TAXONOMY,
    hidden_categories,
    make_caption,
    make_coherent,
    make_qa,
    novel_pairs_in,
    sample_attributes,
)
from unif2ace_hf.data.synthface.phrases import phrase
from unif2ace_hf.data.synthface.qa import PRESENCE_BASE_RATES, PRESENCE_QUESTIONS, VALUE_QUESTIONS

NUM = 400


def _samples(seed=0, novel=False):
    rng = random.Random(seed)
    return [(sample_attributes(rng, novel=novel), random.Random(i)) for i in range(NUM)]


def test_samples_are_coherent_and_complete():
    for attributes, _ in _samples():
        assert set(attributes) == set(CATEGORIES)
        assert make_coherent(attributes) == attributes
        for category, value in attributes.items():
            assert value in TAXONOMY[category]


def test_every_value_is_sampled():
    seen = {(c, v) for attributes, _ in _samples(1) + _samples(2, novel=True) for c, v in attributes.items()}
    assert seen == {(c, v) for c, values in TAXONOMY.items() for v in values}


def test_novel_pairs_only_in_novel_split():
    assert all(not novel_pairs_in(a) for a, _ in _samples(3))
    assert all(novel_pairs_in(a) for a, _ in _samples(4, novel=True))
    # Each half of every held-out pair still occurs in ordinary samples.
    ordinary = {(c, v) for a, _ in _samples(5) for c, v in a.items()}
    for pair in NOVEL_PAIRS:
        assert set(pair) <= ordinary


def test_captions_are_rich_varied_and_mention_only_visible_attributes():
    counts, texts = [], set()
    for attributes, rng in _samples(6):
        caption, mentioned = make_caption(attributes, rng)
        counts.append(len(mentioned))
        texts.add(caption.split(" ")[0] + caption.split(" ")[1])
        assert not set(mentioned) & hidden_categories(attributes)
        assert phrase("hair_color", attributes["hair_color"]) in caption or any(
            s in caption
            for s in ("ginger", "grey", "golden", "chestnut", "jet-black", "snow-white", "copper", "dyed", "silver")
        )
    assert sum(counts) / len(counts) >= 10
    assert len(texts) >= 4  # several opening templates


def test_same_rng_same_text():
    attributes = sample_attributes(random.Random(9))
    assert make_caption(attributes, random.Random(1)) == make_caption(attributes, random.Random(1))
    assert make_qa(attributes, random.Random(1)) == make_qa(attributes, random.Random(1))


def _expected_yes(pair, a):
    """An oracle written independently of qa.py's rules."""
    q = pair.question
    if "surprised" in q:
        return a["emotion"] == "surprised"
    if "good mood" in q:
        return a["emotion"] == "happy"
    if "sun" in q:
        return a["hat"] in ("sun hat", "baseball cap") or a["glasses"] == "sunglasses"
    if "child" in q:
        return a["age"] == "child"
    if "facial hair" in q:
        return any(a[c] not in ("none", "no") for c in ("moustache", "beard", "stubble", "sideburns"))
    if "jewelry" in q:
        return a["earrings"] != "none" or a["necklace"] != "none"
    if "teeth" in q:
        return a["action"] == "laughing"
    if "mouth covered" in q:
        return a["face_mask"] != "none"
    if "hostile" in q:
        return a["emotion"] == "angry" or a["action"] == "glaring"
    raise AssertionError(f"unknown reasoning question {q!r}")


@pytest.mark.parametrize("balanced_yes_no", [False, True, "per-question"])
def test_every_answer_follows_from_attributes(balanced_yes_no):
    kinds, total = set(), 0
    for attributes, rng in _samples(7) + _samples(8, novel=True):
        pairs = make_qa(attributes, rng, balanced_yes_no=balanced_yes_no)
        total += len(pairs)
        hidden = hidden_categories(attributes)
        for pair in pairs:
            kinds.add(pair.kind)
            assert not set(pair.category.split(",")) & hidden, pair
            if pair.kind == "open":
                assert pair.answer == phrase(pair.category, attributes[pair.category])
            elif pair.kind == "presence":
                assert pair.answer == ("yes" if attributes[pair.category] not in ("none", "no") else "no")
            elif pair.kind == "value":
                assert pair.answer == ("yes" if pair.value == attributes[pair.category] else "no")
                assert phrase(pair.category, pair.value) in pair.question
            else:
                assert pair.kind == "reasoning"
                assert pair.answer.startswith("Yes, " if _expected_yes(pair, attributes) else "No, ")
    assert total / (2 * NUM) >= 6
    # per question, value questions come only from `value_pairs` (off here)
    assert kinds == {"open", "presence", "reasoning"} | ({"value"} if balanced_yes_no != "per-question" else set())


@pytest.mark.parametrize("category", ["eye_color", "hairline", "beard"])
def test_hidden_categories_are_not_asked(category):
    attributes = sample_attributes(random.Random(0))
    attributes.update(eyes="closed", bangs="blunt", face_mask="surgical")
    attributes = make_coherent(attributes)
    assert category in hidden_categories(attributes)
    for seed in range(50):
        assert all(category not in p.category.split(",") for p in make_qa(attributes, random.Random(seed)))
        assert category not in make_caption(attributes, random.Random(seed))[1]


def _yes_no_answers(pairs):
    return [p.answer for p in pairs if p.kind in ("presence", "value")]


def test_natural_yes_no_mix_leans_to_no_and_balanced_mix_is_half_yes():
    natural, balanced = [], []
    for attributes, rng in _samples(11):
        state = rng.getstate()
        natural += _yes_no_answers(make_qa(attributes, rng))
        rng.setstate(state)
        answers = _yes_no_answers(make_qa(attributes, rng, balanced_yes_no=True))
        assert len(answers) == 3 and answers.count("yes") in (1, 2)  # per face, not only on average
        balanced += answers
    assert natural.count("yes") / len(natural) < 0.45
    assert 0.45 < balanced.count("yes") / len(balanced) < 0.55


def test_balanced_mix_changes_only_the_yes_no_questions():
    for attributes, rng in _samples(12)[:100]:
        state = rng.getstate()
        natural = make_qa(attributes, rng)
        rng.setstate(state)
        balanced = make_qa(attributes, rng, balanced_yes_no=True)
        assert [p for p in natural if p.kind == "open"] == [p for p in balanced if p.kind == "open"]
        assert len(balanced) == len(natural)


@pytest.mark.parametrize("balanced_yes_no", [False, True])
def test_more_yes_no_questions_per_face(balanced_yes_no):
    for attributes, rng in _samples(13)[:100]:
        pairs = make_qa(attributes, rng, num_yes_no=8, balanced_yes_no=balanced_yes_no)
        yes_no = [p for p in pairs if p.kind in ("presence", "value")]
        assert len(yes_no) == 8
        assert len({p.question for p in yes_no}) == 8  # distinct questions, not one asked twice
        if balanced_yes_no:
            assert [p.answer for p in yes_no].count("yes") == 4


@pytest.mark.parametrize("balanced_yes_no", [False, True])
def test_value_pairs_ask_each_category_both_ways(balanced_yes_no):
    for attributes, rng in _samples(14)[:100]:
        pairs = make_qa(attributes, rng, balanced_yes_no=balanced_yes_no, value_pairs=2)
        assert [p.kind for p in pairs if p.kind in ("presence", "value")].count("presence") == 3  # yes/no: presence
        values = [p for p in pairs if p.kind == "value"]
        visible = [c for c in VALUE_QUESTIONS if c not in hidden_categories(attributes)]
        assert len(values) == 2 * min(2, len(visible))
        for true, false in zip(values[::2], values[1::2]):
            assert true.category == false.category
            assert (true.value, true.answer) == (attributes[true.category], "yes")
            assert false.value != attributes[false.category] and false.answer == "no"


def test_value_pairs_leave_the_other_questions_alone():
    for attributes, rng in _samples(15)[:100]:
        state = rng.getstate()
        plain = make_qa(attributes, rng, balanced_yes_no=True)
        rng.setstate(state)
        paired = make_qa(attributes, rng, balanced_yes_no=True, value_pairs=1)
        assert [p for p in plain if p.kind == "open"] == [p for p in paired if p.kind == "open"]


def _presence_yes_share(balanced_yes_no, faces):
    """Per presence category: the share of its questions answered "yes" over `faces`."""
    asked = {category: [] for category in PRESENCE_QUESTIONS}
    for attributes, rng in faces:
        for pair in make_qa(attributes, rng, balanced_yes_no=balanced_yes_no, value_pairs=2):
            if pair.kind == "presence":
                asked[pair.category].append(pair.answer == "yes")
    return {category: sum(answers) / len(answers) for category, answers in asked.items() if len(answers) >= 40}


def test_per_question_balance_makes_no_question_predict_its_answer():
    """The pooled balance is half "yes" overall, yet its question about a rare feature is mostly "no" and one about
    a common feature mostly "yes"; per question, every presence question is close to half "yes"."""
    faces = [(sample_attributes(random.Random(seed)), random.Random(seed)) for seed in range(3000)]
    pooled = _presence_yes_share(True, faces)
    per_question = _presence_yes_share("per-question", faces)
    assert max(pooled.values()) - min(pooled.values()) > 0.3
    assert len(per_question) == len(PRESENCE_QUESTIONS)
    assert all(0.36 < share < 0.64 for share in per_question.values()), per_question
    for attributes, rng in faces[:200]:
        pairs = make_qa(attributes, rng, balanced_yes_no="per-question", value_pairs=2)
        presence = [p for p in pairs if p.kind == "presence"]
        assert len(presence) == 3 and len({p.category for p in presence}) == 3
        assert sum(p.kind == "value" for p in pairs) == 4  # value questions only from the pairs


def test_presence_base_rates_are_the_samplers():
    counts = {category: [0, 0] for category in PRESENCE_QUESTIONS}
    rng = random.Random(2026)
    for _ in range(3000):
        attributes = sample_attributes(rng)
        hidden = hidden_categories(attributes)
        for category in PRESENCE_QUESTIONS:
            if category not in hidden:
                counts[category][0] += attributes[category] not in ("none", "no")
                counts[category][1] += 1
    assert set(PRESENCE_BASE_RATES) == set(PRESENCE_QUESTIONS)
    for category, (present, visible) in counts.items():
        assert abs(present / visible - PRESENCE_BASE_RATES[category]) < 0.035, category


@pytest.mark.parametrize("bad", ["yes", "per_question", 1.5])
def test_unknown_balance_is_refused(bad):
    with pytest.raises(ValueError, match="balanced_yes_no"):
        make_qa(sample_attributes(random.Random(0)), random.Random(0), balanced_yes_no=bad)


def test_natural_mix_is_pinned():
    """Evaluation draws its questions with the natural mix; the shipped numbers depend on this exact stream."""
    pairs = make_qa(sample_attributes(random.Random(6)), random.Random(6))
    assert [(p.kind, p.category, p.answer) for p in pairs] == [
        ("open", "necklace", "a pendant necklace"),
        ("open", "emotion", "neutral"),
        ("open", "hair_length", "long"),
        ("value", "face_shape", "yes"),
        ("presence", "necklace", "yes"),
        ("value", "skin_tone", "yes"),
        ("reasoning", "face_mask", "Yes, a surgical mask covers it."),
        ("reasoning", "age", "No, they look like a young adult."),
    ]
