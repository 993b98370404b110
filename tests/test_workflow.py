"""The decisions the bundle configs delegate to squid_monai.workflow."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from squid_monai.workflow import DatalistSource, DigitAnatomySource, bundle_root, choose_data


def test_bundle_root_from_repository_root_and_from_inside_the_bundle(monkeypatch, tmp_path):
    repo_bundle = bundle_root()
    assert repo_bundle.endswith(os.path.join("bundles", "squid"))
    monkeypatch.chdir(repo_bundle)
    assert bundle_root() == repo_bundle
    monkeypatch.chdir(tmp_path)  # anywhere else: the checkout's bundle, never the cwd
    assert bundle_root() == repo_bundle


def test_no_data_means_digitanatomy_and_its_recipe():
    data = choose_data(None, None, seed=3)
    assert isinstance(data, DigitAnatomySource) and data.splits is None and data.seed == 3
    assert (data.name, data.preset, data.recipe) == (
        "digitanatomy",
        "digitanatomy_small",
        "digitanatomy",
    )
    validation = data.validation(32, n_normal=2, n_abnormal=3)
    assert sorted(int(validation[i]["label"]) for i in range(len(validation))) == [0, 0, 1, 1, 1]
    assert (
        len(data.calibration(32, max_images=4)) == 4
        and len(data.training(32, digitanatomy_length=5)) == 5
    )


def test_folder_dataset_follows_the_paper_protocol(tmp_path):
    for cls, n in (("normal", 10), ("abnormal", 6)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 20 + 5, np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = choose_data(str(tmp_path), None, seed=1, val_per_class=3, report_per_class=0)
    assert isinstance(data, DatalistSource) and (data.preset, data.recipe) == ("small", "chest")
    splits = data.splits
    assert len(splits["validation"]) == 6 and len(splits["training"]) == 7
    assert all(item["label"] == 0 for item in splits["training"])
    assert not {i["image"] for i in splits["training"]} & {i["image"] for i in splits["validation"]}


def test_calibration_on_the_training_images_as_they_are_reads_no_label(tmp_path):
    items = [{"image": str(tmp_path / f"{i}.png"), "label": int(i >= 6)} for i in range(8)]
    for i, it in enumerate(items):
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) + i).save(it["image"])
    data = DatalistSource({"training": items, "validation": items})
    labels = lambda dataset: sorted(int(dataset[i]["label"]) for i in range(len(dataset)))  # noqa: E731
    assert labels(data.calibration(8, cache=False)) == [0] * 6
    assert labels(data.calibration(8, cache=False, on="training")) == [0] * 6 + [1, 1]
    with pytest.raises(ValueError, match="calibrate_on"):
        data.calibration(8, on="everything")


def test_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        choose_data(str(tmp_path / "nowhere"), None)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        choose_data(None, str(tmp_path / "missing.json"))


def test_train_config_takes_preset_and_recipe_from_the_data_source(tmp_path):
    """The data source is chosen once; preset, critic steps and loss weights follow from it."""
    from monai.bundle import ConfigParser

    from squid_monai.methods.squid.recipes import RECIPES

    config = os.path.join(bundle_root(), "configs", "train.json")
    parser = ConfigParser()
    parser.read_config(config)
    parser["output_dir"] = str(tmp_path)
    assert parser.get_parsed_content("preset") == "digitanatomy_small"
    assert parser.get_parsed_content("n_critic") == RECIPES["digitanatomy"]["n_critic"]
    assert parser.get_parsed_content("loss_weights") == RECIPES["digitanatomy"]["loss_weights"]
    assert parser.get_parsed_content("score_source") == "tile_residual"
    assert (
        parser.get_parsed_content("lr") == RECIPES["digitanatomy"]["lr"] == 2e-4
    )  # measured, not the paper's
    assert (
        parser.get_parsed_content("train#trainer#input_erasing")
        == RECIPES["digitanatomy"]["input_erasing"]
        == 0.5
    )
    for cls, n in (("normal", 8), ("abnormal", 4)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 20 + 5, np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    parser = ConfigParser()
    parser.read_config(config)
    parser.update(
        {
            "output_dir": str(tmp_path),
            "dataset_dir": str(tmp_path / "data"),
            "val_per_class": 2,
            "report_per_class": 0,
            "loss_weights#student": 3.0,
        }
    )
    assert parser.get_parsed_content("preset") == "small"
    assert parser.get_parsed_content("n_critic") == RECIPES["chest"]["n_critic"]
    assert parser.get_parsed_content("loss_weights") == {
        **RECIPES["chest"]["loss_weights"],
        "student": 3.0,
    }
    assert parser.get_parsed_content("score_source") == "combined"  # measured, beyond the paper
    assert parser.get_parsed_content("lr") == RECIPES["chest"]["lr"] == 1e-4  # the paper's
    assert parser.get_parsed_content("train#trainer#input_erasing") == 0.0  # the paper's training


def test_chest_cpu_recipe_overlays_the_training_config(tmp_path):
    from monai.bundle import ConfigParser

    from tests.trained_bundle import CONFIGS

    for cls, n in (("normal", 8), ("abnormal", 4)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 20 + 5, np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "chest_cpu.json")])
    parser.update(
        {
            "output_dir": str(tmp_path),
            "dataset_dir": str(tmp_path / "data"),
            "val_per_class": 2,
            "report_per_class": 0,
        }
    )
    assert parser.get_parsed_content("preset") == "small"
    assert (
        parser.get_parsed_content("epochs") == 36
    )  # SQUID's measured length (its chest recipe's cpu_epochs)
    assert (
        parser.get_parsed_content("score_source") == "combined"
        and parser.get_parsed_content("ema") is True
    )
    # progress on: a bar on a terminal, periodic log lines in a batch job's log
    assert parser.get_parsed_content("progress") == "auto"


def test_chest_cpu_recipe_trains_any_family_merged_before_it(tmp_path):
    """The README's GANomaly chest command: its method config, then the chest recipe."""
    from monai.bundle import ConfigParser

    from squid_monai.methods.ganomaly.trainer import GANomalyTrainer
    from tests.trained_bundle import CONFIGS

    parser = ConfigParser()
    parser.read_config(
        [
            str(CONFIGS / "train.json"),
            str(CONFIGS / "methods" / "ganomaly.json"),
            str(CONFIGS / "chest_cpu.json"),
        ]
    )
    parser.update({"output_dir": str(tmp_path), "val_per_class": 2, "calibration_images": 2})
    assert (
        parser.get_parsed_content("family") == "ganomaly"
        and parser.get_parsed_content("preset") == "small"
    )
    assert parser.get_parsed_content("epochs") == 12
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, GANomalyTrainer) and trainer.state.max_epochs == 12


