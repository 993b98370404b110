"""``evaluate.json``: the evaluation command's files, and that they agree with each other,
with the model and with the MLflow run (metric formulas themselves: tests/test_metrics.py)."""

from __future__ import annotations

import csv
import json
import re

import mlflow
import numpy as np
import pytest
import torch

from squid_monai.baselines import (
    ControlEnsemble,
    image_stack,
    laplacian_energy,
    nearest_normal_pixels,
    sharpness_score,
)
from squid_monai.evaluation import detector_gain, detector_section
from squid_monai.loading import load_scorer
from squid_monai.metrics import binary_metrics, roc_auc
from squid_monai.scoring import CSV_COLUMNS
from squid_monai.workflow import DigitAnatomySource

from .trained_bundle import CONFIGS, IMAGE_SIZE, TINY, VAL_SIZE, run_command, trained_bundle

BASELINES = ("sharpness", "pixel_knn", "control")
EVAL_CONFIGS = "['bundles/squid/configs/train.json','bundles/squid/configs/evaluate.json']"
FIGURES = (
    "roc.png",
    "score_histogram.png",
    "confusion_matrix.png",
    "confusion_matrix_normal_threshold.png",
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return trained_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluation(bundle):
    """The user's command, as the issue spells it, on the test split (the default is the
    report split)."""
    result = run_command(
        [
            "run",
            "evaluating",
            "--config_file",
            EVAL_CONFIGS,
            "--output_dir",
            str(bundle.output_dir),
            "--eval_split",
            "test",
            *TINY,
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = bundle.output_dir / "eval" / "test"
    with open(folder / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return (
        folder,
        rows,
        json.loads((folder / "metrics.json").read_text()),
        result.stdout + result.stderr,
    )


def _column(rows, key, kind=float):
    return np.array([kind(r[key]) for r in rows])


def test_evaluate_writes_scores_metrics_and_figures(evaluation):
    folder, rows, metrics, stdout = evaluation
    for name in FIGURES:
        assert (folder / name).stat().st_size > 1000, name
    assert tuple(rows[0]) == (
        *CSV_COLUMNS,
        "sharpness_score",
        "pixel_knn_score",
        "control_score",
        "anomaly",
    )  # the layout, then extras
    assert all(r["threshold"] and not r["error"] and not r["heatmap"] for r in rows)
    assert len(rows) == 2 * VAL_SIZE and metrics["n"] == 2 * VAL_SIZE
    assert metrics["n_normal"] == metrics["n_abnormal"] == VAL_SIZE
    assert set(_column(rows, "label", int)) == {0, 1}
    assert re.search(
        r"squid test: AUC \d\.\d{4} \(sharpness baseline \d\.\d{4}, pixel nearest neighbour \d\.\d{4}, "
        r"control ensemble \d\.\d{4}\)",
        stdout,
    )
    assert re.search(
        r"test: squid AUC \d\.\d{4}", stdout
    )  # the report names the family, not a config reference
    # the model records its domain, and its guard stays quiet on the images of that domain
    recipe = json.loads((folder.parents[1] / "models" / "network.json").read_text())
    assert recipe["domain"]["name"] == "digitanatomy" and recipe["domain"]["image_size"] == 32
    assert metrics["domain"]["out_of_domain"] == 0 and metrics["domain"]["not_recorded"] == 0
    assert metrics["domain"]["max_distance"] <= metrics["domain"]["limit"]
    assert {r["domain"] for r in rows} == {"in domain"}


def test_metrics_are_those_of_the_csv_scores_at_the_model_thresholds(evaluation, bundle):
    _, rows, metrics, _ = evaluation
    scorer = load_scorer(bundle.model)
    labels, scores = _column(rows, "label", int), _column(rows, "score")
    detector = metrics["detector"]
    assert "squid" not in metrics  # the learned model's section, whatever its family
    assert detector["auc"] == pytest.approx(roc_auc(labels, scores), abs=1e-12)
    assert (_column(rows, "decision", int) == (scores > scorer.threshold.item())).all()
    for section, threshold in (
        ("at_validation_threshold", scorer.threshold),
        ("at_normal_threshold", scorer.normal_threshold),
    ):
        assert detector[section]["threshold"] == pytest.approx(threshold.item())
        expected = binary_metrics(labels, scores, threshold.item())
        for key in ("accuracy", "f1", "sensitivity", "specificity", "tp", "fp", "tn", "fn"):
            assert detector[section][key] == pytest.approx(expected[key]), (section, key)
    optimistic = detector["best_on_this_set"]
    assert "paper" in optimistic["note"] and "optimistic" in optimistic["note"]
    assert (
        optimistic["f1"] >= detector["at_validation_threshold"]["f1"] - 1e-12
    )  # best on the set cannot lose
    # the calibrated score ranks like its source (it falls as the logit, or the negated residual, rises)
    source = -_column(rows, "logit") if scorer.score_source == "logit" else None
    if source is not None:
        assert roc_auc(labels, source) == pytest.approx(detector["auc"], abs=1e-9)


def test_scores_come_from_the_saved_model_on_the_fixed_test_set(evaluation, bundle):
    _, rows, metrics, _ = evaluation
    data = DigitAnatomySource().validation(
        IMAGE_SIZE, split="test", n_normal=VAL_SIZE, n_abnormal=VAL_SIZE
    )
    images = torch.stack([data[i]["image"].as_tensor() for i in range(len(data))])
    out = load_scorer(bundle.model)(images)
    np.testing.assert_allclose(_column(rows, "logit"), out["logit"].numpy(), atol=1e-5)
    np.testing.assert_allclose(
        _column(rows, "score"), out["score"].numpy(), atol=1e-5
    )  # whatever its source
    # the score ranks like its source quantity (the logit, or the negated residual)
    labels = _column(rows, "label", int)
    normality = load_scorer(bundle.model).normality(out).numpy()
    assert roc_auc(labels, -normality) == pytest.approx(
        roc_auc(labels, out["score"].numpy()), abs=1e-9
    )
    assert (_column(rows, "label", int) == [int(data[i]["label"]) for i in range(len(data))]).all()
    # the sharpness baseline is computed on the same preprocessed images
    np.testing.assert_allclose(
        _column(rows, "sharpness_score"), sharpness_score(images).numpy(), rtol=1e-6
    )
    assert metrics["baseline_sharpness"]["auc"] == pytest.approx(
        roc_auc(labels, _column(rows, "sharpness_score"))
    )
    # the pixel nearest neighbour: to the images the model calibrated on (the first 16 training normals)
    normals = DigitAnatomySource().calibration(IMAGE_SIZE, max_images=16)
    normals = torch.stack([normals[i]["image"].as_tensor() for i in range(len(normals))])
    nearest = [min(((image - n) ** 2).mean().item() for n in normals) for image in images.double()]
    np.testing.assert_allclose(_column(rows, "pixel_knn_score"), nearest, rtol=1e-5)
    assert metrics["baseline_pixel_knn"]["auc"] == pytest.approx(roc_auc(labels, nearest))
    # the control ensemble: the two, standardised on those normals alone (their own copy left out)
    control = ControlEnsemble(normals).ensemble(images)
    np.testing.assert_allclose(
        _column(rows, "control_score"), control.numpy(), rtol=1e-5, atol=1e-5
    )
    assert metrics["baseline_control"]["auc"] == pytest.approx(
        roc_auc(labels, _column(rows, "control_score"))
    )
    # intervals: of each AUC around it, and of the paired detector - baseline differences around them
    for section in (
        metrics["detector"],
        metrics["baseline_sharpness"],
        metrics["baseline_pixel_knn"],
        metrics["baseline_control"],
    ):
        low, high = section["auc_95ci"]
        assert low <= section["auc"] <= high and high - low > 0.01  # 40 images: a wide interval
    for key, base in (
        ("detector_minus_sharpness_auc", "sharpness"),
        ("detector_minus_pixel_knn_auc", "pixel_knn"),
        ("detector_minus_control_auc", "control"),
    ):
        gain = metrics[key]
        assert gain["value"] == pytest.approx(
            metrics["detector"]["auc"] - metrics[f"baseline_{base}"]["auc"]
        )
        assert gain["low"] <= gain["value"] <= gain["high"]


def test_auc_per_anomaly_type_is_all_normals_against_that_type(evaluation):
    _, rows, metrics, _ = evaluation
    labels, kinds = _column(rows, "label", int), _column(rows, "anomaly", str)
    types = sorted(set(kinds[labels == 1]))
    assert len(types) >= 2 and set(metrics["detector"]["auc_by_anomaly"]) == set(types)
    for section, column in (
        ("detector", "score"),
        ("baseline_sharpness", "sharpness_score"),
        ("baseline_pixel_knn", "pixel_knn_score"),
        ("baseline_control", "control_score"),
    ):
        values = _column(rows, column)
        for kind in types:
            keep = (labels == 0) | (kinds == kind)
            expected = roc_auc(labels[keep], values[keep])
            assert metrics[section]["auc_by_anomaly"][kind] == pytest.approx(expected, abs=1e-12), (
                section,
                kind,
            )


def test_sharpness_baseline_scores_smooth_images_as_more_abnormal():
    rng = np.random.default_rng(0)
    sharp = torch.from_numpy(rng.random((1, 1, 16, 16))).float()
    smooth = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1)
    assert laplacian_energy(torch.zeros(1, 1, 8, 8)).item() == 0.0  # flat image: no edges
    s = sharpness_score(torch.cat([sharp, smooth]))
    assert s[1] > s[0]
    with pytest.raises(ValueError, match="B, 1, H, W"):
        sharpness_score(torch.zeros(4, 4))


def test_pixel_nearest_neighbour_baseline_is_the_distance_to_the_closest_normal():
    normals = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 0.5, 1.0)])
    images = torch.stack(
        [torch.full((1, 4, 4), 0.6), normals[2], torch.linspace(0, 1, 16).reshape(1, 4, 4)]
    )
    expected = [min(((img - n) ** 2).mean().item() for n in normals) for img in images]
    torch.testing.assert_close(nearest_normal_pixels(images, normals), torch.tensor(expected))
    assert nearest_normal_pixels(images, normals)[0] == pytest.approx(
        0.01, abs=1e-6
    )  # 0.6 is 0.1 from 0.5
    with pytest.raises(ValueError, match="must share"):
        nearest_normal_pixels(images, normals[:, :, :2])
    items = [
        {"image": np.asarray(n, dtype=np.float64)} for n in normals
    ]  # a dataset, as the bundle gives
    stacked = image_stack(items)
    assert (
        stacked.dtype == torch.float32
        and torch.equal(stacked, normals)
        and torch.equal(image_stack(normals), normals)
    )


