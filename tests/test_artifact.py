"""The trained-model folder: recipe and model card round trips, file names, image size."""

from __future__ import annotations

import json

import pytest
import torch

from squid_monai.artifact import (
    CARD_FILE,
    RECIPE_FILE,
    WEIGHTS_FILE,
    ModelCard,
    Recipe,
    card_model_name,
)
from squid_monai.loading import (
    build,
    build_scorer,
    image_size,
    load_scorer,
    network_config,
    save_network_config,
)
from squid_monai.methods.squid.scorer import SQUIDScorer


def test_recipe_round_trip_build_and_image_size(tmp_path):
    recipe = Recipe("tiny", {"space_aware": False})
    path = save_network_config(tmp_path, recipe)
    assert path == tmp_path / RECIPE_FILE
    written = json.loads(path.read_text())
    assert {k: written[k] for k in ("family", "preset", "overrides")} == {
        "family": "squid",
        "preset": "tiny",
        "overrides": {"space_aware": False},
    }
    assert written["config"] == json.loads(
        json.dumps(network_config(recipe))
    )  # every setting pinned
    assert Recipe.load(tmp_path) == Recipe.load(path) == Recipe.of(recipe.as_dict()) == recipe
    assert image_size(recipe) == 32 and isinstance(image_size(recipe), int)
    assert isinstance(build(recipe), SQUIDScorer)
    # a recipe written before the method field existed is SQUID
    path.write_text(json.dumps({"preset": "tiny", "overrides": {}}))
    assert Recipe.load(path).family == "squid"


def test_a_pinned_recipe_survives_a_change_of_its_preset_and_an_unpinned_one_its_revisions(
    tmp_path, monkeypatch
):
    from squid_monai.methods.squid import presets

    torch.manual_seed(0)
    trained = build_scorer("tiny")
    torch.save(trained.state_dict(), tmp_path / WEIGHTS_FILE)
    save_network_config(tmp_path / RECIPE_FILE, "tiny")
    monkeypatch.setitem(
        presets.PRESETS, "tiny", {**presets.PRESETS["tiny"], "decoder_memory_items": 8}
    )
    loaded = load_scorer(tmp_path / WEIGHTS_FILE)  # pinned: today's tiny is not what was trained
    key = "generator.student.memories.0.memory.memory"
    assert (
        loaded.state_dict()[key].shape == trained.state_dict()[key].shape
        and loaded.state_dict()[key].shape[1] == 16
    )
    # a file written before the pin: the preset's earlier definition rebuilds it
    (tmp_path / RECIPE_FILE).write_text(
        json.dumps({"method": "squid", "preset": "tiny", "overrides": {}})
    )
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE}: does not match the network recipe"):
        load_scorer(tmp_path / WEIGHTS_FILE)
    monkeypatch.setitem(presets.PRESET_REVISIONS, "tiny", ({"decoder_memory_items": 16},))
    loaded = load_scorer(tmp_path / WEIGHTS_FILE)
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_models_of_the_earlier_digitanatomy_default_still_load(tmp_path):
    from squid_monai.methods.squid.presets import PRESET_REVISIONS

    for revision in PRESET_REVISIONS["digitanatomy_small"]:
        trained = build_scorer("digitanatomy_small", **revision)
        torch.save(trained.state_dict(), tmp_path / WEIGHTS_FILE)
        (tmp_path / RECIPE_FILE).write_text(
            json.dumps({"preset": "digitanatomy_small", "overrides": {}})
        )
        loaded = load_scorer(tmp_path / WEIGHTS_FILE)
        assert loaded.state_dict().keys() == trained.state_dict().keys()


def test_recipe_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown network setting"):
        save_network_config(tmp_path, Recipe("tiny", {"nope": 1}))
    assert not (tmp_path / RECIPE_FILE).exists()
    with pytest.raises(KeyError, match="unknown model family"):
        image_size(Recipe("tiny", family="nope"))
    (tmp_path / RECIPE_FILE).write_text("{}")
    with pytest.raises(ValueError, match="without 'preset'"):
        Recipe.load(tmp_path)
    assert Recipe.in_folder(tmp_path / "untrained", "tiny") == Recipe("tiny")


