"""The pre-registered confirmation rule reads the paired differences and can say no."""

import json

import pytest

from benchmarks import confirm
from benchmarks.shift import t_interval


def _combined(model, control, sharpness, pixel_knn, split="report"):
    rows = {}
    per = {"model": model, "control": control, "sharpness": sharpness, "pixel_knn": pixel_knn}
    for score, values in per.items():
        row = {}
        for condition in ("none", "mean_over_shifts"):
            row[condition] = t_interval(values)
            for ref in ("control", "sharpness", "pixel_knn"):
                if ref != score:
                    row[f"{condition}_minus_{ref}"] = t_interval(
                        [a - b for a, b in zip(values, per[ref])]
                    )
        rows[score] = row
    return {"models": ["a", "b", "c"][: len(model)], "family": "x", "splits": {split: rows}}


def test_confirms_a_clear_win_and_reports_targets_apart():
    combined = _combined([0.90, 0.91, 0.92], [0.80, 0.80, 0.81], [0.70, 0.72, 0.71], [0.75] * 3)
    decision = confirm.decide(combined, "chest_recipe", "model")
    assert decision["confirmed"]
    assert decision["targets"]["mean over shifts >= control + 0.10"]
    assert not decision["targets"]["report AUC unshifted >= 0.95"]


def test_refuses_a_win_the_interval_does_not_carry():
    # the mean difference to the control is positive but one seed loses: the interval spans 0
    combined = _combined([0.90, 0.78, 0.92], [0.80, 0.80, 0.81], [0.70, 0.72, 0.71], [0.75] * 3)
    decision = confirm.decide(combined, "chest_recipe", "model")
    assert decision["criteria"]["none: beats control"]["difference"] > 0
    assert not decision["criteria"]["none: beats control"]["holds"]
    assert not decision["confirmed"]


def test_needs_three_seeds_and_the_report_split(tmp_path):
    two = _combined([0.90, 0.91], [0.80, 0.80], [0.70, 0.72], [0.75] * 2)
    assert not confirm.decide(two, "chest_recipe", "model")["confirmed"]
    with pytest.raises(SystemExit, match="no 'report' split"):
        confirm.decide(
            _combined([0.9] * 3, [0.8] * 3, [0.7] * 3, [0.7] * 3, "validation"),
            "chest_recipe",
            "model",
        )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_combined([0.9, 0.91, 0.92], [0.8] * 3, [0.7] * 3, [0.7] * 3)))
    assert (
        confirm.main([str(path), "--rule", "chest_recipe", "--out", str(tmp_path / "d.json")]) == 0
    )
    assert json.loads((tmp_path / "d.json").read_text())["confirmed"] is True
