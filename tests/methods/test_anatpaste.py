"""AnatPaste (Sato et al.; squid_monai/methods/anatpaste): the family interface, the density
score against a direct NumPy Ledoit-Wolf + Mahalanobis computation, the scorer's buffers
saved and loaded with weights_only, one training step (normal vs pasted, pasted only inside
the lung field), and the bundle end to end (train, evaluate, TorchScript export with parity)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from squid_monai.methods import ModelFamily, Scorer, get_family
from squid_monai.methods.anatpaste import (
    FAMILY,
    AnatPasteLossWeights,
    AnatPasteNet,
    AnatPasteScorer,
    AnatPasteTrainer,
)
from squid_monai.scoring import calibrate
from squid_monai.scoring.scorer import calibrated_score
from squid_monai.transforms.anatomy import lung_field, paste_transform
from squid_monai.workflow import DigitAnatomySource

from ..transforms.test_anatomy import synthetic_radiograph
from .reconstruction_checks import train_evaluate_export

SIZE = 32  # the tiny preset


def test_anatpaste_is_a_model_family():
    assert get_family("anatpaste") is FAMILY and isinstance(FAMILY, ModelFamily)
    sizes = {p: FAMILY.get_config(p)["image_size"] for p in FAMILY.network_presets}
    assert sizes == {
        "paper": 256,
        "digitanatomy": 96,
        "small": 64,
        "digitanatomy_small": 96,
        "tiny": 32,
    }
    assert FAMILY.get_config("paper")["widen_factor"] == 1.0  # ResNet-18 itself
    for name in ("chest", "digitanatomy"):
        recipe = FAMILY.recipe_presets[name]
        assert FAMILY.loss_weights(**recipe["loss_weights"]) == AnatPasteLossWeights()
        assert recipe["paste"] == "anatpaste" and recipe["lr"] == 0.03
        assert recipe["momentum"] == 0.9 and recipe["weight_decay"] == 3e-5
    assert FAMILY.recipe_presets["chest"]["cpu_epochs"] > 0
    (net,) = FAMILY.build_networks("tiny")
    assert isinstance(net, AnatPasteNet) and net.embedding_size == 64
    out = net(torch.rand(3, 1, SIZE, SIZE))
    assert out["embedding"].shape == (3, 64) and out["logits"].shape == (3, 2)
    with pytest.raises(KeyError, match="unknown network setting"):
        FAMILY.get_config("tiny", widths=4)
    with pytest.raises(ValueError, match="paste must be one of"):
        paste_transform("scar")
    scorer = FAMILY.build_scorer("tiny")
    assert isinstance(scorer, AnatPasteScorer) and isinstance(scorer, Scorer)
    image = torch.rand(3, 1, SIZE, SIZE)
    out = scorer(image)
    assert {"score", "logit", "distance", "embedding", "paste_probability"} <= set(out)
    assert out["score"].shape == out["logit"].shape == out["distance"].shape == (3,)
    assert torch.equal(out["reconstruction"], image)  # no reconstruction: the input itself
    assert "residual" not in out


def _numpy_ledoit_wolf_distance(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrinkage towards (trace / p) I of the empirical covariance, written out,
    then the Mahalanobis distance of each test row to the training mean."""
    n, p = train.shape
    mean = train.mean(0)
    x = train - mean
    emp = x.T @ x / n
    mu = np.trace(emp) / p
    delta = ((emp - mu * np.eye(p)) ** 2).sum() / p
    beta = ((x**2).T @ (x**2) / n - emp**2).sum() / (p * n)
    shrinkage = min(beta, delta) / delta
    covariance = (1 - shrinkage) * emp + shrinkage * mu * np.eye(p)
    d = test - mean
    return np.sqrt(np.einsum("bi,bi->b", d, np.linalg.solve(covariance, d.T).T))