def test_weights_and_recipe_round_trip(tmp_path):
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    scorer.set_calibration(0.25, 2.0, threshold=0.625)
    torch.save(scorer.state_dict(), tmp_path / WEIGHTS_FILE)
    save_network_config(tmp_path / RECIPE_FILE, "tiny")
    loaded = load_scorer(tmp_path / WEIGHTS_FILE)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x)["score"], scorer(x)["score"])
    assert loaded.threshold.item() == 0.625


def test_model_card_json_round_trip_and_checks():
    scorer = build_scorer("tiny")
    scorer.set_calibration(0.5, 1.5, threshold=0.75)
    card = ModelCard.from_scorer(
        scorer, 32, {"name": "squid-monai test", "version": "1.2.0"}, family="ganomaly"
    )
    content = json.loads(card.to_json())
    assert content["model_name"] == "ganomaly (squid-monai test)"  # the family first
    assert (
        content["model_version"] == "1.2.0" and content["threshold"] == 0.75 and "score" in content
    )
    again = ModelCard.from_json(card.to_json(), source=CARD_FILE)
    assert (again.image_size, again.mean, again.std, again.threshold, again.normal_threshold) == (
        32,
        0.5,
        1.5,
        0.75,
        card.normal_threshold,
    )
    assert again.to_dict() == card.to_dict() and again.source == CARD_FILE
    with pytest.raises(ValueError, match=r"missing \['threshold'"):
        ModelCard.from_dict(
            {k: v for k, v in content.items() if k not in ("threshold", "model_name")}
        )
    with pytest.raises(ValueError, match="std > 0"):
        ModelCard.from_dict({**content, "std": 0})
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelCard.from_json("{oops")


def test_the_card_names_the_family_not_a_default_one():
    scorer = build_scorer("tiny")
    assert ModelCard.from_scorer(scorer, 32, family="memae").model_name == "memae"
    assert ModelCard.from_scorer(scorer, 32, {"name": "bundle"}).model_name == "bundle"
    assert ModelCard.from_scorer(scorer, 32).model_name == "unnamed model"
    assert card_model_name("daad", "squid-monai x") == "daad (squid-monai x)"


def test_an_export_is_one_more_entry_of_the_card():
    import dataclasses

    card = ModelCard.from_scorer(build_scorer("tiny"), 32)
    assert "format" not in card.to_dict()  # a plain card stays as it was
    exported = dataclasses.replace(
        card, format="openvino", parity={"max_abs_score_diff": 3e-6, "default": True}
    )
    again = ModelCard.from_json(exported.to_json())
    assert (again.format, dict(again.parity)) == (
        "openvino",
        {"max_abs_score_diff": 3e-6, "default": True},
    )
    assert again.to_dict() == exported.to_dict() and not again.extra


def test_preprocessing_record_round_trip(tmp_path):
    from squid_monai.artifact import PREPROCESSING_FILE, save_preprocessing, trained_intensity

    assert trained_intensity(tmp_path) == "percentile"  # a model folder from before the record
    assert save_preprocessing(tmp_path, intensity="raw") == tmp_path / PREPROCESSING_FILE
    assert trained_intensity(tmp_path) == "raw"


def test_model_folder_files_are_replaced_whole_while_another_process_reads_them(tmp_path):
    """The ranks of a distributed run read ``network.json`` while rank 0 rewrites it: a reader
    sees the old file or the new one, never a truncated one."""
    import threading

    from squid_monai.artifact import write_json

    path = tmp_path / "network.json"
    write_json(path, {"n": -1, "pad": "x" * 200_000})
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(json.loads(path.read_text())["n"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(200):
            write_json(path, {"n": n, "pad": "x" * 200_000})
    finally:
        stop.set()
        reader.join()
    assert seen and json.loads(path.read_text())["n"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["network.json"]  # no temporary file left
