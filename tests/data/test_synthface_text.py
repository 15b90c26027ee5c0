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


def test_every_answer_follows_from_attributes():
    kinds, total = set(), 0
    for attributes, rng in _samples(7) + _samples(8, novel=True):
        pairs = make_qa(attributes, rng)
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
    assert kinds == {"open", "presence", "value", "reasoning"}


@pytest.mark.parametrize("category", ["eye_color", "hairline", "beard"])
def test_hidden_categories_are_not_asked(category):
    attributes = sample_attributes(random.Random(0))
    attributes.update(eyes="closed", bangs="blunt", face_mask="surgical")
    attributes = make_coherent(attributes)
    assert category in hidden_categories(attributes)
    for seed in range(50):
        assert all(category not in p.category.split(",") for p in make_qa(attributes, random.Random(seed)))
        assert category not in make_caption(attributes, random.Random(seed))[1]
