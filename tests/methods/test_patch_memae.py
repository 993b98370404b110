"""Patch-MemAE against its definition (SQUID paper App. B.2, Table 7): one MemAE per patch
position, trained only on that position's patches (as if separately), the
reconstruction put back together from the patches', and the score the ensemble mean
of the positions' scores."""

from __future__ import annotations

import pytest
import torch

from squid_monai.methods.memae import FAMILY as MEMAE
from squid_monai.methods.memae import MemAE, MemAELossWeights, MemAETrainer, memae_losses
from squid_monai.methods.patch_memae import FAMILY, PatchMemAE, PatchMemAEScorer
from squid_monai.nn.blocks import tile

from .reconstruction_checks import (
    check_batch_independence,
    check_family,
    check_smoke,
    train_evaluate_export,
)

WEIGHTS = MemAELossWeights(reconstruction=1.0, entropy=0.0002)


def test_family_interface():
    check_family(FAMILY, PatchMemAEScorer)
    assert FAMILY.name == "patch_memae" and FAMILY.trainer is MemAETrainer
    assert FAMILY.recipe_presets == MEMAE.recipe_presets
    assert (
        FAMILY.get_config("paper")["tiles"] == 2 and FAMILY.get_config("digitanatomy")["tiles"] == 3
    )


@pytest.mark.parametrize("preset, positions", [("tiny", 4), ("digitanatomy_small", 9)])
def test_one_memae_per_tile_position(preset, positions):
    net = FAMILY.build_networks(preset)[0]
    config = FAMILY.get_config(preset)
    assert isinstance(net, PatchMemAE) and net.num_models == positions == len(net.models)
    assert all(
        type(m) is MemAE and m.image_size == config["image_size"] // config["tiles"]
        for m in net.models
    )
    memories = [m.memory.memory for m in net.models]
    assert len({p.data_ptr() for p in memories}) == positions  # a memory of its own each
    assert all(p.shape == (config["memory_items"], config["channels"][-1]) for p in memories)
    assert sum(p.numel() for p in net.parameters()) == positions * sum(
        p.numel() for p in net.models[0].parameters()
    )


def test_each_position_reconstructs_its_own_patch():
    """The reconstruction is the patches' reconstructions put back in place, each from its
    position's MemAE alone: changing one patch changes that patch's reconstruction only."""
    net = FAMILY.build_networks("tiny")[0].eval()
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        recon = net(image)["reconstruction"]
        patches = tile(image, 2).reshape(2, 4, 1, 16, 16)
        for k, model in enumerate(net.models):
            row, col = divmod(k, 2)
            expected = model(patches[:, k])["reconstruction"]
            torch.testing.assert_close(
                recon[..., row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16], expected
            )
        changed = image.clone()
        changed[..., :16, 16:] = 1.0  # position 1 (top right)
        diff = (net(changed)["reconstruction"] - recon).abs()
    assert diff[..., :16, 16:].max() > 0
    diff[..., :16, 16:] = 0
    assert diff.max() == 0


def test_score_is_the_mean_of_the_tile_scores():
    scorer = FAMILY.build_scorer("tiny")
    scorer.set_calibration(-0.08, 0.01)
    image = torch.rand(3, 1, 32, 32)
    out = scorer(image)
    with torch.no_grad():
        patches = tile(image, 2).reshape(3, 4, 1, 16, 16)
        # each position's MemAE score: its reconstruction error on its own patch
        tile_scores = torch.stack(
            [
                (patches[:, k] - model.eval()(patches[:, k])["reconstruction"])
                .pow(2)
                .mean((1, 2, 3))
                for k, model in enumerate(scorer.network.models)
            ],
            dim=1,
        )
    torch.testing.assert_close(out["tile_residual"], tile_scores)
    torch.testing.assert_close(out["residual"], tile_scores.mean(1))
    torch.testing.assert_close(out["logit"], -tile_scores.mean(1))
    torch.testing.assert_close(out["score"], torch.sigmoid((tile_scores.mean(1) - 0.08) / 0.01))


def test_each_position_is_trained_as_if_alone():
    """The objective's gradient on position k's MemAE is exactly that of k's own MemAE
    objective on its own patches (no coupling, no 1/T dilution)."""
    net = FAMILY.build_networks("tiny")[0]
    image = torch.rand(4, 1, 32, 32)
    terms = memae_losses(net(image), image, WEIGHTS, num_models=net.num_models)
    joint = torch.autograd.grad(terms["total"], list(net.parameters()))
    patches = tile(image, 2).reshape(4, 4, 1, 16, 16)
    offset = 0
    for k, model in enumerate(net.models):
        params = list(model.parameters())
        alone = torch.autograd.grad(
            memae_losses(model(patches[:, k]), patches[:, k], WEIGHTS)["total"], params
        )
        for g_joint, g_alone in zip(joint[offset : offset + len(params)], alone):
            torch.testing.assert_close(g_joint, g_alone, rtol=1e-4, atol=1e-7)
        offset += len(params)


def test_trainer_logs_the_positions_mean_losses():
    net = FAMILY.build_networks("tiny")[0]
    trainer = MemAETrainer(
        "cpu",
        1,
        [{"image": torch.rand(2, 1, 32, 32)}],
        net,
        torch.optim.Adam(net.parameters()),
        loss_weights=WEIGHTS,
    )
    trainer.run()
    out = trainer.state.output
    assert out["loss"] == pytest.approx(
        4 * (out["loss_reconstruction"] + 0.0002 * out["loss_entropy"]), rel=1e-5
    )


def test_batch_independence():
    check_batch_independence(FAMILY.build_scorer("tiny"), 32)


def test_end_to_end(tmp_path):
    check_smoke(train_evaluate_export("patch_memae", tmp_path), "patch_memae", PatchMemAEScorer)
