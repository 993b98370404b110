"""The reference model: packaging a trained model folder (compaction within the parity contract,
the measured card), the one scoring command, the same scores through the bundle, the Python API,
the MLflow model and the deploy app, and no training run writing into it.

A stand-in reference is built once per module from the stored tiny SQUID model folder on
DigitAnatomy, in a copy of the bundle's configs, with a size limit that forces compaction."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from squid_monai import reference
from squid_monai.artifact import REFERENCE_FILE, Recipe, ReferenceFolderError, write_json
from squid_monai.data.digitanatomy import digitanatomy_split
from squid_monai.handlers.checkpoint import AtomicCheckpointSaver
from squid_monai.loading import image_size, load_scorer
from squid_monai.scoring.parity import AUC_MARGIN, MIN_SPEARMAN
from squid_monai.transforms import preprocess
from squid_monai.workflow import REFERENCE_DIR, reference_model

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "tests" / "fixtures" / "model_folders" / "squid"
#: small enough that the stored model (0.59 MB, plus the domain guard's 0.26 MB bank fitted at
#: calibration) must be compacted (weights budget 0.6 MB)
LIMIT = 600_000 + reference.RESERVED_BYTES
SMALL = {"val_per_class": 10, "report_per_class": 10, "calibration_images": 8}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(bundle_root, reference folder, record)`` of a stand-in reference model."""
    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(REPO / "bundles" / "squid" / "configs", root / "configs")
    folder = root / REFERENCE_DIR
    record = reference.build(TRAINED, folder, max_bytes=LIMIT, bundle_root=root, **SMALL)
    return root, folder, record


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two DigitAnatomy images (the stand-in's domain) as PNG files, one normal, one not."""
    folder = tmp_path_factory.mktemp("inputs")
    items = digitanatomy_split(1, 1, seed=5, split="test")
    for i, item in enumerate(items):
        pixels = np.asarray(item["image"], dtype=np.float32).reshape(item["image"].shape[-2:])
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(folder / f"case{i}.png")
    return folder


def _python_scores(folder: Path, files: list[Path]) -> dict[str, float]:
    scorer = load_scorer(folder / "model.pt")
    size = image_size(Recipe.load(folder))
    return {f.name: float(scorer(preprocess(f, image_size=size)[None])["score"]) for f in files}


def test_build_compacts_within_the_contract_and_writes_a_measured_card(built):
    _, folder, record = built
    stored = torch.load(folder / "model.pt", weights_only=True)
    assert record["storage"]["dtype"] == "float16+float32"
    assert any(v.dtype == torch.float16 for v in stored.values())
    assert stored["mean"].dtype == torch.float32  # the calibration stays as trained
    assert (
        folder / "model.pt"
    ).stat().st_size <= LIMIT - reference.RESERVED_BYTES  # the file, not only its tensors
    assert sum(f.stat().st_size for f in folder.iterdir()) <= LIMIT
    parity = record["storage"]["parity_on_validation"]
    assert parity["default"] and parity["spearman"] >= MIN_SPEARMAN
    assert abs(parity["auc"] - parity["auc_reference"]) <= AUC_MARGIN
    # loaded back to float32, scores follow the trained model's
    scorer = load_scorer(folder / "model.pt")
    assert all(p.dtype == torch.float32 for p in scorer.parameters())
    # the card's numbers are the evaluation's, written by the command
    assert json.loads((folder / REFERENCE_FILE).read_text()) == json.loads(json.dumps(record))
    card = (folder / "README.md").read_text()
    for split in reference.SPLITS:
        summary = record["splits"][split]
        assert summary["n_normal"] == summary["n_abnormal"] == 10
        for key in ("", "baseline_sharpness", "baseline_pixel_knn", "baseline_control"):
            entry = summary[key] if key else summary
            assert f"{entry['auc']:.3f} ({entry['auc_95ci'][0]:.3f}" in card
        assert (folder / f"roc_{split}.png").is_file()
    assert record["data"]["credit"] in card and "## Domain" in card
    assert reference.SCORE_COMMAND in card


def test_build_refuses_what_cannot_fit(tmp_path):
    state = load_scorer(TRAINED / "model.pt").state_dict()
    with pytest.raises(RuntimeError, match="even in half precision"):
        reference.compact_state(state, max_bytes=1000)
    with pytest.raises(ValueError, match="outside the trained model folder"):
        reference.build(TRAINED, TRAINED / "reference")


def test_zhanglab_is_credited(shared_data):
    from squid_monai.workflow import choose_data

    data = reference.data_description(choose_data(str(shared_data / "zhanglab224"), seed=0))
    assert data["name"] == "zhanglab" and "doi:10.17632/rscbjbr9sj.2" in data["credit"]
    assert "CC BY 4.0" in data["credit"] and "Cell" in data["credit"]
    assert data["stored_sizes_of_sampled_training_images"] == {"224 x 224": 50}


def test_scoring_command_prints_the_python_apis_scores(built, images, capsys):
    root, folder, _ = built
    configs = ["train.json", "inference.json", "reference.json"]
    reference.run_bundle(root, configs, "inference", input=str(images), progress=False)
    printed = capsys.readouterr().out
    expected = _python_scores(folder, sorted(images.iterdir()))
    for name, score in expected.items():
        assert f"{name}: score {score:.4f}" in printed
    rows = pd.read_csv(root / "inference" / "reference" / "scores.csv")
    assert dict(zip(rows["image"].map(lambda p: Path(p).name), rows["score"])) == pytest.approx(
        expected, abs=1e-6
    )


def test_no_reference_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reference model here"):
        reference_model(tmp_path)


def test_mlflow_model_scores_as_the_python_api(built, images, tmp_path):
    import mlflow

    from squid_monai.mlflow_model import save_pyfunc

    _, folder, _ = built
    model = mlflow.pyfunc.load_model(str(save_pyfunc(tmp_path / "pyfunc", folder)))
    files = sorted(images.iterdir())
    request = pd.DataFrame({"image": [base64.b64encode(f.read_bytes()).decode() for f in files]})
    got = model.predict(request)["score"].tolist()
    assert got == pytest.approx(list(_python_scores(folder, files).values()), abs=1e-5)


def test_deploy_app_scores_as_the_python_api(built, tmp_path):
    pytest.importorskip("monai.deploy.operators", reason="MONAI Deploy App SDK not installed")
    from pipelines.exported_model import load_exported_model
    from pipelines.squid_app import ChestXRayApp
    from squid_monai.export import export_bundle
    from tests.pipelines.factories import chest_pixels, write_dicom

    root, folder, _ = built
    before = sorted(p.name for p in folder.iterdir())
    ts = tmp_path / "export" / "model.ts"
    export_bundle(root, model_dir=folder, filepath=ts)
    assert sorted(p.name for p in folder.iterdir()) == before  # the export lands outside
    inputs = tmp_path / "in"
    inputs.mkdir()
    dicom = write_dicom(inputs / "study.dcm", chest_pixels(), study_uid="1.2.826.9.1")
    app = ChestXRayApp(inputs, tmp_path / "out", load_exported_model(ts, device="cpu"))
    app.run()
    (case,) = app.summary["cases"]
    assert case["score"] == pytest.approx(_python_scores(folder, [dicom])["study.dcm"], abs=1e-5)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("target", ["output_dir", "ckpt_dir"])
def test_training_never_writes_into_the_reference(built, target):
    root, folder, _ = built
    before = _digest(folder)
    tiny = dict(preset="tiny", epochs=1, digitanatomy_length=32, mlflow_tracking=False)
    with pytest.raises(Exception) as raised:  # the bundle wraps what its expressions raise
        reference.run_bundle(
            root, ["train.json"], "training", progress=False, **tiny, **{target: str(folder)}
        )
    causes = [raised.value]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    assert any(isinstance(c, ReferenceFolderError) for c in causes), causes
    assert "training never writes there" in str(causes[-1])
    assert _digest(folder) == before


def test_no_model_file_lands_in_a_reference_folder(built):
    _, folder, _ = built
    with pytest.raises(ReferenceFolderError):
        write_json(folder / "sub" / "network.json", {})
    with pytest.raises(ReferenceFolderError):
        AtomicCheckpointSaver(save_dir=str(folder), save_dict={"model": torch.nn.Linear(1, 1)})


def test_paths_on_the_card_are_nobody_s_machine(built, tmp_path):
    root, folder, record = built
    repo = tmp_path / "repo"
    assert reference.portable(
        f"--model_dir {repo}/runs/a/models --dataset_dir /data/x/zl", repo
    ) == ("--model_dir runs/a/models --dataset_dir /path/to/x/zl")
    assert reference.portable("'bundles/squid/configs/train.json' --seed 1", repo) == (
        "'bundles/squid/configs/train.json' --seed 1"
    )
    shipped = REPO / "bundles" / "squid" / REFERENCE_DIR
    for text in (
        (folder / "README.md").read_text(),
        (shipped / "README.md").read_text(),
        (shipped / REFERENCE_FILE).read_text(),
    ):
        for path in re.findall(r"(?<![\w./])/(?:[\w.-]+/)+[\w.-]+", text):
            assert path.startswith("/path/to/"), path
