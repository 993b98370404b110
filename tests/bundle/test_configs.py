"""The bundle configs as a reader sees them: every family's config merged after train.json
resolves and builds its trainer, and the preprocessing blocks train.json shows are the
pipelines every other consumer runs (``squid_monai.transforms.compose``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from squid_monai.data.digitanatomy import DigitAnatomyDataset
from squid_monai.transforms import inference_transforms, train_transforms

from ..trained_bundle import CONFIGS

TINY = {
    "preset": "tiny",
    "digitanatomy_length": 4,
    "val_per_class": 2,
    "report_per_class": 2,
    "calibration_images": 4,
    "epochs": 2,  # f-AnoGAN trains in two stages
    "mlflow_tracking": False,
    "progress": False,
}
FAMILY_CONFIGS = sorted(p.name for p in (CONFIGS / "methods").glob("*.json"))


def parser(tmp_path, *configs: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *(str(CONFIGS / c) for c in configs)])
    parser.update({"output_dir": str(tmp_path), **TINY, **overrides})
    return parser


@pytest.mark.parametrize("family_config", [None, *FAMILY_CONFIGS])
def test_every_family_config_builds_its_trainer(tmp_path, family_config):
    configs = [f"methods/{family_config}"] if family_config else []
    p = parser(tmp_path, *configs)
    trainer = p.get_parsed_content("train#trainer")
    family = p.get_parsed_content("model_family")
    assert type(trainer) is family.trainer and trainer.state.max_epochs == 2
    declared = json.loads((CONFIGS / configs[0]).read_text())["family"] if configs else "squid"
    assert family.name == declared
    for key in ("lr", "betas", "weight_decay", "adam_eps", "lr_min_ratio"):
        assert p.get(key).startswith("$@recipe["), key  # the number's one home: the recipe


@pytest.mark.parametrize("switches", [{}, {"intensity": "raw", "augment_resampling": "nearest"}])
def test_train_preprocessing_block_is_train_transforms(tmp_path, switches):
    p = parser(tmp_path, **switches)
    block = p.get_parsed_content("train#preprocessing")
    shared = train_transforms(p.get_parsed_content("image_size"), **switches)
    digits = DigitAnatomyDataset(3, seed=0)
    for seed in range(3):
        block.set_random_state(seed), shared.set_random_state(seed)
        item = {"image": np.asarray(digits[seed]["image"])}
        assert torch.equal(block(dict(item))["image"], shared(dict(item))["image"])


def test_train_preprocessing_block_ends_with_the_global_augmentation(tmp_path):
    block = parser(tmp_path, global_augment="acquisition").get_parsed_content("train#preprocessing")
    shared = train_transforms(32, global_augment="acquisition")
    assert [type(t) for t in block.transforms[-1].transforms] == [
        type(t) for t in shared.transforms[4:]
    ]


def test_validate_preprocessing_block_is_inference_transforms(tmp_path):
    p = parser(tmp_path)
    block = p.get_parsed_content("validate#preprocessing")
    shared = inference_transforms(p.get_parsed_content("image_size"))
    image = (np.random.default_rng(0).random((70, 50)) * 255).astype(np.uint8)
    assert torch.equal(block({"image": image})["image"], shared({"image": image})["image"])
