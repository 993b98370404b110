"""Model folders trained by an earlier version of the code (``tests/fixtures/model_folders``,
written with ``"method"`` in ``network.json`` and ``training.json``) load and score as they
did when they were trained: the numbers in ``expected_scores.json`` were computed then."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.model_folders.make_expected import EXPECTED, FAMILIES, HERE, KEYS, scores


@pytest.mark.parametrize("family", FAMILIES)
def test_an_old_model_folder_scores_as_when_it_was_trained(family):
    expected = json.loads(EXPECTED.read_text())[family]
    got = scores(HERE / family)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-9), (
            f"{family} {key} changed"
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_the_old_folders_still_say_method(family):
    """The fixture keeps the old vocabulary, so the test above proves that it still loads."""
    assert json.loads((HERE / family / "network.json").read_text())["method"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_an_old_training_recipe_names_its_family(family):
    from squid_monai.artifact import Recipe, load_training_settings

    assert load_training_settings(HERE / family)[:2] == (family, "digitanatomy")
    assert Recipe.load(HERE / family).family == family
