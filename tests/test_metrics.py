"""Metrics against scikit-learn, threshold selection, and the Ignite/MONAI metric wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ROCAUC, from_engine
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from squid_monai.metrics import (
    AnomalyMetrics,
    _auc_rows,
    best_threshold,
    binary_metrics,
    bootstrap_auc,
    evaluate_scores,
    normal_only_threshold,
    roc_auc,
)


def _random_set(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes always present
    # informative but overlapping scores, rounded so that ties occur
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)
    return labels, scores


def test_roc_auc_known_value_and_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie between a normal and an abnormal image counts one half
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc(torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.2, 0.7])) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_on_random_scores(seed):
    labels, scores = _random_set(seed)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    # thresholds include exact score values: the decision must be strictly "score > threshold"
    for thr in (np.median(scores), scores[5], 0.3):
        pred = (scores > thr).astype(int)
        m = binary_metrics(labels, scores, thr)
        tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
        assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
        assert m["f1"] == pytest.approx(f1_score(labels, pred, zero_division=0))
        assert m["precision"] == pytest.approx(precision_score(labels, pred, zero_division=0))
        assert m["sensitivity"] == pytest.approx(recall_score(labels, pred))
        assert m["specificity"] == pytest.approx(recall_score(1 - labels, 1 - pred))
        assert m["threshold"] == thr


def test_score_equal_to_threshold_is_normal():
    m = binary_metrics([0, 1], [0.5, 0.5], 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 1, 1)


def test_undefined_rates_on_single_class_set():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.9], 0.5)
    assert m["fp"] == 1 and m["specificity"] == pytest.approx(2 / 3)
    assert np.isnan(m["sensitivity"]) and m["precision"] == 0.0 and m["f1"] == 0.0


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "only normal"),
        ([1, 1], [0.1, 0.2], "only abnormal"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "non-finite"),
        ([0, 1], [0.1, 0.2, 0.3], "differ in length"),
        ([0, 2], [0.1, 0.2], "must be 0"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(labels, scores)
    with pytest.raises(ValueError, match=match):
        best_threshold(labels, scores)


def test_nan_scores_rejected_everywhere():
    with pytest.raises(ValueError, match="non-finite"):
        binary_metrics([0, 1], [np.nan, 0.2], 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        normal_only_threshold([0.1, np.inf])


def test_best_threshold_constructed_example():
    # abnormal images score 0.6 and 0.9, one normal outlier at 0.7
    labels = [0, 0, 0, 1, 0, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    # F1: cut at 0.45 -> tp 2, fp 1 (F1 0.8); cut at 0.8 -> tp 1 (F1 0.667)
    assert best_threshold(labels, scores, "f1") == pytest.approx(0.45)
    # accuracy: 0.45 and 0.8 both give 5/6 -> tie broken towards the lower (more sensitive) cut
    assert best_threshold(labels, scores, "accuracy") == pytest.approx(0.45)
    # Youden: 0.45 -> 1 + 3/4 - 1 = 0.75, 0.8 -> 0.5 + 1 - 1 = 0.5
    assert best_threshold(labels, scores, "youden") == pytest.approx(0.45)
    with pytest.raises(ValueError, match="unknown criterion"):
        best_threshold(labels, scores, "auc")


def test_best_threshold_may_flag_everything_and_is_midway():
    # when abnormal images dominate, flagging all images maximises F1: the threshold lies below all scores
    labels, scores = [1, 1, 1, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.5]
    thr = best_threshold(labels, scores, "f1")
    assert thr < 0.1 and binary_metrics(labels, scores, thr)["tp"] == 4
    # separable data: Youden's optimum is the midpoint between the two classes
    assert best_threshold([0, 0, 1, 1], [0.0, 0.2, 0.6, 1.0], "youden") == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("criterion", "fn"),
    [
        ("f1", lambda m: m["f1"]),
        ("accuracy", lambda m: m["accuracy"]),
        ("youden", lambda m: m["sensitivity"] + m["specificity"] - 1),
    ],
)
def test_best_threshold_is_optimal_against_brute_force(seed, criterion, fn):
    labels, scores = _random_set(seed)
    u = np.unique(scores)
    every_cut = np.concatenate(([u[0] - 1], u))  # each distinct partition "score > t"
    best_value = max(fn(binary_metrics(labels, scores, t)) for t in every_cut)
    thr = best_threshold(labels, scores, criterion)
    assert fn(binary_metrics(labels, scores, thr)) == pytest.approx(best_value)
    # midway between two scores (or outside the range), never on a score
    assert not np.isclose(scores, thr).any()
    # deterministic tie-breaking: no partition flagging more images reaches the optimum
    # (the largest cut below thr is thr's own partition, hence [:-1])
    lower = every_cut[every_cut < thr][:-1]
    assert all(fn(binary_metrics(labels, scores, t)) < best_value - 1e-12 for t in lower)


def test_normal_only_threshold():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=2000)
    thr = normal_only_threshold(normals, quantile=0.95)
    assert np.mean(normals > thr) == pytest.approx(0.05, abs=0.002)
    assert thr == pytest.approx(np.quantile(normals, 0.95))
    assert normal_only_threshold(normals, 0.99) > thr
    assert normal_only_threshold(normals, 1.0) == normals.max()  # no training normal flagged
    with pytest.raises(ValueError, match="quantile"):
        normal_only_threshold(normals, 0.0)
    with pytest.raises(ValueError, match="empty"):
        normal_only_threshold([])


def test_evaluate_scores_keys_and_values():
    labels, scores = _random_set(7)
    out = evaluate_scores(labels, scores, threshold_val=0.4, threshold_normal=1.2)
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert (
        out["n"] == 60
        and out["n_abnormal"] == labels.sum()
        and out["n_normal"] == 60 - labels.sum()
    )
    for prefix, thr in (("at_val_threshold", 0.4), ("at_normal_threshold", 1.2)):
        assert out[f"{prefix}/threshold"] == thr
        assert out[f"{prefix}/f1"] == pytest.approx(f1_score(labels, scores > thr))
    assert out["best_on_set/threshold"] == best_threshold(labels, scores, "f1")
    # the set-optimal figure is, by construction, at least as good as any fixed threshold
    assert out["best_on_set/f1"] >= max(out["at_val_threshold/f1"], out["at_normal_threshold/f1"])
    only_best = evaluate_scores(labels, scores)
    assert not any(k.startswith("at_") for k in only_best)


def _run_epoch(batches, **metric_kwargs):
    """Run an Ignite engine whose output mimics MONAI's decollated evaluator output."""
    engine = Engine(lambda e, batch: batch)
    AnomalyMetrics(output_transform=from_engine(["score", "label"]), **metric_kwargs).attach(
        engine, "val"
    )
    ROCAUC(output_transform=from_engine(["score", "label"])).attach(engine, "val_auc")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics


