"""``benchmarks/scores.py``: the source documents' scores on one trained model."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from squid_monai.loading import build_scorer, save_network_config
from squid_monai.scoring import calibrate

from .trained_bundle import trained_bundle


def _benchmark():
    module = importlib.import_module("benchmarks.scores")
    return module


def test_two_sided_and_fused_scores_standardise_on_the_normal_images_only():
    scores = _benchmark()
    normal = {
        "feature": np.array([1.0, 3.0]),
        "residual": np.array([10.0, 14.0]),
    }  # means 2 and 12, std 1 and 2
    split = {"feature": np.array([-1.0, 2.0, 5.0]), "residual": np.array([12.0, 8.0, 16.0])}
    np.testing.assert_allclose(scores.two_sided(split, normal, "feature"), [3.0, 0.0, 3.0])
    np.testing.assert_allclose(scores.two_sided(split, normal, "residual"), [0.0, 2.0, 2.0])
    np.testing.assert_allclose(
        scores.fused(split, normal, 0.25),
        0.25 * np.array([0.0, -2.0, 2.0]) + 0.75 * np.array([-3.0, 0.0, 3.0]),
    )
    # the score of an image does not depend on the other images of its split
    np.testing.assert_allclose(
        scores.two_sided({"feature": split["feature"][:1]}, normal, "feature"), [3.0]
    )


def test_every_score_is_reported_on_every_split(tmp_path_factory, tmp_path):
    bundle = trained_bundle(tmp_path_factory)
    scores = _benchmark()
    results = scores.main(
        [
            "--model_dir",
            str(bundle.output_dir / "models"),
            "--per_class",
            "10",
            "--out",
            str(tmp_path / "s.json"),
        ]
    )
    for split in ("validation", "report"):
        assert set(results[split]) == {*scores.SCORES, *scores.BASELINES}
        assert all(0.0 <= row["auc"]["value"] <= 1.0 for row in results[split].values())
    assert results["gamma"] in scores.GAMMAS


def test_a_model_of_the_chest_recipe_scoring_by_the_combined_source(tmp_path):
    """The chest recipe's score source (``combined``) on a tiny untrained model saved as the
    bundle saves it: every score is reported (issue 39: ``KeyError: 'tokens'``)."""
    from squid_monai.methods.squid.networks.memory import MemoryQueue

    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    queues = [m for m in scorer.modules() if isinstance(m, MemoryQueue)]
    for queue in queues:  # filled, as training fills them
        regions, slots, dim = queue.memory.shape
        queue.enqueue(torch.rand(slots, regions, dim))
    scorer.set_score_source("combined")
    calibrate(scorer, [torch.rand(4, 1, 32, 32)])
    models = tmp_path / "models"
    models.mkdir()
    torch.save(scorer.state_dict(), models / "model.pt")
    save_network_config(models / "network.json", "tiny")
    scores = _benchmark()
    out = tmp_path / "s.json"
    results = scores.main(["--model_dir", str(models), "--per_class", "6", "--out", str(out)])
    assert set(results["report"]) == {*scores.SCORES, *scores.BASELINES}
    assert all(0.0 <= row["auc"]["value"] <= 1.0 for row in results["report"].values())
