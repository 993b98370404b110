"""Checks every reconstruction family's test runs (auto-encoder, MemAE, Patch-MemAE):
the family interface, batch-independent scores, and the end-to-end smoke run through the
bundle, in-process: train on preset ``tiny`` (DigitAnatomy, 2 iterations per epoch) with ``train.json`` + the family's
method config, evaluate with ``evaluate.json`` (method-agnostic: it rebuilds the model
from ``models/network.json``), then export to TorchScript with the parity check."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from monai.bundle import run

from squid_monai.artifact import Recipe
from squid_monai.export import export_bundle
from squid_monai.loading import build, load_scorer
from squid_monai.methods import ModelFamily, Scorer, get_family

from ..trained_bundle import BUNDLE, CONFIGS

PRESETS = ("tiny", "small", "digitanatomy_small", "paper", "digitanatomy")


def check_family(family, scorer_class: type) -> None:
    """The ModelFamily interface, the contract's presets and recipes, and a scorer that
    returns at least score, logit, residual and reconstruction for each preset's size."""
    assert isinstance(family, ModelFamily) and get_family(family.name) is family
    assert set(PRESETS) <= set(family.network_presets) and {"chest", "digitanatomy"} <= set(
        family.recipe_presets
    )
    assert family.get_config("tiny")["image_size"] in (32, 64)
    for recipe in family.recipe_presets.values():
        family.loss_weights(
            **recipe["loss_weights"]
        )  # the recipe's weights are the dataclass's fields
    for preset in ("tiny", "digitanatomy_small"):
        size = family.get_config(preset)["image_size"]
        (network,) = family.build_networks(preset)
        assert isinstance(network, torch.nn.Module)
        scorer = family.build_scorer(preset)
        assert type(scorer) is scorer_class and isinstance(scorer, Scorer)
        image = torch.rand(2, 1, size, size)
        out = scorer(image)
        assert {"score", "logit", "residual", "reconstruction"} <= set(out)
        assert out["score"].shape == out["logit"].shape == out["residual"].shape == (2,)
        assert out["reconstruction"].shape == (2, 1, size, size)
        assert 0 <= float(out["reconstruction"].min()) and float(out["reconstruction"].max()) <= 1
        torch.testing.assert_close(
            out["logit"], -out["residual"]
        )  # normality = -reconstruction error
        torch.testing.assert_close(
            out["residual"], (image - out["reconstruction"]).pow(2).mean((1, 2, 3))
        )
    try:
        family.get_config("tiny", no_such_setting=1)
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown network setting must be an error")


def check_batch_independence(scorer: torch.nn.Module, size: int) -> None:
    """An image's score alone == inside a batch, whatever the other images (eval mode:
    BatchNorm uses its running statistics)."""
    scorer.set_calibration(0.01, 0.002)  # a realistic calibration magnifies differences
    images = torch.rand(5, 1, size, size)
    with torch.no_grad():  # non-trivial running statistics, as after training
        scorer.network.train()(torch.rand(8, 1, size, size) * 0.5)
    together = scorer(images)
    other = scorer(torch.cat([images[:1], torch.zeros(3, 1, size, size)]))
    for i in range(5):
        alone = scorer(images[i : i + 1])
        for key in ("score", "residual", "reconstruction"):
            torch.testing.assert_close(alone[key][0], together[key][i], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other["score"][0], together["score"][0], rtol=1e-5, atol=1e-6)


SMALL = {
    "preset": "tiny",
    "digitanatomy_length": 32,
    "val_per_class": 8,
    "report_per_class": 8,
    "calibration_images": 16,
    "progress": False,
    "mlflow_tracking": False,
}


def train_evaluate_export(method: str, output_dir: Path, epochs: int = 2) -> dict:
    """Run the three commands into ``output_dir``; returns what each left behind."""
    method_config = CONFIGS / "methods" / f"{method}.json"
    run(
        "training",
        config_file=[str(CONFIGS / "train.json"), str(method_config)],
        logging_file=False,
        output_dir=str(output_dir),
        epochs=epochs,
        **SMALL,
    )
    models = output_dir / "models"
    run(
        "evaluating",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=False,
        output_dir=str(output_dir),
        **SMALL,
    )
    exported = export_bundle(BUNDLE, output_dir=output_dir)
    return {
        "recipe": Recipe.in_folder(models),
        "summary": json.loads((models / "training_summary.json").read_text()),
        "checkpoint": torch.load(
            models / f"checkpoint_epoch={epochs}.pt", map_location="cpu", weights_only=False
        ),
        "metrics": json.loads((output_dir / "eval" / "report" / "metrics.json").read_text()),
        "scorer": load_scorer(models / "model.pt"),
        "export": exported,
    }


def check_smoke(result: dict, method: str, scorer_class: type) -> None:
    """What every family's smoke run must show."""
    assert result["recipe"].family == method and result["recipe"].preset == "tiny"
    assert result["summary"]["epochs"] == 2 and result["summary"]["skipped_steps"] == 0
    assert 0.0 <= result["summary"]["best_val_auc"] <= 1.0
    checkpoint = result[
        "checkpoint"
    ]  # the resume checkpoint holds the method config's optimiser, schedule, scaler
    assert {"model", "ema_model", "optimizer", "scheduler", "scaler"} <= set(checkpoint)
    assert all(
        int(s["step"]) == 4 for s in checkpoint["optimizer"]["state"].values()
    )  # 2 epochs x 2 iterations
    scorer = result["scorer"]
    assert type(scorer) is scorer_class
    fresh = build(result["recipe"]).state_dict()
    assert any(
        not torch.equal(v, fresh[k])
        for k, v in scorer.state_dict().items()
        if k.startswith("network.") and v.is_floating_point()
    )  # trained
    assert float(scorer.std) > 0 and float(scorer.std) != 1.0  # calibrated on normal images
    metrics = result["metrics"]
    assert metrics["n_normal"] == metrics["n_abnormal"] == SMALL["report_per_class"]
    assert max(result["export"]["max_abs_diff"].values()) <= 1e-5  # TorchScript == PyTorch
    assert Path(result["export"]["filepath"]).stat().st_size > 0