def test_ignite_metrics_match_functions_and_monai_rocauc():
    labels, scores = _random_set(3, n=50)
    # decollated: a list of per-item dicts with 0-d tensors, batches of uneven size
    items = [
        {"score": torch.tensor(s, dtype=torch.float32), "label": torch.tensor(y)}
        for s, y in zip(scores, labels)
    ]
    batches = [items[i : i + 16] for i in range(0, 50, 16)]
    metrics = _run_epoch(batches, threshold_val=0.4, threshold_normal=lambda: 1.0)
    expected = evaluate_scores(labels, scores.astype(np.float32), 0.4, 1.0)
    assert {k: metrics[f"val/{k}"] for k in expected} == pytest.approx(expected)
    assert "val" not in metrics  # only flat float entries, safe for MLflow and stats handlers
    # MONAI's handler is the key metric in the configs: same AUC, ties included
    assert metrics["val_auc"] == pytest.approx(expected["auc"])


def test_ignite_metrics_accept_batched_tensors():
    labels, scores = _random_set(4, n=32)
    batches = [
        {"score": torch.tensor(scores[i : i + 8, None]), "label": torch.tensor(labels[i : i + 8])}
        for i in range(0, 32, 8)
    ]
    engine = Engine(lambda e, batch: batch)
    AnomalyMetrics(output_transform=lambda o: (o["score"], o["label"])).attach(engine, "m")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["m/auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert engine.state.metrics["m/best_on_set/threshold"] == best_threshold(labels, scores)


def test_vectorised_auc_matches_sklearn_rows_with_ties_and_repeats():
    rng = np.random.default_rng(0)
    labels, scores = _random_set(1)
    idx = rng.integers(0, labels.size, (20, labels.size))  # bootstrap-like repeats
    idx[:, :2] = (0, 1)
    expected = [roc_auc_score(labels[i], scores[i]) for i in idx]
    np.testing.assert_allclose(_auc_rows(labels[idx], scores[idx]), expected, rtol=1e-12)


def test_bootstrap_auc_interval_brackets_the_estimate_and_narrows_with_more_images():
    small, large = _random_set(2, n=60), _random_set(2, n=600)
    a, b = bootstrap_auc(*small), bootstrap_auc(*large)
    for result, (labels, scores) in ((a, small), (b, large)):
        assert result["value"] == pytest.approx(roc_auc(labels, scores))
        assert result["low"] < result["value"] < result["high"]
    assert (b["high"] - b["low"]) < 0.6 * (a["high"] - a["low"])  # ~ 1 / sqrt(10) expected
    assert bootstrap_auc(*small) == a  # seeded: the same interval every time
    assert bootstrap_auc(*small, seed=1) != a


def test_bootstrap_auc_of_a_perfect_ranking_is_one_without_spread():
    labels = np.array([0, 0, 0, 1, 1, 1])
    result = bootstrap_auc(labels, labels * 2.0 + 0.1, n_resamples=200)
    assert (result["value"], result["low"], result["high"]) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_difference():
    labels, scores = _random_set(3, n=200)
    same = bootstrap_auc(labels, scores, reference=scores.copy())
    assert (same["value"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    noise = np.random.default_rng(3).normal(size=labels.size)
    better = bootstrap_auc(labels, scores, reference=noise)
    assert better["value"] == pytest.approx(roc_auc(labels, scores) - roc_auc(labels, noise))
    assert better["low"] > 0  # informative scores beat noise, and the interval says so
    # pairing removes the images' shared difficulty: a small shift of the same scores is
    # resolved far more tightly than either AUC alone
    nudged = bootstrap_auc(labels, scores + 0.05 * noise, reference=scores)
    alone = bootstrap_auc(labels, scores)
    assert nudged["high"] - nudged["low"] < 0.5 * (alone["high"] - alone["low"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": 1.0}, "level"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"reference": [0.1, 0.2]}, "mismatch|length|scores"),
    ],
)
def test_bootstrap_auc_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], **kwargs)


def test_optional_auc_scores_the_key_when_present_and_writes_nothing_without_it():
    from ignite.engine import Engine

    from squid_monai.metrics import OptionalAUC

    def run(batches):
        engine = Engine(lambda e, b: b)
        OptionalAUC("score_feature").attach(engine, "val_auc_feature")
        engine.run(batches)
        return engine.state.metrics

    label = torch.tensor([0, 1, 0, 1])
    with_key = [
        {"label": label, "score_feature": torch.tensor([0.1, 0.9, 0.2, 0.3])},
        {"label": label, "score_feature": torch.tensor([0.5, 0.4, 0.0, 0.8])},
    ]
    expected = roc_auc(
        torch.cat([label, label]).numpy(), np.array([0.1, 0.9, 0.2, 0.3, 0.5, 0.4, 0.0, 0.8])
    )
    assert run(with_key)["val_auc_feature"] == pytest.approx(expected)
    assert run([{"label": label, "score": torch.rand(4)}]) == {}


def test_auc_by_anomaly_is_every_normal_against_one_type():
    from squid_monai.metrics import auc_by_anomaly

    labels = [0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.8, 0.15, 0.25]
    kinds = ["normal", "normal", "normal", "zero", "zero", "missing", "missing"]
    result = auc_by_anomaly(labels, scores, kinds)
    assert result == {
        "missing": pytest.approx(roc_auc([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.15, 0.25])),
        "zero": 1.0,
    }
    assert result["missing"] == pytest.approx(
        3 / 6
    )  # 0.15 beats one normal, 0.25 two, of six pairs
    assert auc_by_anomaly([1, 1], [0.5, 0.6], ["zero", "zero"]) == {}  # no normals: no AUC
    assert auc_by_anomaly(labels, scores, [""] * 7) == {}  # no types (chest X-rays)
