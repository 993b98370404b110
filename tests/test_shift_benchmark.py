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

    table = {
        "none": row(model, control),
        "blur": row(model - 0.1, control - 0.02),
        "jpeg": row(model, control),
    }
    return {
        "model": f"seed{seed}/model.pt",
        "family": "ganomaly",
        "image_size": 64,
        "intensity": "percentile",
        "seed": seed,
        "shift_seed": 0,
        "shifts": {"blur": "b", "jpeg": "j"},
        "splits": {"validation": {"n": 200, "auc": shift.with_mean(table)}},
    }


def test_mean_over_shifts_leaves_the_unshifted_images_out():
    table = _result(0, 0.9, 0.8)["splits"]["validation"]["auc"]
    assert table["mean_over_shifts"]["model"] == pytest.approx(
        0.85
    )  # (0.8 + 0.9) / 2, not (0.9 + 0.8 + 0.9) / 3
    assert table["mean_over_shifts"]["control"] == pytest.approx(0.79)


def test_t_interval_uses_students_critical_value():
    s = shift.t_interval([0.8, 0.9, 1.0])
    assert s["t_critical"] == pytest.approx(4.303, abs=1e-3)  # two degrees of freedom
    assert s["half_width"] == pytest.approx(4.3027 * 0.1 / np.sqrt(3), rel=1e-4) and s[
        "mean"
    ] == pytest.approx(0.9)
    assert shift.t_interval([0.7])["half_width"] is None


def test_combine_takes_differences_seed_by_seed():
    out = shift.combine([_result(0, 0.9, 0.8), _result(1, 0.94, 0.86), _result(2, 0.92, 0.83)])
    rows = out["splits"]["validation"]
    assert rows["model"]["none"]["mean"] == pytest.approx(0.92)
    diff = rows["model"]["mean_over_shifts_minus_control"]
    assert diff["mean"] == pytest.approx(np.mean([0.85 - 0.79, 0.89 - 0.85, 0.87 - 0.82]))
    assert "control_minus_control" not in str(rows["control"].keys())
    text = shift.combined_markdown(out)
    assert (
        "| model | 92.0 +- " in text
        and "mean over shifts minus control" in text
        and "2 degrees" in text
    )
    base = [_result(seed, 0.9, 0.8) for seed in (2, 0, 1)]  # matched by seed, not by order
    paired = shift.combine(
        [_result(0, 0.9, 0.8), _result(1, 0.94, 0.86), _result(2, 0.92, 0.83)], base
    )
    assert paired["splits"]["validation"]["model"]["none_minus_against"]["mean"] == pytest.approx(
        0.02
    )
    assert "unshifted minus against" in shift.combined_markdown(paired)
    with pytest.raises(SystemExit, match="same seeds"):
        shift.combine([_result(0, 0.9, 0.8)], [_result(5, 0.9, 0.8)])