def test_the_density_score_is_the_mahalanobis_distance_to_a_ledoit_wolf_gaussian():
    torch.manual_seed(0)
    scorer = FAMILY.build_scorer("tiny")
    normals = [torch.rand(16, 1, SIZE, SIZE) for _ in range(6)]
    unfitted = scorer(normals[0])["distance"]
    torch.testing.assert_close(unfitted, torch.ones(16))  # |normalised embedding| before fitting
    mean, std = calibrate(scorer, normals)
    train = torch.cat([scorer(x)["embedding"] for x in normals]).double().numpy()
    assert np.allclose(np.linalg.norm(train, axis=1), 1, atol=1e-5)  # L2-normalised
    test = torch.rand(8, 1, SIZE, SIZE)
    out = scorer(test)
    expected = _numpy_ledoit_wolf_distance(train, out["embedding"].double().numpy())
    np.testing.assert_allclose(out["distance"].numpy(), expected, rtol=2e-3)
    torch.testing.assert_close(out["logit"], -out["distance"])
    torch.testing.assert_close(out["score"], calibrated_score(-out["distance"], mean, std))
    # the calibration's mean is that of the refitted density's normality on the same images
    own = torch.cat([scorer(x)["distance"] for x in normals])
    assert mean == pytest.approx(-own.mean().item(), rel=1e-4)


def test_the_fitted_density_saves_and_loads_with_weights_only():
    scorer = FAMILY.build_scorer("tiny")
    calibrate(scorer, [torch.rand(8, 1, SIZE, SIZE) for _ in range(3)])
    assert not torch.equal(scorer.density_precision, torch.eye(64))
    buffer = io.BytesIO()
    torch.save(scorer.state_dict(), buffer)
    buffer.seek(0)
    fresh = FAMILY.build_scorer("tiny")
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    image = torch.rand(4, 1, SIZE, SIZE)
    for key in ("score", "distance"):
        torch.testing.assert_close(fresh(image)[key], scorer(image)[key])


@pytest.mark.parametrize("amp", [False, True])
def test_a_step_classifies_normal_against_pasted_inside_the_lung_field(amp):
    images = torch.stack([torch.as_tensor(synthetic_radiograph(SIZE, s)[0]) for s in range(4)])
    (net,) = FAMILY.build_networks("tiny")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    trainer = AnatPasteTrainer(
        "cpu", 1, [{"image": images}], net, optimizer, image_jitter=0.0, amp=amp
    )
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    (inputs,) = seen
    assert inputs.shape == (8, 1, SIZE, SIZE)
    normal, pasted = inputs[:4], inputs[4:]
    assert torch.equal(normal, images)  # jitter off: the clean images, class 0
    for clean, copy in zip(normal, pasted):
        field = torch.as_tensor(lung_field(clean))
        assert torch.equal(copy[0][~field], clean[0][~field])  # class 1: pasted in the field only
    assert any(not torch.equal(copy, clean) for clean, copy in zip(normal, pasted))
    output = trainer.state.output
    assert np.isfinite(output["loss"]) and output["loss"] == output["loss_classification"]
    assert 0 <= output["accuracy"] <= 1 and trainer.state.skipped_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_bundle_trains_evaluates_and_exports(tmp_path):
    result = train_evaluate_export("anatpaste", tmp_path / "run", epochs=1)
    assert (result["recipe"].family, result["recipe"].preset) == ("anatpaste", "tiny")
    assert result["summary"]["skipped_steps"] == 0
    checkpoint = result["checkpoint"]  # the config's SGD, cosine schedule and scaler resume
    assert {"model", "ema_model", "optimizer", "scheduler", "scaler"} <= set(checkpoint)
    assert checkpoint["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert 0.0 <= result["metrics"]["detector"]["auc"] <= 1.0
    scorer = result["scorer"]
    assert isinstance(scorer, AnatPasteScorer) and scorer.std.item() > 0
    assert not torch.equal(scorer.density_precision, torch.eye(64))  # the Gaussian was fitted
    exported = result["export"]
    assert {"score", "logit", "distance"} <= set(exported["max_abs_diff"])
    assert max(exported["max_abs_diff"].values()) <= 1e-5
    data = DigitAnatomySource().validation(SIZE, split="test", n_normal=2, n_abnormal=2)
    images = torch.stack([data[i]["image"].as_tensor() for i in range(len(data))])
    module = torch.jit.load(str(exported["filepath"]), map_location="cpu")
    got, expected = module(images), scorer(images)
    for key in ("score", "distance", "reconstruction"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0)
