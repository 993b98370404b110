"""``benchmarks/tile_scores.py``: the tile score's rules side by side on one trained model."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from squid_monai.loading import load_scorer
from squid_monai.metrics import roc_auc
from squid_monai.workflow import choose_data

from .trained_bundle import trained_bundle


def _benchmark():
    module = importlib.import_module("benchmarks.tile_scores")
    return module


def test_each_rule_is_the_scorers_own_tile_score_refitted_on_the_calibration_normals(
    tmp_path_factory, tmp_path
):
    bundle = trained_bundle(tmp_path_factory)
    results = _benchmark().main(
        [
            "--model_dir",
            str(bundle.output_dir / "models"),
            "--per_class",
            "10",
            "--splits",
            "validation",
            "report",
            "--powers",
            "2",
            "4",
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    rows = results["validation"]
    assert (
        set(rows) == {"2:one", "2:two", "4:one", "4:two"} == set(results["report"])
    )  # every split, each rule
    assert "minus" not in rows["2:one"] and all(
        "minus" in rows[r] for r in ("2:two", "4:one", "4:two")
    )
    # the same rule through the scorer's own path: fit_normals on the calibration images, then its score
    data = choose_data(None, None, seed=0, val_per_class=10, report_per_class=10)
    size = load_scorer(bundle.model).generator.image_size
    calibration = torch.stack([item["image"].as_tensor() for item in data.calibration(size)])
    split = data.validation(size, split="validation", n_normal=10, n_abnormal=10)
    images = torch.stack([item["image"].as_tensor() for item in split])
    labels = np.array([int(item["label"]) for item in split])
    for rule, power, two_sided in (("4:two", 4.0, True), ("2:one", 2.0, False)):
        scorer = load_scorer(bundle.model)
        scorer.tile_power.fill_(power)
        scorer.tile_two_sided.fill_(two_sided)
        scorer.score_source_code.fill_(2)  # tile_residual, whatever the recipe scored with
        scorer.fit_normals(scorer(calibration))
        expected = roc_auc(labels, -scorer.normality(scorer(images)).numpy())
        assert rows[rule]["auc"]["value"] == pytest.approx(expected, abs=1e-9), rule
    assert set(rows["4:two"]["by_anomaly"]) <= {"missing", "misordered", "flipped", "zero"}