def test_the_bundle_validates_calibrates_and_saves_the_ema_weights(tmp_path):
    from monai.bundle import ConfigParser

    from tests.trained_bundle import CONFIGS

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(
        {"output_dir": str(tmp_path), "preset": "tiny", "val_per_class": 2, "calibration_images": 2}
    )
    ema = parser.get_parsed_content("ema_handler")
    evaluator = parser.get_parsed_content("validate#evaluator")
    assert ema.enabled and evaluator.scorer is ema.ema_model is parser.get_parsed_content(
        "score_model"
    )
    assert evaluator.scorer is not parser.get_parsed_content(
        "scorer"
    )  # the live weights are trained, not scored
    savers = [h for h in parser.get_parsed_content("validate#handlers") if hasattr(h, "save_dict")]
    assert savers and all(saver.save_dict["model"] is ema.ema_model for saver in savers)


def test_a_resumed_run_builds_the_network_its_folder_pinned_not_todays_preset(tmp_path):
    """Resume rebuilds from the run's own ``network.json``: a preset changed since (here:
    the pinned file says 2 decoder-memory windows, today's preset 1) cannot change a
    half-trained network; asking for other settings than the folder's run is an error."""
    from monai.bundle import ConfigParser

    from squid_monai.artifact import Recipe
    from squid_monai.loading import network_config
    from squid_monai.workflow import network_recipe

    def settings(recipe):  # as JSON stores them (tuples become lists)
        return json.loads(json.dumps(network_config(recipe)))

    models = tmp_path / "models"
    pinned = network_config(Recipe("tiny", {}))
    pinned["decoder_memory_windows"] = 1 if pinned["decoder_memory_windows"] != 1 else 2
    path = Recipe("tiny", {}, pinned=pinned).save(models)
    pinned = json.loads(json.dumps(pinned))
    assert (
        settings(network_recipe(models, "tiny", {})) == settings(Recipe("tiny", {})) != pinned
    )  # no checkpoint
    (models / "checkpoint_epoch=1.pt").write_bytes(b"")
    assert settings(network_recipe(models, "tiny", {})) == pinned
    assert settings(network_recipe(models, "tiny", {}, resume="false")) != pinned
    with pytest.raises(
        ValueError,
        match=r"network\.json.*trained with family 'squid', preset 'tiny'.*--resume false",
    ):
        network_recipe(models, "tiny", {"top_k": 2})
    with pytest.raises(ValueError, match=str(path)):
        network_recipe(models, "small", {})

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_root(), "configs", "train.json"))
    parser.update({"output_dir": str(tmp_path), "preset": "tiny"})
    generator = parser.get_parsed_content("generator")
    assert generator.student.memories[0].windows == pinned["decoder_memory_windows"]
    parser.get_parsed_content("save_network_config")
    assert (
        Recipe.load(models).pinned == pinned
    )  # the folder's recipe is kept, not re-pinned from today's preset


