"""TorchScript export of the scoring path and the bundle checks: parity with PyTorch,
``verify_net_in_out``, and ``verify_metadata`` offline against the schema in the repository."""

from __future__ import annotations

import copy
import json
import socket
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from squid_monai.artifact import Recipe
from squid_monai.export import CARD_FILE, export_bundle
from squid_monai.loading import load_scorer
from squid_monai.scoring import explainer_for
from squid_monai.scoring.runtimes import OUTPUTS
from squid_monai.workflow import DigitAnatomySource

from .trained_bundle import BUNDLE, CONFIGS, IMAGE_SIZE, VAL_SIZE, trained_bundle

SCHEMA = BUNDLE / "schema" / "metadata_schema.json"
METADATA = CONFIGS / "metadata.json"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return trained_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    """``ckpt_export`` (traced) + model card + parity check, as ``python -m squid_monai.export`` runs it."""
    path = tmp_path_factory.mktemp("export") / "model.ts"
    return export_bundle(BUNDLE, bundle.output_dir, filepath=path), path


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(path):
    return torch.jit.load(str(path), map_location="cpu")


def test_torchscript_matches_pytorch_within_1e_5(exported, bundle):
    result, path = exported
    assert max(result["max_abs_diff"].values()) <= 1e-5
    scorer, module = load_scorer(bundle.model), _load(path)
    data = DigitAnatomySource().validation(IMAGE_SIZE, split="test", n_normal=3, n_abnormal=3)
    real = torch.stack([data[i]["image"].as_tensor() for i in range(len(data))])
    for images in (
        real,
        torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE),
    ):  # traced at batch 1; any batch works
        expected, got = scorer(images), module(images)
        assert set(got) == {*OUTPUTS, "tile_residual"}  # the graph outputs and the tiles
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0)


def test_export_embeds_configs_metadata_and_the_deploy_card(exported, bundle):
    result, path = exported
    with zipfile.ZipFile(path) as archive:
        extra = {n.split("/extra/", 1)[1] for n in archive.namelist() if "/extra/" in n}
    assert {"metadata.json", "inference.json", CARD_FILE} <= extra
    files = {CARD_FILE: "", "metadata.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    card, meta = json.loads(files[CARD_FILE]), json.loads(files["metadata.json"])
    scorer = load_scorer(bundle.model)
    assert card == result["card"]
    assert card["image_size"] == IMAGE_SIZE
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [
        IMAGE_SIZE,
        IMAGE_SIZE,
    ]
    for key in ("mean", "std", "threshold", "normal_threshold"):
        assert card[key] == pytest.approx(getattr(scorer, key).item())
    assert card["model_version"] == json.loads(METADATA.read_text())["version"]
    # the card names the model's family first, then the (family-neutral) bundle name
    family = Recipe.in_folder(bundle.output_dir / "models").family
    assert card["model_name"] == f"{family} ({meta['name']})"
    assert meta["name"] == "squid-monai chest X-ray anomaly detection"
    # the domain the model knows travels with it, with the guard's limit
    assert card["domain"]["name"] == "digitanatomy"
    assert card["domain"]["limit"] == pytest.approx(float(scorer.domain_limit))
    assert card["domain"]["limit"] > 0


def test_exported_model_loads_in_the_deploy_app(exported):
    from pipelines.exported_model import load_exported_model
    from squid_monai.transforms import preprocess

    _, path = exported
    model = load_exported_model(path, device="cpu")
    assert model.card.image_size == IMAGE_SIZE
    assert model(torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE))["score"].shape == (2,)
    # the bundle's preprocessing, read from the embedded inference.json (MONAI Deploy's convention)
    assert model.preprocessing_source == "extra file inference.json"
    image = torch.rand(50, 40)
    assert torch.equal(
        model.preprocessing({"image": image})["image"].as_tensor(), preprocess(image, IMAGE_SIZE)
    )


def test_verify_net_in_out_passes(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="score_network",
        meta_file=str(METADATA),
        config_file=str(CONFIGS / "inference.json"),
        device="cpu",
        output_dir=str(bundle.output_dir),
        **{"_meta_#network_data_format#inputs#image#spatial_shape": [IMAGE_SIZE, IMAGE_SIZE]},
    )


def test_verify_metadata_passes_offline(offline, tmp_path):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(METADATA), filepath=str(SCHEMA))
    metadata = json.loads(METADATA.read_text())
    assert metadata["version"] in metadata["changelog"]  # what JSON Schema cannot express


@pytest.mark.parametrize(
    "path",
    [
        ("task",),
        ("network_data_format", "inputs", "image", "modality"),
        ("network_data_format", "outputs", "pred", "num_channels"),
    ],
)
def test_schema_rejects_metadata_without_a_mandatory_key(offline, tmp_path, path):
    from monai.bundle import verify_metadata

    metadata = copy.deepcopy(json.loads(METADATA.read_text()))
    node = metadata
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=path[-1]):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


@pytest.fixture(scope="module")
def model_copy(bundle, tmp_path_factory):
    """The trained model folder copied, so that exports into it leave the shared bundle alone."""
    import shutil

    root = tmp_path_factory.mktemp("exported_formats")
    shutil.copytree(
        bundle.output_dir / "models",
        root / "models",
        ignore=shutil.ignore_patterns("checkpoint*", "*.ts"),
    )
    return root


