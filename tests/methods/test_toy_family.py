"""A ninth family works end to end by adding only its folder, its config and its tests: the
toy family of ``toy_family/`` (``toy/`` as ``squid_monai/methods/toy/``, ``toy.json`` as
``bundles/squid/configs/methods/toy.json``) is installed in a temporary folder, then trained,
evaluated, exported and deployed with the commands every family uses, none of them edited."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pydicom
import pytest

import squid_monai.methods

from ..trained_bundle import BUNDLE, CONFIGS
from .reconstruction_checks import SMALL

TOY = Path(__file__).resolve().parent / "toy_family"


@pytest.fixture
def toy_family(tmp_path, monkeypatch) -> Path:
    """The toy's folder on the families' package path and its config beside it; both gone after."""
    shutil.copytree(TOY / "toy", tmp_path / "families" / "toy")
    monkeypatch.setattr(
        squid_monai.methods, "__path__", [*squid_monai.methods.__path__, str(tmp_path / "families")]
    )
    yield TOY / "toy.json"
    for name in [
        m
        for m in sys.modules
        if m == "squid_monai.methods.toy" or m.startswith("squid_monai.methods.toy.")
    ]:
        del sys.modules[name]


@pytest.mark.slow
def test_a_ninth_family_trains_evaluates_exports_and_deploys(toy_family, tmp_path):
    pytest.importorskip("monai.deploy.operators", reason="MONAI Deploy App SDK not installed")
    from monai.bundle import run

    from pipelines.cases import ExitCode
    from pipelines.exported_model import load_exported_model
    from pipelines.squid_app import ChestXRayApp
    from squid_monai.export import export_bundle
    from squid_monai.loading import load_scorer
    from squid_monai.methods import family_names
    from squid_monai.transforms import preprocess
    from tests.pipelines.factories import chest_pixels, write_dicom

    assert "toy" in family_names()
    out = tmp_path / "run"
    run(
        "training",
        config_file=[str(CONFIGS / "train.json"), str(toy_family)],
        logging_file=False,
        output_dir=str(out),
        epochs=1,
        **SMALL,
    )
    models = out / "models"
    assert json.loads((models / "network.json").read_text())["family"] == "toy"
    scorer = load_scorer(models / "model.pt")
    assert type(scorer).__name__ == "ToyScorer" and scorer.std.item() > 0  # trained and calibrated

    run(
        "evaluating",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=False,
        output_dir=str(out),
        **SMALL,
    )
    assert (
        0.0
        <= json.loads((out / "eval" / "report" / "metrics.json").read_text())["detector"]["auc"]
        <= 1.0
    )

    exported = export_bundle(BUNDLE, output_dir=out)  # raises if TorchScript drifts from eager
    assert max(exported["max_abs_diff"].values()) <= 1e-5

    studies = tmp_path / "studies"
    studies.mkdir()
    write_dicom(studies / "cr.dcm", chest_pixels(seed=0), study_uid="1.2.826.7.9")
    app = ChestXRayApp(
        studies, tmp_path / "deploy", load_exported_model(exported["filepath"], device="cpu")
    )
    app.run()
    assert app.exit_code is ExitCode.OK
    (case,) = app.summary["cases"]
    expected = float(scorer(preprocess(studies / "cr.dcm", 32)[None])["score"][0])
    assert case["score"] == pytest.approx(expected, abs=1e-5)
    assert (
        str(pydicom.dcmread(studies / "cr.dcm", stop_before_pixels=True).StudyInstanceUID)
        == case["case_id"]
    )