def test_a_resumed_run_keeps_the_training_recipe_its_folder_pinned(tmp_path):
    """Resume reads the run's own ``training.json``: a recipe changed since (here: the pinned
    run trained at 1e-4 without erasing, today's recipe says 2e-4 with erasing) cannot change a
    half-trained run; a command-line setting still wins; another recipe is an error."""
    from monai.bundle import ConfigParser

    from squid_monai.methods import get_family, get_recipe
    from squid_monai.workflow import save_training_settings, training_recipe

    squid = get_family("squid")
    models = tmp_path / "models"
    today = get_recipe(squid, "digitanatomy")  # the family's recipe over the shared defaults
    pinned = json.loads(json.dumps({**today, "lr": 1e-4, "input_erasing": 0.0}))  # as stored
    path = save_training_settings(models, "squid", "digitanatomy", pinned)
    assert training_recipe(models, squid, "digitanatomy") == today  # no checkpoint: a fresh start
    (models / "checkpoint_epoch=1.pt").write_bytes(b"")
    assert training_recipe(models, squid, "digitanatomy") == pinned
    assert training_recipe(models, squid, "digitanatomy", resume="false") == today
    with pytest.raises(
        ValueError, match=r"training\.json.*squid's 'digitanatomy' recipe.*'chest'.*--resume false"
    ):
        training_recipe(models, squid, "chest")

    def parsed(**updates):
        parser = ConfigParser()
        parser.read_config(os.path.join(bundle_root(), "configs", "train.json"))
        parser.update({"output_dir": str(tmp_path), "preset": "tiny", **updates})
        return parser.get_parsed_content("lr"), parser.get_parsed_content(
            "train#trainer#input_erasing"
        )

    assert parsed() == (1e-4, 0.0)
    assert parsed(lr=3e-4) == (3e-4, 0.0)  # asked for on the command line
    assert parsed(resume=False) == (today["lr"], today["input_erasing"])
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path)):
        training_recipe(models, squid, "digitanatomy")
