"""TorchScript export of the scoring path and the bundle checks: parity with PyTorch,
``verify_net_in_out``, and ``verify_metadata`` offline against the schema in the repository."""

from __future__ import annotations

import copy
import json
import socket
import zipfile

import pytest
import torch

from squid_monai.export import CARD_FILE, export_bundle
from squid_monai.scoring import load_scorer
from squid_monai.workflow import DigitAnatomySource

from .trained_bundle import BUNDLE, CONFIGS, IMAGE_SIZE, trained_bundle

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
    for images in (real, torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)):  # traced at batch 1; any batch works
        expected, got = scorer(images), module(images)
        assert set(got) == {"score", "logit", "residual", "reconstruction"}
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
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [IMAGE_SIZE, IMAGE_SIZE]
    for key in ("mean", "std", "threshold", "normal_threshold"):
        assert card[key] == pytest.approx(getattr(scorer, key).item())
    assert card["model_version"] == json.loads(METADATA.read_text())["version"]


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
    assert torch.equal(model.preprocessing({"image": image})["image"].as_tensor(), preprocess(image, IMAGE_SIZE))


def test_verify_net_in_out_passes(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="score_network", meta_file=str(METADATA), config_file=str(CONFIGS / "inference.json"),
                      device="cpu", output_dir=str(bundle.output_dir),
                      **{"_meta_#network_data_format#inputs#image#spatial_shape": [IMAGE_SIZE, IMAGE_SIZE]})


def test_verify_metadata_passes_offline(offline, tmp_path):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(METADATA), filepath=str(SCHEMA))
    metadata = json.loads(METADATA.read_text())
    assert metadata["version"] in metadata["changelog"]  # what JSON Schema cannot express


@pytest.mark.parametrize("path", [("task",), ("network_data_format", "inputs", "image", "modality"),
                                  ("network_data_format", "outputs", "pred", "num_channels")])
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
