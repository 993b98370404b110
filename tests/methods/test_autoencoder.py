"""The convolutional auto-encoder family (SQUID paper Table 1 "Auto-Encoder"; lecture
"AutoEncoder in AD": L2 training on normal images, reconstruction error as the score)
and its trainer, whose iteration MemAE and Patch-MemAE reuse."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events

from squid_monai.methods.autoencoder import (
    FAMILY,
    AutoEncoderLossWeights,
    AutoEncoderTrainer,
    ConvAutoEncoder,
    ReconstructionScorer,
    autoencoder_losses,
)

from .reconstruction_checks import (
    check_batch_independence,
    check_family,
    check_smoke,
    train_evaluate_export,
)


def test_family_interface():
    check_family(FAMILY, ReconstructionScorer)
    assert FAMILY.name == "autoencoder" and FAMILY.trainer is AutoEncoderTrainer
    assert all(r["loss_weights"] == {"reconstruction": 1.0} for r in FAMILY.recipe_presets.values())


@pytest.mark.parametrize("preset", ["tiny", "small", "digitanatomy_small", "paper", "digitanatomy"])
def test_the_bottleneck_holds_an_eighth_of_the_pixels(preset):
    """The bottleneck constraint of an auto-encoder (lecture): the encoding is smaller than
    the image, so the identity cannot pass it."""
    config = FAMILY.get_config(preset)
    net = FAMILY.build_networks(preset)[0].eval()
    size = config["image_size"]
    with torch.no_grad():
        latent = net.latent(torch.rand(1, 1, size, size))["latent"]
    assert latent.numel() * 8 == size * size


def test_overrides_reach_the_network_and_lists_become_tuples():
    config = FAMILY.get_config("tiny", channels=[4, 8, 4], strides=[2, 2, 1])
    assert config["channels"] == (4, 8, 4) and config["strides"] == (2, 2, 1)
    with pytest.raises(ValueError, match="divisible"):
        ConvAutoEncoder(30, (4, 8), (2, 2))


def test_score_rises_with_the_reconstruction_error():
    """score = sigmoid((residual - mean_residual) / std): an image reconstructed worse
    scores as more anomalous."""
    scorer = FAMILY.build_scorer("tiny")
    scorer.set_calibration(-0.05, 0.01)
    out = scorer(
        torch.stack([torch.full((1, 32, 32), 0.5), torch.zeros(1, 32, 32), torch.ones(1, 32, 32)])
    )
    order = torch.argsort(out["residual"])
    assert torch.equal(torch.argsort(out["score"]), order)
    expected = torch.sigmoid((out["residual"] - 0.05) / 0.01)
    torch.testing.assert_close(out["score"], expected)


def test_batch_independence():
    check_batch_independence(FAMILY.build_scorer("tiny"), 32)


def test_l2_objective():
    image = torch.rand(2, 1, 4, 4)
    out = {"reconstruction": image + 0.1}
    terms = autoencoder_losses(out, image, AutoEncoderLossWeights(reconstruction=2.0))
    assert terms["reconstruction"].item() == pytest.approx(0.01)
    assert terms["total"].item() == pytest.approx(0.02)
    assert set(terms) == {"reconstruction", "total"}
    assert autoencoder_losses(out, image, AutoEncoderLossWeights(), num_models=4)[
        "total"
    ].item() == pytest.approx(0.04)


def _trainer(net, batches, **kwargs):
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    return AutoEncoderTrainer("cpu", 1, batches, net, optimizer, **kwargs), optimizer


def test_trainer_fits_normal_images():
    net = FAMILY.build_networks("tiny")[0]
    image = torch.rand(4, 1, 32, 32)
    trainer, _ = _trainer(net, [{"image": image}] * 30, loss_weights={"reconstruction": 1.0})
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))
    trainer.run()
    assert set(losses[0]) == {"loss", "loss_reconstruction", "updated"}
    assert losses[-1]["loss"] < 0.7 * losses[0]["loss"]
    assert trainer.state.skipped_steps == 0


def test_trainer_skips_a_non_finite_step():
    net = FAMILY.build_networks("tiny")[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image = torch.full((2, 1, 32, 32), math.nan)
    trainer, _ = _trainer(net, [{"image": image}])
    trainer.run()
    assert trainer.state.skipped_steps == 1 and trainer.state.output["updated"] is False
    assert all(
        torch.equal(v, before[k]) for k, v in net.state_dict().items()
    )  # weights and BN statistics


def test_end_to_end(tmp_path):
    check_smoke(train_evaluate_export("autoencoder", tmp_path), "autoencoder", ReconstructionScorer)
