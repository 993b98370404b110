"""Loading the exported model and its card: embedded extra file, sidecar, and clear errors."""

import json

import pytest
import torch

from pipelines.exported_model import ModelLoadError, load_exported_model
from tests.pipelines.factories import STANDIN_CARD, STANDIN_SIZE, save_standin


def test_card_from_extra_file_and_scoring(standin_model):
    model = load_exported_model(standin_model, device="cpu")
    assert model.card.image_size == STANDIN_SIZE
    assert model.card.threshold == STANDIN_CARD["threshold"]
    assert model.card.source == "extra file squid.json"
    out = model(torch.rand(2, 1, STANDIN_SIZE, STANDIN_SIZE))
    assert out["score"].shape == (2,) and out["reconstruction"].shape == (
        2,
        1,
        STANDIN_SIZE,
        STANDIN_SIZE,
    )


def test_sidecar_overrides_embedded_card(tmp_path):
    path = save_standin(tmp_path / "m.ts", sidecar={"threshold": 0.9, "model_version": "2.0"})
    card = load_exported_model(path, device="cpu").card
    assert (card.threshold, card.model_version, card.model_name) == (
        0.9,
        "2.0",
        STANDIN_CARD["model_name"],
    )
    assert "m.json" in card.source


def test_sidecar_alone_is_enough_and_folder_resolves(tmp_path):
    save_standin(tmp_path / "m.pt", embed_card=False, sidecar=STANDIN_CARD)
    model = load_exported_model(tmp_path, device="cpu")  # a MAP mounts a folder
    assert model.path.name == "m.pt" and model.card.source == "m.json"


def test_missing_card_keys_name_file_and_keys(tmp_path):
    path = save_standin(tmp_path / "m.ts", embed_card=False, sidecar={"image_size": 32})
    with pytest.raises(ModelLoadError, match=r"m\.ts.*missing.*threshold"):
        load_exported_model(path, device="cpu")


def test_not_torchscript_and_ambiguous_folder(tmp_path):
    (tmp_path / "a.ts").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"a\.ts: not a loadable TorchScript"):
        load_exported_model(tmp_path / "a.ts")
    (tmp_path / "b.ts").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="exactly one"):
        load_exported_model(tmp_path)


def test_malformed_sidecar(tmp_path):
    path = save_standin(tmp_path / "m.ts")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"m\.json: not valid JSON"):
        load_exported_model(path)
    path.with_suffix(".json").write_text(json.dumps({"std": -1}))
    with pytest.raises(ModelLoadError, match="std > 0"):
        load_exported_model(path)


class _FlatScorer(torch.nn.Module):
    """Only works at 8 x 8 (a linear layer on the flattened image)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        logit = self.fc(image.flatten(1))[:, 0]
        return {"score": torch.sigmoid(-logit), "logit": logit, "reconstruction": image}


def test_card_image_size_the_model_rejects_fails_at_load(tmp_path):
    path = tmp_path / "flat.ts"
    torch.jit.save(
        torch.jit.script(_FlatScorer()),
        str(path),
        _extra_files={"squid.json": json.dumps(STANDIN_CARD)},
    )
    with pytest.raises(
        ModelLoadError, match=r"flat\.ts: the model fails on a \(1, 1, 32, 32\) image"
    ):
        load_exported_model(path, device="cpu")
    path.with_suffix(".json").write_text(json.dumps({"image_size": 8}))
    assert load_exported_model(path, device="cpu").card.image_size == 8
