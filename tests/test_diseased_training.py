"""``benchmarks/diseased_training.py`` (the paper's Figure 10): its datalists, the runs it would
train, and its table from fabricated finished runs."""

import json

import pytest

from .fake_runs import fake_run
from .test_compare import _load

diseased = _load("diseased_training")
SIZES = ["--val_per_class", "2", "--report_per_class", "2"]


@pytest.fixture
def zhanglab(tmp_path):
    """train: 30 normal images of 30 patients, 40 pneumonia of 40 (empty files: never read)."""
    root = tmp_path / "zhanglab"
    for folder, names in (
        ("NORMAL", [f"IM-{p:04d}-0001.jpeg" for p in range(30)]),
        ("PNEUMONIA", [f"person{p}_bacteria_{p}.jpeg" for p in range(40)]),
    ):
        (root / "train" / folder).mkdir(parents=True)
        for name in names:
            (root / "train" / folder / name).touch()
    return root


def test_dry_run_writes_one_datalist_per_share_and_calibrates_on_training(
    zhanglab, tmp_path, capsys
):
    root = tmp_path / "runs"
    assert (
        diseased.main(
            [
                "--dataset_dir",
                str(zhanglab),
                "--output_root",
                str(root),
                "--fractions",
                "0",
                "0.25",
                "0.5",
                "--families",
                "squid",
                "ganomaly",
                "--seeds",
                "0",
                *SIZES,
                "--dry_run",
            ]
        )
        == 0
    )
    lists = {
        f: json.loads((root / "datalists" / f"abnormal_{f}.json").read_text())
        for f in ("00", "25", "50")
    }
    for f, datalist in lists.items():
        train = datalist["training"]
        share = sum(it["label"] for it in train) / len(train)
        assert share == pytest.approx(int(f) / 100, abs=0.02)
        assert sum(it["label"] == 0 for it in train) == 26  # the same normals at every share
        for split in ("validation", "report"):
            assert datalist[split] == lists["00"][split]
    trainings = [line for line in capsys.readouterr().out.splitlines() if " run training " in line]
    assert len(trainings) == 6 and sum("methods/ganomaly.json" in t for t in trainings) == 3
    assert all("--calibrate_on training" in t and "--dataset_dir" not in t for t in trainings)
    assert (
        "chest_cpu.json" in trainings[0]
        and f"--datalist {root}/datalists/abnormal_25.json" in trainings[1]
    )


def test_table_and_the_change_at_the_largest_share(zhanglab, tmp_path):
    aucs = {
        "squid_abnormal_00": (0.80, 0.82),
        "squid_abnormal_50": (0.81, 0.80),
        "memae_abnormal_00": (0.80, 0.81),
        "memae_abnormal_50": (0.60, 0.61),
    }
    for run, per_seed in aucs.items():
        for seed, auc in enumerate(per_seed):
            fake_run(tmp_path / run / f"seed{seed}", auc, splits=("validation", "report"))
    assert (
        diseased.main(
            [
                "--dataset_dir",
                str(zhanglab),
                "--output_root",
                str(tmp_path),
                "--fractions",
                "0",
                "0.5",
                "--methods",
                "squid",
                "memae",
                "--seeds",
                "0",
                "1",
                *SIZES,
                "--collect",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "diseased_training.json").read_text())
    squid, memae = (
        result["methods"]["squid"]["change"]["report"],
        result["methods"]["memae"]["change"]["report"],
    )
    assert squid["points"] == pytest.approx(-0.5) and squid["resolved_drop"] is False
    assert memae["points"] == pytest.approx(-20.0) and memae["resolved_drop"] is True
    table = (tmp_path / "diseased_training.md").read_text()
    assert (
        "| memae | 50 % | 2 | 60.5 +- 0.7 |" in table
        and "| memae | report | -20.0 +- 0.7 | yes |" in table
    )
    assert (tmp_path / "diseased_training.png").stat().st_size > 1000


def test_one_seed_resolves_nothing():
    one = {"mean": 0.8, "std": None, "n": 1}
    assert diseased.change(one, {**one, "mean": 0.5}) == {
        "points": pytest.approx(-30.0),
        "se": None,
        "resolved_drop": None,
    }


def test_a_drop_is_resolved_by_welchs_t_interval_not_two_standard_errors():
    # 10 points down, std 5 points at both shares over 3 seeds each: SE 4.1; two SE (8.2) would
    # resolve it, Welch's t (4 degrees of freedom here, 2.78) needs 11.3
    first, last = {"mean": 0.8, "std": 0.05, "n": 3}, {"mean": 0.7, "std": 0.05, "n": 3}
    c = diseased.change(first, last)
    assert c["points"] == pytest.approx(-10.0) and c["se"] == pytest.approx(4.0825, rel=1e-4)
    assert c["resolved_drop"] is False
    assert diseased.change(first, {**last, "mean": 0.65})["resolved_drop"] is True  # 15 > 11.3
    flat = diseased.change({**first, "std": 0.0}, {**last, "std": 0.0})
    assert flat["resolved_drop"] is True  # no spread at all