def test_evaluation_is_tracked_in_mlflow(evaluation, bundle):
    folder, _, metrics, _ = evaluation
    client = mlflow.MlflowClient(f"sqlite:///{bundle.output_dir / 'mlruns.db'}")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs(e.experiment_id)
        if r.info.run_name == "evaluate-test"
    ]
    assert len(runs) == 1
    run = runs[0]
    expected = {
        "test/auc": metrics["detector"]["auc"],
        "test/auc_95ci_low": metrics["detector"]["auc_95ci"][0],
        **{f"test/baseline_{n}/auc": metrics[f"baseline_{n}"]["auc"] for n in BASELINES},
        "test/detector_minus_control_auc": metrics["detector_minus_control_auc"]["value"],
        "test/detector_minus_pixel_knn_auc": metrics["detector_minus_pixel_knn_auc"]["value"],
        "test/detector_minus_pixel_knn_auc_95ci_low": metrics["detector_minus_pixel_knn_auc"][
            "low"
        ],
        "test/detector_minus_sharpness_auc_95ci_high": metrics["detector_minus_sharpness_auc"][
            "high"
        ],
    }
    for key, value in expected.items():
        assert run.data.metrics[key] == pytest.approx(value), key
    assert not any("squid" in key for key in run.data.metrics)
    assert run.data.params["split"] == "test"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"scores.csv", "metrics.json", *FIGURES} <= logged


