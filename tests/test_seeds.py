"""``benchmarks/seeds.py``: the multi-seed runner, end to end on the tiny preset, and its tables."""

import json

import numpy as np
import pytest

from benchmarks import seeds

from .trained_bundle import CONFIGS, TINY

REPORT_SIZE = 10


def test_two_seeds_end_to_end_on_validation_and_report(tmp_path):
    root = tmp_path / "runs"
    code = seeds.main(
        [
            "--output_root",
            str(root),
            "--seeds",
            "0",
            "1",
            "--parallel",
            "2",
            "--",
            "--epochs",
            "1",
            *TINY,
            "--report_per_class",
            str(REPORT_SIZE),
            "--mlflow_tracking",
            "false",
        ]
    )
    assert code == 0
    result = json.loads((root / "seeds.json").read_text())
    rows = result["seeds"]
    assert [r["seed"] for r in rows] == [0, 1] and result["failures"] == []
    for r in rows:
        assert (root / f"seed{r['seed']}" / "models" / "model.pt").is_file()
        # evaluation re-scores the validation split of the selected model: the AUC training reported
        assert r["validation"]["auc"] == pytest.approx(r["best_val_auc"], abs=1e-4)
        assert r["report"]["n"] == 2 * REPORT_SIZE and r["best_epoch"] == 1
        low, high = r["report"]["gain_95ci"]
        assert low <= r["report"]["gain"] <= high
        assert r["report"]["gain"] == pytest.approx(
            r["report"]["auc"] - r["report"]["baseline_auc"]
        )
        assert r["val_auc_std_after_warmup"] == 0.0  # one epoch
    report_auc = [r["report"]["auc"] for r in rows]
    assert result["aggregate"]["report"]["auc"]["mean"] == pytest.approx(np.mean(report_auc))
    assert result["aggregate"]["report"]["auc"]["std"] == pytest.approx(np.std(report_auc, ddof=1))
    assert "--seed" in result["train_command"] and "--report_per_class" in result["train_command"]
    table = (root / "seeds.md").read_text()
    assert (
        "| **mean +- std** |" in table
        and "report AUC" in table
        and "validation sharpness AUC" in table
    )


#: the keys of ``metrics.json`` files written before the family-neutral vocabulary
OLD_KEYS = {
    "detector": "squid",
    "detector_minus_sharpness_auc": "squid_minus_baseline_auc",
    "detector_minus_pixel_knn_auc": "squid_minus_pixel_knn_auc",
    "detector_minus_control_auc": "squid_minus_control_auc",
}


def _fake_seed(out, seed, curve, splits=("validation", "report"), old_keys=False):
    (out / "models").mkdir(parents=True)
    summary = {
        "epochs": len(curve),
        "best_epoch": 3,
        "best_val_auc": 0.7,
        "val_auc_per_epoch": curve,
    }
    (out / "models" / "training_summary.json").write_text(json.dumps(summary))
    for i, split in enumerate(splits):
        metrics = {
            "n": 200,
            "detector": {
                "auc": 0.7 + i / 10 + seed / 100,
                "auc_95ci": [0.6, 0.8],
                "at_validation_threshold": {"accuracy": 0.6, "f1": 0.65},
            },
            "baseline_sharpness": {"auc": 0.65},
            "detector_minus_sharpness_auc": {"value": 0.05, "low": -0.02, "high": 0.12},
        }
        metrics["detector"]["auc_by_anomaly"] = {"missing": 0.9 + seed / 100, "zero": 0.8}
        if split == "report":  # the pixel nearest neighbour, where the evaluation reported it
            metrics["baseline_pixel_knn"] = {"auc": 0.75 + seed / 100}
            metrics["detector_minus_pixel_knn_auc"] = {"value": 0.06, "low": 0.01, "high": 0.11}
            metrics["baseline_control"] = {"auc": 0.78 + seed / 100}
            metrics["detector_minus_control_auc"] = {"value": 0.03, "low": -0.01, "high": 0.07}
        if old_keys:  # a run evaluated before the rename
            metrics = {OLD_KEYS.get(k, k): v for k, v in metrics.items()}
        (out / "eval" / split).mkdir(parents=True)
        (out / "eval" / split / "metrics.json").write_text(json.dumps(metrics))


def test_rows_curve_std_and_aggregates_from_the_run_files(tmp_path):
    curve = {
        "1": 0.5,
        "2": 0.9,
        "3": 0.7,
        "4": 0.6,
        "5": 0.8,
        "6": 0.7,
        "7": 0.75,
        "8": 0.7,
        "9": 0.72,
        "10": 0.7,
    }
    for s in (0, 1, 2):  # seed 0 evaluated before the rename: its reports say "squid"
        _fake_seed(tmp_path / f"seed{s}", s, curve, old_keys=s == 0)
    rows = [
        seeds.collect_seed(tmp_path / f"seed{s}", s, ["validation", "report"]) for s in (0, 1, 2)
    ]
    assert seeds.collect_seed(tmp_path / "seed9", 9, ["report"]) is None  # not trained
    # warm-up: the first 30 % of the 10 validated epochs are left out
    assert rows[0]["val_auc_std_after_warmup"] == pytest.approx(
        np.std(list(curve.values())[3:]), abs=1e-4
    )
    agg = seeds.aggregate(rows)
    assert agg["report"]["auc"]["mean"] == pytest.approx(0.81) and agg["report"]["auc"][
        "std"
    ] == pytest.approx(0.01)
    assert agg["validation"]["gain"] == {
        "mean": pytest.approx(0.05),
        "std": pytest.approx(0.0),
        "n": 3,
    }
    single = seeds.aggregate(rows[:1])
    assert single["best_val_auc"]["std"] is None  # one seed: no spread
    table = seeds.markdown(
        {
            "date": "today",
            "train_command": ["python"],
            "evaluate_command": ["python"],
            "splits": ["validation", "report"],
            "warmup_fraction": 0.3,
            "seeds": rows,
            "aggregate": agg,
            "failures": [],
        }
    )
    assert "0.8100 +- 0.0100" in table and "0.0500 [-0.020, 0.120]" in table
    assert (
        agg["report"]["pixel_knn_auc"]["mean"] == pytest.approx(0.76)
        and agg["validation"]["pixel_knn_auc"] is None
    )
    assert "report pixel kNN AUC" in table and "0.0600 [0.010, 0.110]" in table
    assert "| 0 | 3 | 0.7000 | " in table and " | 0.7500 | 0.0600 [0.010, 0.110] | " in table
    assert (
        agg["report"]["control_auc"]["mean"] == pytest.approx(0.79)
        and "report control AUC" in table
    )
    assert " | 0.7500 | 0.0600 [0.010, 0.110] | 0.7800 | 0.0300 [-0.010, 0.070] | " in table
    assert agg["report"]["auc_by_anomaly"]["missing"] == {
        "mean": pytest.approx(0.91),
        "std": pytest.approx(0.01),
        "n": 3,
    }
    assert "| report | 0.9100 +- 0.0100 | 0.8000 +- 0.0000 |" in table


def test_evaluation_defaults_to_the_report_split():
    assert json.loads((CONFIGS / "evaluate.json").read_text())["eval_split"] == "report"


def test_bundle_commands_share_the_evaluation_process_others_run_on_their_own():
    assert seeds._bundle_argv(
        ["python", "-m", "monai.bundle", "run", "training", "--epochs", "2"]
    ) == ["run", "training", "--epochs", "2"]
    assert (
        seeds._bundle_argv(
            ["torchrun", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training"]
        )
        is None
    )
    assert seeds._python(["python", "train.py"])[1:] == ["train.py"]
