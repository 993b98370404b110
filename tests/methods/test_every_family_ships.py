"""Every family ships through the same adapters, none of them method-specific: a calibrated
tiny model folder of each family is exported to TorchScript (with parity), scored by the
MONAI Deploy app from DICOM (SR and reconstruction out, the bundle's score), and registered
in a real MLflow registry, from which the pyfunc model scores the files' bytes (base64, as a
client sends them) with the bundle's score.

The networks are untrained (calibrated on noise): what is tested is the plumbing, which
must not depend on what the family learnt; the families' trained runs are in their own
test modules."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

pytest.importorskip(
    "monai.deploy.operators",
    reason="MONAI Deploy App SDK not installed (pip install -e '.[deploy]')",
)

from pipelines.cases import ExitCode  # noqa: E402
from pipelines.exported_model import load_exported_model  # noqa: E402
from pipelines.squid_app import ChestXRayApp  # noqa: E402
from squid_monai.artifact import WEIGHTS_FILE, Recipe  # noqa: E402
from squid_monai.export import export_bundle  # noqa: E402
from squid_monai.loading import build, image_size, load_scorer  # noqa: E402
from squid_monai.methods import family_names  # noqa: E402
from squid_monai.mlflow_model import load_registered, register_model  # noqa: E402
from squid_monai.scoring import calibrate
from squid_monai.tracking import tracking_uri  # noqa: E402
from squid_monai.transforms import preprocess  # noqa: E402
from tests.pipelines.factories import chest_pixels, write_dicom  # noqa: E402

from ..trained_bundle import BUNDLE  # noqa: E402

FAMILIES = sorted(family_names())


def test_every_documented_family_is_covered():
    """A family added later is picked up here automatically; these are the ones the issue names."""
    assert {"squid", "autoencoder", "memae", "patch_memae", "fanogan", "ganomaly", "daad"} <= set(
        FAMILIES
    )


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """Two chest-like CR studies as DICOM files."""
    folder = tmp_path_factory.mktemp("studies")
    for i in range(2):
        write_dicom(folder / f"cr{i}.dcm", chest_pixels(seed=i), study_uid=f"1.2.826.7.{i}")
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One real MLflow SQLite store and registry for all families."""
    return tracking_uri(tmp_path_factory.mktemp("mlflow"))


def _model_folder(method: str, output_dir: Path) -> Path:
    """A calibrated, untrained tiny model saved the way the bundle saves one."""
    torch.manual_seed(0)
    recipe = Recipe("tiny", family=method)
    scorer = build(recipe)
    size = image_size(recipe)
    calibrate(scorer, [torch.rand(4, 1, size, size) for _ in range(2)])
    scorer.threshold.fill_(0.5)
    models = output_dir / "models"
    recipe.save(models / "network.json")
    torch.save(scorer.state_dict(), models / WEIGHTS_FILE)
    return models


@pytest.mark.slow
@pytest.mark.parametrize("method", FAMILIES)
def test_family_exports_deploys_and_serves_from_the_registry(method, tmp_path, studies, store):
    models = _model_folder(method, tmp_path)
    eager = load_scorer(models / WEIGHTS_FILE)
    size = image_size(Recipe.in_folder(models))
    inputs = {f.name: preprocess(f, size)[None] for f in sorted(studies.glob("*.dcm"))}
    expected = {name: float(eager(image)["score"][0]) for name, image in inputs.items()}

    exported = export_bundle(BUNDLE, output_dir=tmp_path)  # raises if TorchScript drifts from eager
    assert max(exported["max_abs_diff"].values()) <= 1e-5

    app = ChestXRayApp(
        studies, tmp_path / "deploy", load_exported_model(exported["filepath"], device="cpu")
    )
    app.run()
    assert app.exit_code is ExitCode.OK
    cases = {case["case_id"]: case for case in app.summary["cases"]}
    for name, score in expected.items():
        uid = str(pydicom.dcmread(studies / name, stop_before_pixels=True).StudyInstanceUID)
        case = cases[uid]
        assert case["score"] == pytest.approx(score, abs=1e-5), (method, name)
        sr = pydicom.dcmread(tmp_path / "deploy" / case["outputs"]["sr"])
        assert f"{case['score']:.6f}" in sr.ContentSequence[0].TextValue
        assert f"Model: {method} (" in sr.ContentSequence[0].TextValue  # its family, every family
        assert (tmp_path / "deploy" / case["outputs"]["reconstruction"]).is_file()

    version = register_model(models, store, name=f"xray-{method}", alias="champion")
    assert version.tags["family"] == method and version.tags["preset"] == "tiny"
    files = sorted(expected)
    encoded = [
        base64.b64encode((studies / f).read_bytes()).decode() for f in files
    ]  # what a client sends
    out = load_registered(f"xray-{method}", "champion", store).predict(
        pd.DataFrame({"image": encoded})
    )
    assert out["error"].isna().all(), out["error"].tolist()
    # the pyfunc model scores the files as one batch: the same logits up to float rounding, which
    # the untrained network's tiny calibration std magnifies in the score
    logits = eager(torch.cat([inputs[f] for f in files]))["logit"]
    np.testing.assert_allclose(out["logit"].to_numpy(float), logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        out["score"].to_numpy(float), [expected[f] for f in files], atol=1e-3
    )
