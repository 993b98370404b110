"""The method interface: SQUID is a ModelFamily, and a second family is a folder, nothing more:
a toy family added beside ``squid/`` is trained-model-folder, scoring path and writer ready
without editing any of them."""

from __future__ import annotations

import csv
import sys
import textwrap

import pytest
import torch

import squid_monai.methods
from squid_monai.artifact import Recipe
from squid_monai.loading import build, image_size, load_scorer
from squid_monai.methods import ModelFamily, Scorer, family_names, get_family
from squid_monai.methods.squid import FAMILY as SQUID
from squid_monai.scoring import ScoreWriter, score_images

TOY = '''
"""A toy family: the score is the calibrated mean brightness (a stand-in for a seed baseline)."""
import torch
from torch import nn

class ToyScorer(nn.Module):
    def __init__(self, image_size):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        for name, value in (("mean", 0.0), ("std", 1.0), ("threshold", 0.5), ("normal_threshold", 0.5)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, image):
        logit = -self.scale * image.mean(dim=(1, 2, 3))
        return {"score": 1 - torch.sigmoid((logit - self.mean) / self.std), "logit": logit,
                "reconstruction": torch.zeros_like(image)}

class ToyFamily:
    name = "{name}"
    network_presets = {"toy": {"image_size": 8}}
    recipe_presets = {}
    loss_weights = dict
    trainer = object
    scorer = ToyScorer

    def get_config(self, preset, **overrides):
        return {**self.network_presets[preset], **overrides}

    def build_networks(self, preset, **overrides):
        return (ToyScorer(self.get_config(preset, **overrides)["image_size"]),)

    def build_scorer(self, preset, **overrides):
        return self.build_networks(preset, **overrides)[0]

FAMILY = ToyFamily()
'''


def test_squid_is_the_first_family():
    assert "squid" in family_names()
    assert get_family("squid") is SQUID and isinstance(SQUID, ModelFamily)
    scorer = SQUID.build_scorer("tiny")
    assert isinstance(scorer, SQUID.scorer) and isinstance(scorer, Scorer)
    assert {"score", "logit", "reconstruction"} <= set(
        scorer(torch.rand(1, 1, 32, 32))
    )  # at least these
    assert SQUID.recipe_presets["chest"]["loss_weights"]["student"] == 10.0
    assert SQUID.recipe_presets["digitanatomy"]["n_critic"] == 1
    with pytest.raises(KeyError, match="unknown model family"):
        get_family("nope")


def test_a_second_family_is_a_folder(tmp_path, monkeypatch):
    name = "toyfamily_test"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(textwrap.dedent(TOY.replace("{name}", name)))
    monkeypatch.setattr(
        squid_monai.methods, "__path__", [*squid_monai.methods.__path__, str(tmp_path)]
    )
    try:
        assert name in family_names()
        recipe = Recipe("toy", family=name)
        assert image_size(recipe) == 8
        models = recipe.save(tmp_path / "models").parent
        torch.save(build(recipe).state_dict(), models / "model.pt")
        scorer = load_scorer(models / "model.pt")  # the trained-model folder, unchanged
        records = score_images(
            scorer, torch.rand(3, 1, 8, 8), names=["a", "b", "c"]
        )  # the scoring path
        assert all(r.scored and r.decision == int(r.score > 0.5) for r in records)
        with ScoreWriter(tmp_path / "out", images=False) as writer:  # the writer
            writer.write_all(records)
        with open(tmp_path / "out" / "scores.csv", newline="") as f:
            assert [row["image"] for row in csv.DictReader(f)] == ["a", "b", "c"]
    finally:
        sys.modules.pop(f"squid_monai.methods.{name}", None)


#: the file set of every family folder (docs/METHODS.md, "One file set per family")
FAMILY_FILES = ("__init__", "networks", "losses", "trainer", "scorer", "presets", "recipes")


def test_every_family_folder_has_the_same_file_set():
    """Each installed family has the seven modules (``networks`` may be a package), and its
    ``FAMILY`` names the trainer, loss weights and scorer those modules define or re-export."""
    from pathlib import Path

    root = Path(squid_monai.methods.__file__).parent
    for name in family_names():
        folder = root / name
        missing = [
            f
            for f in FAMILY_FILES
            if not (folder / f"{f}.py").is_file() and not (folder / f / "__init__.py").is_file()
        ]
        assert missing == [], f"methods/{name}/ lacks {missing}"
        family = get_family(name)
        for module, attribute in (("trainer", "trainer"), ("scorer", "scorer")):
            exported = vars(__import__(f"squid_monai.methods.{name}.{module}", fromlist=["x"]))
            assert getattr(family, attribute) in exported.values(), (name, module)
