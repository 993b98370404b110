"""Finished runs as the multi-seed runner leaves them (``models/training_summary.json`` and
``eval/<split>/metrics.json``), fabricated in a few milliseconds for the study tables' tests."""

from __future__ import annotations

import json
from pathlib import Path


def fake_run(
    out: Path,
    auc: float,
    gain: float = 0.1,
    time_s: float = 100.0,
    splits=("test",),
    knn_gain: float = 0.05,
    control_gain: float = 0.03,
) -> Path:
    """One seed's run folder: best validation AUC ``auc``, and on every split AUC ``auc`` with
    the sharpness baseline ``gain``, the pixel nearest neighbour ``knn_gain`` and the control
    ensemble ``control_gain`` below it."""
    (out / "models").mkdir(parents=True)
    summary = {
        "epochs": 2,
        "best_epoch": 1,
        "best_val_auc": auc,
        "val_auc_per_epoch": {"1": auc, "2": auc},
        "train_time_s": time_s,
    }
    (out / "models" / "training_summary.json").write_text(json.dumps(summary))
    metrics = {
        "n": 200,
        "detector": {
            "auc": auc,
            "auc_95ci": [auc - 0.1, auc + 0.1],
            "at_validation_threshold": {"accuracy": 0.6, "f1": 0.7},
        },
        "baseline_sharpness": {"auc": auc - gain},
        "detector_minus_sharpness_auc": {"value": gain, "low": gain - 0.1, "high": gain + 0.1},
        "baseline_pixel_knn": {"auc": auc - knn_gain},
        "detector_minus_pixel_knn_auc": {
            "value": knn_gain,
            "low": knn_gain - 0.1,
            "high": knn_gain + 0.1,
        },
        "baseline_control": {"auc": auc - control_gain},
        "detector_minus_control_auc": {
            "value": control_gain,
            "low": control_gain - 0.1,
            "high": control_gain + 0.1,
        },
    }
    for split in splits:
        (out / "eval" / split).mkdir(parents=True)
        (out / "eval" / split / "metrics.json").write_text(json.dumps(metrics))
    return out
