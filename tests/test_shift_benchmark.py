"""``benchmarks/shift.py``'s tables: the mean over shifts, the t-interval over seeds and the
differences to the controls, seed by seed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .trained_bundle import REPO

_spec = importlib.util.spec_from_file_location("shift", REPO / "benchmarks" / "shift.py")
shift = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shift)


def _result(seed: int, model: float, control: float) -> dict:
    """A one-split shift result: the model and the controls, unshifted and under two shifts."""
    def row(m, c):
        return {"model": m, "sharpness": c - 0.1, "pixel_knn": c - 0.05, "control": c}

    table = {"none": row(model, control), "blur": row(model - 0.1, control - 0.02), "jpeg": row(model, control)}
    return {"model": f"seed{seed}/model.pt", "method": "ganomaly", "image_size": 64, "intensity": "percentile",
            "seed": seed, "shift_seed": 0, "shifts": {"blur": "b", "jpeg": "j"},
            "splits": {"validation": {"n": 200, "auc": shift.with_mean(table)}}}


def test_mean_over_shifts_leaves_the_unshifted_images_out():
    table = _result(0, 0.9, 0.8)["splits"]["validation"]["auc"]
    assert table["mean_over_shifts"]["model"] == pytest.approx(0.85)  # (0.8 + 0.9) / 2, not (0.9 + 0.8 + 0.9) / 3
    assert table["mean_over_shifts"]["control"] == pytest.approx(0.79)


def test_t_interval_uses_students_critical_value():
    s = shift.t_interval([0.8, 0.9, 1.0])
    assert s["t_critical"] == pytest.approx(4.303, abs=1e-3)  # two degrees of freedom
    assert s["half_width"] == pytest.approx(4.3027 * 0.1 / np.sqrt(3), rel=1e-4) and s["mean"] == pytest.approx(0.9)
    assert shift.t_interval([0.7])["half_width"] is None


def test_combine_takes_differences_seed_by_seed():
    out = shift.combine([_result(0, 0.9, 0.8), _result(1, 0.94, 0.86), _result(2, 0.92, 0.83)])
    rows = out["splits"]["validation"]
    assert rows["model"]["none"]["mean"] == pytest.approx(0.92)
    diff = rows["model"]["mean_over_shifts_minus_control"]
    assert diff["mean"] == pytest.approx(np.mean([0.85 - 0.79, 0.89 - 0.85, 0.87 - 0.82]))
    assert "control_minus_control" not in str(rows["control"].keys())
    text = shift.combined_markdown(out)
    assert "| model | 92.0 +- " in text and "mean over shifts minus control" in text and "2 degrees" in text
