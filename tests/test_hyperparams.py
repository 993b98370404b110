"""``benchmarks/hyperparams.py`` (the paper's Figure 9): the runs it would train, and its
table and claims from fabricated finished runs."""

import json

from .fake_runs import fake_run
from .test_compare import _load

hyperparams = _load("hyperparams")
SMALL = ["--preset", "small", "--settings", "tiles", "queue_slots"]  # small: 2 x 2 tiles, 200 slots


def test_dry_run_trains_each_value_once_and_the_preset_value_as_one_default(tmp_path, capsys):
    root = tmp_path / "runs"
    assert hyperparams.main(["--output_root", str(root), "--seeds", "0", *SMALL, "--dry_run", "--", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    runs = [line[2:] for line in out.splitlines() if line.startswith("# ")]
    assert runs == ["tiles_1", "default", "tiles_4", "queue_slots_50", "queue_slots_100", "queue_slots_500",
                    "queue_slots_1000"]
    trainings = [line for line in out.splitlines() if " run training " in line]
    assert len(trainings) == 7 and all("--preset small" in t and "--epochs 1" in t for t in trainings)
    assert "--network_overrides \"{'tiles': 1}\"" in trainings[0] and "--network_overrides" not in trainings[1]
    assert "--network_overrides \"{'queue_slots': 1000}\"" in trainings[-1]
    assert not root.exists()


def test_table_and_claims_from_finished_runs(tmp_path):
    aucs = {"tiles_1": 0.60, "default": 0.80, "tiles_4": 0.70, "queue_slots_50": 0.65, "queue_slots_100": 0.75,
            "queue_slots_500": 0.78, "queue_slots_1000": 0.72}
    for run, auc in aucs.items():
        for seed in (0, 1):
            fake_run(tmp_path / run / f"seed{seed}", auc + seed / 100, time_s=50)
    assert hyperparams.main(["--output_root", str(tmp_path), "--seeds", "0", "1", *SMALL, "--collect"]) == 0
    result = json.loads((tmp_path / "hyperparams.json").read_text())
    tiles, slots = result["settings"]["tiles"], result["settings"]["queue_slots"]
    assert (tiles["best"], tiles["worst"], tiles["holds"]) == (2, 1, "yes")
    assert (slots["best"], slots["worst"], slots["holds"]) == (200, 50, "yes")
    assert [e["run"] for e in slots["runs"]][2] == "default" and result["primary_split"] == "test"
    table = (tmp_path / "hyperparams.md").read_text()
    assert "| tiles | 1 | tiles_1 | 2 | 60.5 +- 0.7 |" in table
    tiles_1 = next(line for line in table.splitlines() if line.startswith("| tiles | 1 |"))
    assert tiles_1.endswith("| -20.0 +- 0.0 | 50 |")  # paired with the default seed by seed, in points
    assert tiles["runs"][0]["vs_default"]["test"]["resolved"] is True  # the same 20-point drop on both seeds
    assert "| queue_slots | 200 items per region is best; above 500 the AUC drops | 200 | 50 | yes |" in table
    assert "python benchmarks/hyperparams.py" in table and "--collect" in table
    assert (tmp_path / "hyperparams.png").stat().st_size > 1000


def test_claims_can_fail():
    assert hyperparams.claim_holds("tiles", {1: 0.7, 2: 0.6, 4: 0.65}) == "no"
    assert hyperparams.claim_holds("queue_slots", {200: 0.8, 500: 0.7, 1000: 0.75}) == "no"  # 1000 above 500
    assert hyperparams.claim_holds("queue_slots", {200: 0.8, 500: 0.7}) == "-"  # 1000 not run
    assert hyperparams.claim_holds("mask_prob", {0.9: 0.8, 0.95: 0.7}) == "no"
    assert hyperparams.claim_holds("top_k", {5: 0.8}) == "-"
