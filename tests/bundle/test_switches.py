"""The SQUID.md section 7 switches as train.json wires them: defaults are the first
build's behaviour, and each value reaches the object it decides."""

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from squid_monai.transforms import RandScaleTranslated, RawScaleIntensityd, RobustScaleIntensityd
from squid_monai.workflow import save_preprocessing, trained_intensity

from ..trained_bundle import CONFIGS

DEFAULTS = {
    "intensity": "percentile",
    "augment_resampling": "bilinear",
    "global_augment": "none",
    "distillation_detach": True,
    "lr_schedule": "paper",
    "adam_eps": "$@recipe['adam_eps']",
    "head_lr_factor": "$@recipe['head_lr_factor']",
    "report_per_class": 100,
    "calibrate_on": "normals",
}


def _parser(tmp_path, **overrides):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(
        {
            "output_dir": str(tmp_path),
            "preset": "tiny",
            "digitanatomy_length": 4,
            "epochs": 8,
            "mlflow_tracking": False,
            **overrides,
        }
    )
    return parser


def test_defaults_are_the_first_build():
    config = json.loads((CONFIGS / "train.json").read_text())
    assert {key: config[key] for key in DEFAULTS} == DEFAULTS
    logged = {**config["mlflow_params"], **config["family_params"]}
    assert {key: logged[key] for key in DEFAULTS} == {key: f"@{key}" for key in DEFAULTS}


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {
            "intensity": "raw",
            "augment_resampling": "nearest",
            "lr_schedule": "authors",
            "adam_eps": 1e-7,
        },
    ],
)
def test_switches_reach_their_objects(tmp_path, switches):
    parser = _parser(tmp_path, **switches)
    expect = {**DEFAULTS, "adam_eps": 1e-08, **switches}  # the recipes' eps
    g_opt, d_opt = (
        parser.get_parsed_content("optimizers#g_optimizer"),
        parser.get_parsed_content("optimizers#d_optimizer"),
    )
    assert g_opt.defaults["eps"] == expect["adam_eps"] and d_opt.defaults["eps"] == 1e-08
    g_sched, d_sched = (
        parser.get_parsed_content("lr_schedulers#g_scheduler"),
        parser.get_parsed_content("lr_schedulers#d_scheduler"),
    )
    if expect["lr_schedule"] == "paper":
        assert g_sched.T_max == d_sched.T_max == 8 and g_sched.eta_min == pytest.approx(
            parser.get_parsed_content("lr") * 0.2
        ) == pytest.approx(2e-4 * 0.2)  # the DigitAnatomy recipe's lr
    else:
        assert g_sched.T_max == 12 and g_sched.eta_min == 0
        assert isinstance(d_sched, torch.optim.lr_scheduler.ConstantLR)
    train = parser.get_parsed_content("train#dataset").transform.transforms
    assert (
        isinstance(train[3], RandScaleTranslated)
        and train[3].augment.mode == expect["augment_resampling"]
    )
    scaler = RawScaleIntensityd if expect["intensity"] == "raw" else RobustScaleIntensityd
    assert isinstance(train[1], scaler)
    assert isinstance(parser.get_parsed_content("validate#dataset").transform.transforms[1], scaler)


@pytest.mark.parametrize(
    "factor, expected", [(None, 30), (1, 1), (10, 10)]
)  # None: the DigitAnatomy recipe's
def test_head_lr_factor_reaches_the_generator_optimiser(tmp_path, factor, expected):
    parser = _parser(tmp_path, **({} if factor is None else {"head_lr_factor": factor}))
    g_opt = parser.get_parsed_content("optimizers#g_optimizer")
    lr = parser.get_parsed_content("lr")
    assert (
        len(g_opt.param_groups) == (1 if expected == 1 else 2) and g_opt.param_groups[0]["lr"] == lr
    )
    if expected != 1:
        generator = parser.get_parsed_content("generator")
        assert g_opt.param_groups[1]["lr"] == pytest.approx(expected * lr)
        assert {id(p) for p in g_opt.param_groups[1]["params"]} == {
            id(p)
            for p in (*generator.student.head.parameters(), *generator.teacher.head.parameters())
        }


@pytest.mark.parametrize("value, expected", [(True, True), ("false", False)])
def test_distillation_detach_reaches_the_trainer(value, expected):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["distillation_detach"] = value
    assert parser.get_parsed_content("train#trainer#distillation_detach") is expected


@pytest.mark.parametrize("on, abnormal", [("normals", 0), ("training", 2)])
def test_calibrate_on_reaches_the_calibration_set(tmp_path, on, abnormal):
    items = [{"image": f"{i}.png", "label": int(i >= 6)} for i in range(8)]
    for i, it in enumerate(items):
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) + i).save(
            tmp_path / it["image"]
        )
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items, "validation": items}))
    parser = _parser(tmp_path, datalist=str(tmp_path / "datalist.json"), calibrate_on=on)
    calibration = parser.get_parsed_content("validate#calibration_dataloader").dataset
    assert len(calibration) == 6 + abnormal
    assert sum(int(calibration[i]["label"]) for i in range(len(calibration))) == abnormal


def test_the_trained_intensity_rule_is_recorded_for_evaluation_and_inference(tmp_path):
    assert trained_intensity(tmp_path) == "percentile"  # a model folder from before the switch
    save_preprocessing(tmp_path, intensity="raw")
    assert json.loads((tmp_path / "preprocessing.json").read_text()) == {"intensity": "raw"}
    assert trained_intensity(tmp_path) == "raw"
    with pytest.raises(ValueError, match="intensity rule"):
        save_preprocessing(tmp_path, intensity="minmax")
    for name in ("evaluate.json", "inference.json"):
        assert (
            "trained_intensity(@ckpt_dir" in json.loads((CONFIGS / name).read_text())["intensity"]
        )


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_input_erasing_reaches_the_trainer(value):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["input_erasing"] = value
    assert parser.get_parsed_content("train#trainer#input_erasing") == value
    assert parser.get_parsed_content("family_params#input_erasing") == value
    assert tuple(parser.get_parsed_content("train#trainer#erasing_size")) == (0.125, 0.333)