def _folder(root, n_normal: int = 24, n_abnormal: int = 10):
    """``normal/`` and ``abnormal/`` 8-bit PNGs: textured normals, smoother abnormals."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind, n, texture in (("normal", n_normal, 60), ("abnormal", n_abnormal, 15)):
        (root / kind).mkdir(parents=True)
        for i in range(n):
            base = np.linspace(40, 200, 48)[None, :] * np.ones((48, 1))
            pixels = np.clip(base + rng.normal(0, texture, (48, 48)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / kind / f"{kind}{i:02d}.png")
    return root


def _model(folder):
    import torch

    from squid_monai.artifact import Recipe
    from squid_monai.loading import build, save_network_config
    from squid_monai.workflow import save_preprocessing

    folder.mkdir()
    recipe = Recipe("tiny", {}, family="ganomaly")
    save_network_config(folder / "network.json", recipe)
    save_preprocessing(folder, intensity="percentile")
    torch.manual_seed(0)
    torch.save({"model": build(recipe).state_dict()}, folder / "model.pt")
    return folder


def test_shift_test_scores_the_shifted_images_with_every_score_and_control(tmp_path):
    import torch
    from monai.data import Dataset

    from squid_monai.baselines import ControlEnsemble, image_stack, sharpness_score
    from squid_monai.metrics import roc_auc
    from squid_monai.transforms.shifts import shifted_transforms
    from squid_monai.workflow import choose_data

    data_dir, model_dir = _folder(tmp_path / "data"), _model(tmp_path / "models")
    argv = [
        "--model_dir",
        str(model_dir),
        "--dataset_dir",
        str(data_dir),
        "--per_class",
        "4",
        "--shifts",
        "blur",
        "jpeg",
        "--diagnostics",
        "swap_sharpness",
        "--splits",
        "validation",
        "--calibration_images",
        "8",
        "--out",
        str(tmp_path / "a.json"),
    ]
    result = shift.main(argv)
    table = result["splits"]["validation"]["auc"]
    assert list(table) == ["none", "blur", "jpeg", "swap_sharpness", "mean_over_shifts"]
    assert table["mean_over_shifts"]["control"] == pytest.approx(
        (table["blur"]["control"] + table["jpeg"]["control"]) / 2
    )
    assert list(table["none"]) == [
        "model",
        "residual",
        "feature",
        "sharpness",
        "pixel_knn",
        "control",
    ]
    assert (tmp_path / "a.md").read_text().count("| control |") == 1
    # by hand: the shifted validation images at the controls' size (64 px, not the model's 32),
    # the controls fitted on the unshifted calibration normals
    data = choose_data(str(data_dir), seed=0, val_per_class=4, report_per_class=4)
    normals = image_stack(data.calibration(shift.CONTROL_SIZE, max_images=8))
    items = data.splits["validation"]
    shifted = image_stack(Dataset(items, shifted_transforms(shift.CONTROL_SIZE, "blur", 0)))
    labels = [int(it["label"]) for it in items]
    assert table["blur"]["sharpness"] == pytest.approx(
        roc_auc(labels, sharpness_score(shifted).numpy())
    )
    control = ControlEnsemble(normals).ensemble(shifted).numpy()
    assert table["blur"]["control"] == pytest.approx(roc_auc(labels, control))
    assert not torch.equal(
        shifted, image_stack(Dataset(items, shifted_transforms(shift.CONTROL_SIZE, None)))
    )
    # the diagnostic: normals blurred, abnormals sharpened
    swapped = image_stack(
        Dataset(
            items,
            shift.ByLabel(
                shifted_transforms(shift.CONTROL_SIZE, "blur", 0),
                shifted_transforms(shift.CONTROL_SIZE, "sharpen", 0),
            ),
        )
    )
    assert table["swap_sharpness"]["sharpness"] == pytest.approx(
        roc_auc(labels, sharpness_score(swapped).numpy())
    )
    # deterministic: the same command gives the same table
    assert shift.main([*argv[:-1], str(tmp_path / "b.json")])["splits"] == result["splits"]
    assert result["image_size"] == 32 and result["control_size"] == shift.CONTROL_SIZE
    # --control_size 0: the controls on the model's own input; the model's scores unchanged
    own = shift.main([*argv[:-1], str(tmp_path / "c.json"), "--control_size", "0"])
    own_table = own["splits"]["validation"]["auc"]
    assert own["control_size"] == 32
    at_32 = image_stack(Dataset(items, shifted_transforms(32, "blur", 0)))
    normals_32 = image_stack(data.calibration(32, max_images=8))
    for table_, normals_, images in ((table, normals, shifted), (own_table, normals_32, at_32)):
        knn = ControlEnsemble(normals_).parts(images)["pixel_knn"].numpy()
        assert table_["blur"]["pixel_knn"] == pytest.approx(roc_auc(labels, knn))
    assert own_table["blur"]["pixel_knn"] != table["blur"]["pixel_knn"]  # the size matters here
    for condition in table:
        for score in ("model", "residual", "feature"):
            assert own_table[condition][score] == table[condition][score]
