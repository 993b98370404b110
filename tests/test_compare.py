"""``benchmarks/compare.py`` (methods side by side), ``benchmarks/figure6.py`` (one
reconstruction row per model), ``benchmarks/heatmaps.py`` (the heat maps' pointing game) and
``benchmarks/brightness.py`` (the reconstruction's level on background and strokes)."""

import importlib
import json
import shlex

import pytest
import torch
from PIL import Image

from .fake_runs import fake_run
from .trained_bundle import trained_bundle


def _load(name):
    """A benchmark command's module, imported as the package module it is."""
    return importlib.import_module(f"benchmarks.{name}")


compare, figure6, heatmaps, brightness = (
    _load("compare"),
    _load("figure6"),
    _load("heatmaps"),
    _load("brightness"),
)


def test_dry_run_prints_every_training_and_evaluation_and_runs_nothing(tmp_path, capsys):
    assert (
        compare.main(
            [
                "--data",
                "digitanatomy",
                "--output_root",
                str(tmp_path / "runs"),
                "--families",
                "squid",
                "memae",
                "--seeds",
                "0",
                "1",
                "--dry_run",
                "--",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    trainings = [line for line in lines if " run training " in line]
    assert (
        len(trainings) == 4 and len(lines) == 8
    )  # (method, seed): training + the test-split evaluation
    assert sum("methods/memae.json" in line for line in trainings) == 2
    assert all(line.endswith("--eval_split test") for line in lines if " run evaluating " in line)
    assert all("--epochs 2" in line for line in lines) and not (tmp_path / "runs").exists()


def test_each_method_trains_with_its_config_merged_after_train_json():
    squid, memae = (shlex.split(compare.train_command(m)) for m in ("squid", "memae"))
    assert squid[:5] == ["python", "-m", "monai.bundle", "run", "training"]
    assert squid[-2:] == ["--config_file", "['bundles/squid/configs/train.json']"]
    assert (
        memae[-1]
        == "['bundles/squid/configs/train.json','bundles/squid/configs/methods/memae.json']"
    )


def test_table_gives_mean_and_std_over_seeds_beside_the_paper(tmp_path):
    for seed, auc, knn_gain in ((0, 0.70, 0.02), (1, 0.80, 0.04)):
        fake_run(
            tmp_path / "digitanatomy" / "memae" / f"seed{seed}",
            auc,
            0.1,
            100 + seed * 20,
            knn_gain=knn_gain,
        )
    assert (
        compare.main(
            [
                "--data",
                "digitanatomy",
                "--output_root",
                str(tmp_path),
                "--methods",
                "memae",
                "--seeds",
                "0",
                "1",
                "--collect",
                "--",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    table = (tmp_path / "digitanatomy" / "compare.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| memae"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:7] == [
        "memae",
        "2",
        "75.0 +- 7.1",
        "60.0 +- 0.0",
        "70.0 +- 0.0",
        "65.0 +- 7.1",
        "+10.0 +- 0.0",
    ]
    assert cells[7:9] == [
        "72.0 +- 5.7",
        "+3.0 +- 1.4",
    ]  # the pixel nearest neighbour, and the gain over it
    assert cells[9:11] == [
        "72.0 +- 7.1",
        "+3.0 +- 0.0",
    ]  # the control ensemble, and the gain over it
    assert cells[11] == "110" and cells[12] == compare.PAPER_ZHANGLAB["memae"]
    assert "--epochs 2" in table


def test_paired_difference_is_resolved_by_the_t_interval_for_the_seed_count():
    # three seeds 1, 2 and 3 points down: mean -2, std 1; two standard errors (1.15) would call
    # it resolved, the 95 % t interval with 2 degrees of freedom (half width 2.48) does not
    reference = [{"seed": s, "report": {"auc": 0.8}} for s in range(3)]
    down = [{"seed": s, "report": {"auc": 0.8 - d}} for s, d in enumerate((0.01, 0.02, 0.03))]
    d = compare.paired(reference, down, "report")
    assert d["mean"] == pytest.approx(-0.02) and d["std"] == pytest.approx(0.01) and d["n"] == 3
    assert d["t_95ci"] == pytest.approx([-0.02 - 0.0248414, -0.02 + 0.0248414], rel=1e-5)
    assert d["resolved"] is False
    steady = [{"seed": s, "report": {"auc": 0.8 - d}} for s, d in enumerate((0.045, 0.05, 0.055))]
    assert compare.paired(reference, steady, "report")["resolved"] is True  # -0.05 +- 0.0124
    assert compare.paired(reference, down[:1], "report")["resolved"] is None  # one seed: no spread


def test_figure6_has_one_row_per_model_and_the_inpainting_rates(tmp_path_factory, tmp_path):
    bundle = trained_bundle(tmp_path_factory)
    out = tmp_path / "figure6.png"
    report = figure6.main(
        [
            "--out",
            str(out),
            "--n_per_type",
            "2",
            "--model",
            f"a={bundle.output_dir / 'models'}",
            "--model",
            f"b={bundle.output_dir / 'models'}",
        ]
    )
    assert set(report) == {"a", "b"} and report["a"] == report["b"]
    assert all(0.0 <= v <= 1.0 for k, v in report["a"].items() if k.startswith("inpainted/"))
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["columns"][-1] == "blank" and len(saved["columns"]) == 5
    with Image.open(out) as png:
        assert png.size[1] > png.size[0] / 6  # four rows: input, normal, a, b


def test_figure6_needs_a_named_model(tmp_path):
    with pytest.raises(SystemExit):
        figure6.main(["--out", str(tmp_path / "f.png"), "--model", "no-folder-given"])


def test_heatmaps_point_per_explainer_beside_chance(tmp_path_factory, tmp_path):
    bundle = trained_bundle(tmp_path_factory)
    out = tmp_path / "heatmaps.png"
    report = heatmaps.main(
        ["--out", str(out), "--n_per_type", "2", "--model", f"a={bundle.output_dir / 'models'}"]
    )
    assert set(report) == {"chance", "a"} and set(report["a"]) == {"score", "discriminator"}
    kinds = ("missing", "misordered", "flipped", "zero", "all")
    assert all(set(rates) == {f"pointing/{k}" for k in kinds} for rates in report["a"].values())
    assert all(0.0 <= v <= 1.0 for rates in report["a"].values() for v in rates.values())
    # chance: the affected share of the nine cells, at least one cell of nine for every type
    assert all(1 / 9 <= v < 1.0 for v in report["chance"].values())
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["pointing"] == report and len(saved["columns"]) == 4
    with Image.open(out) as png:
        assert png.size[1] > png.size[0] / 4  # three rows: input, a score, a discriminator


def test_heatmaps_on_chest_x_rays_give_the_border_share_per_class(
    tmp_path_factory, tmp_path, shared_data
):
    bundle = trained_bundle(tmp_path_factory)
    out = tmp_path / "chest.png"
    report = heatmaps.main(
        [
            "--out",
            str(out),
            "--dataset_dir",
            str(shared_data / "zhanglab224"),
            "--seed",
            "0",
            "--model",
            f"a={bundle.output_dir / 'models'}",
        ]
    )
    assert (
        0.4 < report["uniform"] < 0.5
    )  # 1 - (1 - 2/8)^2 up to the band's rounding to whole pixels
    assert set(report["a"]) == {"score", "discriminator"}
    for shares in report["a"].values():
        assert set(shares) == {"border/normal", "border/abnormal"} and all(
            0 <= v <= 1 for v in shares.values()
        )
    border = heatmaps.border_share(torch.ones(2, 16, 16), 1 / 8)
    torch.testing.assert_close(border, torch.full((2,), 1 - (12 / 16) ** 2))
    assert json.loads(out.with_suffix(".json").read_text())["border"] == report


def test_output_levels_on_a_hand_built_image():
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, :2] = 0.8  # top half strokes, bottom half background
    recon = torch.full_like(x, 0.3)
    recon[:, :, :2] = 0.6
    assert brightness.output_levels(x, recon) == pytest.approx(
        {"background": 0.3, "strokes": 0.6, "strokes_input": 0.8}
    )
    with pytest.raises(ValueError, match="background"):
        brightness.output_levels(torch.zeros(1, 1, 4, 4), recon[:1])


def test_brightness_of_a_trained_model(tmp_path_factory, tmp_path):
    bundle = trained_bundle(tmp_path_factory)
    levels = brightness.main(
        [
            "--n",
            "2",
            "--model",
            f"a={bundle.output_dir / 'models'}",
            "--json",
            str(tmp_path / "l.json"),
        ]
    )
    assert set(levels["a"]) == {"background", "strokes", "strokes_input"}
    assert (
        all(0.0 <= v <= 1.0 for v in levels["a"].values()) and levels["a"]["strokes_input"] > 0.05
    )
    assert json.loads((tmp_path / "l.json").read_text()) == levels


def test_families_flag_and_its_hidden_old_name():
    """``--families`` picks the rows; ``--methods`` (its old name) still parses, unlisted."""
    parser = compare._parser()
    base = ["--data", "digitanatomy", "--output_root", "runs"]
    assert parser.parse_args(base).families == list(compare.FAMILIES)
    assert parser.parse_args([*base, "--families", "memae"]).families == ["memae"]
    assert parser.parse_args([*base, "--methods", "squid", "daad"]).families == ["squid", "daad"]
    assert "--families" in parser.format_help() and "--methods" not in parser.format_help()
