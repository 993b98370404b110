"""``benchmarks/paired.py``: two variants paired by seed, and the decision rules, on hand-built runs."""

import csv
import json

import numpy as np
import pytest

from benchmarks import paired
from squid_monai.metrics import roc_auc

N = 30  # images per class: a perfect against an inverted ranking is resolved on this many
LABELS = [0] * N + [1] * N
PERFECT = list(np.linspace(0, 1, 2 * N))  # every abnormal above every normal
INVERTED = PERFECT[::-1]
MIXED = [float(v) for v in np.random.default_rng(0).random(2 * N)]


def _run(root, seed, scores, curve=(0.8, 0.9, 0.9), splits=("validation",)):
    run = root / f"seed{seed}"
    (run / "models").mkdir(parents=True)
    (run / "models" / "training_summary.json").write_text(
        json.dumps({"val_auc_per_epoch": {str(i + 1): v for i, v in enumerate(curve)}})
    )
    for split in splits:
        (run / "eval" / split).mkdir(parents=True)
        with open(run / "eval" / split / "scores.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "label", "score", "anomaly"])
            w.writerows([f"{split}#{i}", y, s, "x"] for i, (y, s) in enumerate(zip(LABELS, scores)))


def test_per_seed_aucs_difference_and_aggregates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, 0, PERFECT), _run(b, 0, MIXED)
    _run(a, 1, MIXED), _run(b, 1, MIXED)
    _run(a, 2, MIXED, curve=(0.9, 0.95, 0.9)), _run(b, 2, INVERTED)
    _run(a, 3, PERFECT)  # only in one root: not a pair
    result = paired.compare(a, b, ["validation"])
    assert [r["seed"] for r in result["seeds"]] == [0, 1, 2]
    mixed = roc_auc(LABELS, MIXED)
    v = [1.0, mixed, mixed]
    base = [mixed, mixed, 0.0]
    for r, ev, eb in zip(result["seeds"], v, base):
        c = r["validation"]
        assert c["variant"] == pytest.approx(ev) and c["baseline"] == pytest.approx(eb)
        assert c["difference"] == pytest.approx(ev - eb) and c["n"] == 2 * N
    assert result["seeds"][2]["variant_curve"] == {"drop": 0.05, "std": pytest.approx(0.025)}
    agg = result["aggregate"]["validation"]
    d = np.array(v) - np.array(base)
    half = 4.302653 * d.std(ddof=1) / np.sqrt(3)  # t quantile 0.975 with 2 degrees of freedom
    assert agg["difference"]["mean"] == pytest.approx(d.mean())
    assert agg["difference"]["t_95ci"] == pytest.approx(
        [d.mean() - half, d.mean() + half], rel=1e-5
    )
    assert agg["difference"]["up"] == 2 and agg["difference"]["resolved_gains"] == 2
    assert (
        agg["difference"]["resolved_losses"] == 0
    )  # seed 1: the same scores, difference 0 exactly
    assert agg["variant"]["worst"] == pytest.approx(mixed) and agg["baseline"]["worst"] == 0.0
    assert agg["variant"]["below_target"] == 2 and agg["baseline"]["below_target"] == 3


def _decide(tmp_path, rule, pairs):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, (va, ba, curve) in enumerate(pairs):
        _run(a, seed, va, curve), _run(b, seed, ba)
    return paired.decide(paired.compare(a, b, ["validation"]), rule)


FLAT = (0.9, 0.9, 0.9)


def test_one_resolved_loss_fails_strict_but_not_worst_seed(tmp_path):
    pairs = [(PERFECT, INVERTED, FLAT), (PERFECT, MIXED, FLAT), (MIXED, PERFECT, FLAT)]
    strict = _decide(tmp_path / "s", "strict", pairs)
    assert not strict["adopt"] and not strict["criteria"]["no seed loses (resolved)"]
    worst = _decide(tmp_path / "w", "worst_seed", pairs)
    assert worst["adopt"], worst["criteria"]


def test_worst_seed_rule_fails_on_a_worse_worst_seed_and_on_falls(tmp_path):
    # the mean rises (two seeds gain 1 - m, one loses m, m the mixed AUC, near 0.5) but the
    # variant's worst seed (0) is below the baseline's (m)
    worse = _decide(
        tmp_path / "a",
        "worst_seed",
        [(PERFECT, MIXED, FLAT), (PERFECT, MIXED, FLAT), (INVERTED, MIXED, FLAT)],
    )
    assert worse["criteria"]["mean difference > 0"] and not worse["criteria"]["worst seed no worse"]
    falls = _decide(
        tmp_path / "b", "worst_seed", [(PERFECT, MIXED, (0.9, 0.8)), (PERFECT, MIXED, FLAT)]
    )
    assert not falls["adopt"] and [k for k, ok in falls["criteria"].items() if not ok] == [
        ">= 90% of variant runs fall <= 0.02"
    ]


def test_different_images_are_refused_by_name(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, 0, PERFECT), _run(b, 0, PERFECT)
    rows = (
        (b / "seed0" / "eval" / "validation" / "scores.csv")
        .read_text()
        .replace("validation#0,", "other#0,")
    )
    (b / "seed0" / "eval" / "validation" / "scores.csv").write_text(rows)
    with pytest.raises(ValueError, match="score different images"):
        paired.compare(a, b, ["validation"])
    with pytest.raises(ValueError, match="no seed"):
        paired.decide(paired.compare(a, b, ["report"]), "strict")


def test_command_line_writes_the_table_and_the_decision(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (
        _run(a, 0, PERFECT, splits=("validation", "report")),
        _run(b, 0, MIXED, splits=("validation", "report")),
    )
    assert paired.main(["--variant", str(a), "--baseline", str(b), "--rule", "strict"]) == 0
    table = (a / "paired_b.md").read_text()
    assert "Rule `strict` on validation: **adopt**" in table and "**+" in table
    assert "+- n/a" in table and "+- 0.000" not in table  # one pair has no std
    assert json.loads((a / "paired_b.json").read_text())["decision"]["adopt"] is True