def _export_format(model_copy, fmt):
    from squid_monai.scoring import runtimes

    if not runtimes.available(fmt):
        pytest.skip(f"{fmt}: runtime not installed (pip install squid-monai[export])")
    return export_bundle(BUNDLE, model_copy, fmt=fmt, val_per_class=VAL_SIZE, calibration_images=16)


def test_openvino_export_records_format_and_parity_and_inference_uses_it(model_copy, tmp_path):
    from monai.bundle import run

    from squid_monai.scoring.runtimes import ExportedScorer

    result = _export_format(model_copy, "openvino")
    card, measured = result["card"], result["parity"]
    assert card["format"] == "openvino" and card["parity"] == measured
    assert card["model_name"].startswith(f"{Recipe.in_folder(model_copy / 'models').family} (")
    assert (
        measured["default"]
        and measured["max_abs_score_diff"] <= 1e-4
        and measured["images"] == 2 * VAL_SIZE
    )
    assert measured["batch_max_abs_score_diff"] <= 1e-4 and measured["auc"] == pytest.approx(
        measured["auc_reference"]
    )
    weights = model_copy / "models" / "model.pt"
    exported, reference = load_scorer(weights, backend="auto"), load_scorer(weights)
    assert isinstance(exported, ExportedScorer) and exported.format == "openvino"
    assert float(exported.threshold) == float(reference.threshold)
    images = torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(
        exported(images)["score"], reference(images)["score"], atol=1e-4, rtol=0
    )
    # its heat maps explain the score of the PyTorch scorer it was exported from
    np.testing.assert_allclose(
        explainer_for(exported).explain(images), explainer_for(reference).explain(images), atol=1e-6
    )
    # inference.json (backend auto) scores with it, heat maps from the PyTorch scorer
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 40)) * 255).astype(np.uint8)).save(
            folder / f"{i}.png"
        )
    run(
        config_file=str(CONFIGS / "inference.json"),
        logging_file=False,
        output_dir=str(model_copy),
        input=str(folder),
        inference_dir=str(tmp_path / "out"),
    )
    assert sorted(p.name for p in (tmp_path / "out" / "images").glob("*heatmap*"))


def test_the_mlflow_model_and_the_deploy_app_score_with_the_openvino_export(model_copy, tmp_path):
    import mlflow

    from pipelines.exported_model import load_exported_model
    from squid_monai.mlflow_model import save_pyfunc
    from squid_monai.scoring.runtimes import ExportedScorer

    _export_format(model_copy, "openvino")
    models = model_copy / "models"
    images = torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    reference = load_scorer(models / "model.pt")(images)["score"]
    # the MLflow model ships the export beside the weights and its runtime among the requirements
    saved = save_pyfunc(tmp_path / "pyfunc", models)
    assert {"model.xml", "model.bin"} <= {p.name for p in (saved / "artifacts").iterdir()}
    assert any(
        line.startswith("openvino==")
        for line in (saved / "requirements.txt").read_text().splitlines()
    )
    assert mlflow.models.Model.load(str(saved)).metadata["cpu_format"] == "openvino"
    served = mlflow.pyfunc.load_model(str(saved)).unwrap_python_model()
    assert isinstance(served.scorer, ExportedScorer) and served.scorer.format == "openvino"
    scores = served.predict_array(images.numpy())["score"].astype(float).to_numpy()
    np.testing.assert_allclose(scores, reference.numpy(), atol=1e-4, rtol=0)
    # the deploy app scores with it instead of the TorchScript model beside it
    export_bundle(BUNDLE, model_copy)
    app_model = load_exported_model(models / "model.ts", device="cpu")
    assert app_model.format == "openvino"
    out = app_model(images)
    assert set(out) == {"score", "logit", "reconstruction", "domain_distance"}
    torch.testing.assert_close(out["score"], reference, atol=1e-4, rtol=0)
    (models / "model.ts").unlink()  # the other tests of this module's folder expect no TorchScript


def test_an_export_of_other_weights_is_not_used(model_copy, tmp_path):
    import shutil

    from squid_monai.methods.squid.scorer import SQUIDScorer

    _export_format(model_copy, "openvino")
    stale = tmp_path / "models"
    shutil.copytree(model_copy / "models", stale)
    scorer = load_scorer(stale / "model.pt")
    scorer.set_calibration(float(scorer.mean) + 1.0, float(scorer.std))  # as a retraining would
    torch.save(scorer.state_dict(), stale / "model.pt")
    assert isinstance(load_scorer(stale / "model.pt", backend="auto"), SQUIDScorer)
    with pytest.raises(FileNotFoundError, match="other weights"):
        load_scorer(stale / "model.pt", backend="openvino")


def test_int8_export_is_default_only_within_the_contract(model_copy):
    from squid_monai.scoring.runtimes import ExportedScorer

    measured = _export_format(model_copy, "openvino_int8")["parity"]
    within = (
        abs(measured["auc"] - measured["auc_reference"]) <= 0.005
        and measured["spearman"] >= 0.999
        and measured["batch_max_abs_score_diff"] <= 1e-4
    )
    assert measured["default"] == within
    chosen = load_scorer(model_copy / "models" / "model.pt", backend="auto")
    assert isinstance(chosen, ExportedScorer) and chosen.format == (
        "openvino_int8" if within else "openvino"
    )
    assert (
        load_scorer(model_copy / "models" / "model.pt", backend="openvino_int8").format
        == "openvino_int8"
    )
