import itertools
import random

import numpy as np
import pytest
from PIL import Image

from unif2ace_hf.data.synthface import TAXONOMY, default_attributes, render, sample_attributes

# A value must change at least a 2x2 patch of a 64x64 render by more than ~10% intensity (24/255 in some
# channel). With the same seed all nuisance factors are identical, so unchanged attributes give exactly zero
# such pixels; 24 levels is far above anti-aliasing round-off (1-2 levels) and 4 pixels is the size of the
# smallest drawn marks (an iris, a mole) -- the least a 64x64 classifier can be asked to see.
MIN_CHANGED_PIXELS = 4
MIN_LEVEL_CHANGE = 24


def _changed_pixels(a: Image.Image, b: Image.Image) -> int:
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=2)
    return int((diff > MIN_LEVEL_CHANGE).sum())


def test_taxonomy_size():
    assert len(TAXONOMY) >= 25
    assert sum(len(v) for v in TAXONOMY.values()) >= 100
    for category, values in TAXONOMY.items():
        assert len(set(values)) == len(values) >= 2, category


@pytest.mark.parametrize("size", [64, 96])
def test_same_seed_same_pixels(size):
    attributes = sample_attributes(random.Random(5))
    first, second = render(attributes, size, seed=11), render(attributes, size, seed=11)
    assert first.size == (size, size) and first.mode == "RGB"
    assert first.tobytes() == second.tobytes()
    assert render(attributes, size, seed=12).tobytes() != first.tobytes()


def test_unchanged_attributes_give_identical_renders():
    base = default_attributes()
    assert _changed_pixels(render(base, 64, 3), render(dict(base), 64, 3)) == 0


@pytest.mark.parametrize("category", list(TAXONOMY))
def test_every_value_is_visibly_distinct(category):
    # Change only `category`, everything else (and the seed) fixed: every pair of values must differ.
    base = default_attributes()
    for seed in (0, 1):
        renders = {}
        for value in TAXONOMY[category]:
            attributes = dict(base)
            attributes[category] = value
            renders[value] = render(attributes, 64, seed=seed)
        for v1, v2 in itertools.combinations(TAXONOMY[category], 2):
            changed = _changed_pixels(renders[v1], renders[v2])
            assert changed >= MIN_CHANGED_PIXELS, f"{category}: {v1!r} vs {v2!r} change only {changed} pixels"


def test_anti_aliased():
    # Box-reduced supersampling leaves intermediate colours along edges, not only the palette's.
    smooth = render(default_attributes(), 64, seed=0)
    aliased = render(default_attributes(), 64, seed=0, supersample=1)
    assert len(smooth.getcolors(64 * 64)) > 2 * len(aliased.getcolors(64 * 64))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hair_color": "green"}, "hair_color"),
        ({"not_a_category": "x"}, "not_a_category"),
    ],
)
def test_bad_attributes_name_the_category(change, message):
    attributes = default_attributes()
    attributes.update(change)
    with pytest.raises(ValueError, match=message):
        render(attributes, 64, 0)


def test_missing_category_is_named():
    attributes = default_attributes()
    del attributes["nose"]
    with pytest.raises(ValueError, match="nose"):
        render(attributes, 64, 0)


@pytest.mark.parametrize("size", [8, 64.0, True])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        render(default_attributes(), size, 0)