def test_validation_split_gives_the_auc_training_reported(bundle):
    """``--eval_split validation`` re-scores the validation set: same AUC as the training's best."""
    from monai.bundle import run

    run(
        "evaluating",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=False,
        output_dir=str(bundle.output_dir),
        eval_split="validation",
        mlflow_tracking=False,
        preset="tiny",
        val_per_class=VAL_SIZE,
    )
    metrics = json.loads((bundle.output_dir / "eval" / "validation" / "metrics.json").read_text())
    reported = float(re.search(r"best validation AUC (\d\.\d+)", bundle.stdout).group(1))
    assert metrics["split"] == "validation"
    assert metrics["detector"]["auc"] == pytest.approx(reported, abs=5e-5)


def test_reports_written_before_the_family_neutral_keys_still_read():
    """``metrics.json`` files of older runs key the model's section ``squid`` and its paired
    differences ``squid_minus_*`` (sharpness: ``squid_minus_baseline_auc``): the readers'
    helpers take both, the new keys first."""
    gain = {"value": 0.1, "low": 0.0, "high": 0.2}
    old = {
        "model": "/runs/models",
        "squid": {"auc": 0.8},
        "squid_minus_baseline_auc": gain,
        "squid_minus_control_auc": {**gain, "value": 0.05},
    }
    assert detector_section(old) == {"auc": 0.8}
    assert detector_gain(old, "sharpness") == gain
    assert detector_gain(old, "control")["value"] == 0.05
    assert detector_gain(old, "pixel_knn") is None  # not computed by that report
    new = {"detector": {"auc": 0.9}, "detector_minus_pixel_knn_auc": gain}
    assert detector_section(new) == {"auc": 0.9} and detector_gain(new, "pixel_knn") == gain
    assert detector_gain(new, "sharpness") is None
    with pytest.raises(KeyError):
        detector_gain(new, "nonsense")
