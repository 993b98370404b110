"""MemAE against its definition (review deck, "MemAE [2/3]", eq. 3-7): cosine-similarity
softmax addressing, hard shrinkage ``max(w - l, 0) * w / (|w - l| + eps)``, L1
re-normalisation, the read ``z_hat = w_hat M`` as the decoder's only input, and the
entropy loss on the addressing weights."""

from __future__ import annotations

import math

import pytest
import torch

from squid_monai.methods.autoencoder import AutoEncoderTrainer, ReconstructionScorer
from squid_monai.methods.memae import (
    FAMILY,
    MemAE,
    MemAELossWeights,
    MemAETrainer,
    MemoryUnit,
    addressing_entropy,
    hard_shrink,
    memae_losses,
)

from .reconstruction_checks import (
    check_batch_independence,
    check_family,
    check_smoke,
    train_evaluate_export,
)

E = math.e


def test_family_interface():
    check_family(FAMILY, ReconstructionScorer)
    assert FAMILY.name == "memae" and FAMILY.trainer is MemAETrainer
    assert issubclass(MemAETrainer, AutoEncoderTrainer)  # the same iteration, MemAE's objective
    assert all(
        r["loss_weights"] == {"reconstruction": 1.0, "entropy": 0.0002}
        for r in FAMILY.recipe_presets.values()
    )
    assert isinstance(FAMILY.build_networks("tiny")[0], MemAE)


def test_hard_shrinkage_zeroes_weights_below_the_threshold_and_renormalises():
    w = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    got = hard_shrink(w, 0.1)
    # eq. 7 by hand: w_i (up to eps) above the threshold, 0 below; then divided by the sum
    kept = torch.tensor(
        [0.4 * 0.5 / (0.4 + 1e-12), 0.2 * 0.3 / (0.2 + 1e-12), 0.05 * 0.15 / (0.05 + 1e-12), 0.0],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got[0], kept / kept.sum(), rtol=0, atol=1e-15)
    torch.testing.assert_close(
        got[0], torch.tensor([10, 6, 3, 0], dtype=torch.float64) / 19, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(got[1], w[1])  # nothing below: unchanged (sums to 1 already)
    # a weight exactly at the threshold is dropped (eq. 6: kept only if w_i > l); none left: all zero, no NaN
    assert hard_shrink(torch.tensor([[0.5, 0.5]]), 0.5).tolist() == [[0.0, 0.0]]


def test_memory_read_on_a_hand_built_memory():
    """Items (1, 0), (0, 1), (-1, 0); query (2, 0): cosine similarities (1, 0, -1) (the
    query's norm does not matter), softmax e/(e+1+1/e), 1/(...), 1/(e(...)) ~ (0.665, 0.245,
    0.090); threshold 0.2 drops the third; re-normalised: (e/(e+1), 1/(e+1), 0); the read is
    w_hat M = (e/(e+1), 1/(e+1))."""
    unit = MemoryUnit(3, 2, shrink_threshold=0.2)
    with torch.no_grad():
        unit.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    z = torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1)
    z_hat, weights = unit(z)
    assert weights.shape == (1, 3, 1, 1) and z_hat.shape == (1, 2, 1, 1)
    torch.testing.assert_close(weights.flatten(), torch.tensor([E / (E + 1), 1 / (E + 1), 0.0]))
    torch.testing.assert_close(z_hat.flatten(), torch.tensor([E / (E + 1), 1 / (E + 1)]))
    # below the smallest softmax weight nothing is dropped: the plain softmax of eq. 4
    unit.shrink_threshold = 0.05
    soft = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    torch.testing.assert_close(unit(z)[1].flatten(), soft)


def test_every_encoding_pixel_is_a_query_and_the_default_threshold_is_one_over_n():
    unit = MemoryUnit(10, 4)
    assert unit.shrink_threshold == pytest.approx(0.1)
    z = torch.randn(2, 4, 3, 5)
    z_hat, weights = unit(z)
    assert weights.shape == (2, 10, 3, 5) and z_hat.shape == z.shape
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 3, 5))  # L1-normalised per query
    assert (weights[weights > 0] > 0.1 - 1e-6).all()
    # pixel (1, 2, 4) alone gives the same weights: queries are independent
    _, alone = unit(z[1:, :, 2:3, 4:5])
    torch.testing.assert_close(alone.flatten(), weights[1, :, 2, 4])


def test_the_decoder_sees_only_memory_reads():
    """With a single item every query reads that item: every input is reconstructed the same."""
    net = MemAE(32, (8, 16, 8), (2, 2, 1), memory_items=1, shrink_threshold=0.0).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 1, 32, 32))
    torch.testing.assert_close(out["reconstruction"][0], out["reconstruction"][1])
    torch.testing.assert_close(out["reconstruction"][0], out["reconstruction"][2])


def test_entropy_loss():
    # (0.5, 0.5, 0, 0) -> log 2; one-hot -> 0; the loss is the mean over the queries
    w = torch.tensor([[0.5, 0.0], [0.5, 1.0], [0.0, 0.0], [0.0, 0.0]]).reshape(1, 4, 2, 1)
    assert addressing_entropy(w).item() == pytest.approx(math.log(2) / 2, abs=1e-9)
    uniform = torch.full((2, 8, 3, 3), 1 / 8)
    assert addressing_entropy(uniform).item() == pytest.approx(math.log(8), abs=1e-6)
    image = torch.zeros(1, 1, 2, 2)
    out = {"reconstruction": torch.full((1, 1, 2, 2), 0.1), "weights": w}
    terms = memae_losses(out, image, MemAELossWeights(reconstruction=1.0, entropy=0.5))
    assert terms["entropy"].item() == pytest.approx(math.log(2) / 2, abs=1e-9)
    assert terms["total"].item() == pytest.approx(0.01 + 0.5 * math.log(2) / 2, abs=1e-7)


def test_gradients_reach_encoder_memory_and_decoder_through_the_shrinkage():
    net = FAMILY.build_networks("tiny")[0]
    image = torch.rand(2, 1, 32, 32)
    terms = memae_losses(net(image), image, MemAELossWeights(entropy=0.0002))
    terms["total"].backward()
    for part in (net.encode, net.memory, net.decode):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(
            g.abs().sum() > 0 for g in grads
        )


def test_training_sharpens_the_addressing():
    """The entropy term makes the addressing sparser (its defining purpose): with a large
    weight, a few steps lower the weights' entropy, which L2 alone leaves nearly as it was."""
    image = torch.rand(4, 1, 16, 16)
    entropy = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        net = FAMILY.build_networks("tiny", image_size=16, memory_items=16)[0]
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        trainer = MemAETrainer(
            "cpu",
            10,
            [{"image": image}],
            net,
            optimizer,
            loss_weights={"reconstruction": 1.0, "entropy": weight},
        )
        first = memae_losses(net(image), image, MemAELossWeights())["entropy"].item()
        trainer.run()
        assert set(trainer.state.output) == {
            "loss",
            "loss_reconstruction",
            "loss_entropy",
            "updated",
        }
        entropy[weight] = trainer.state.output["loss_entropy"]
    assert entropy[1.0] < 0.85 * first and entropy[1.0] < 0.85 * entropy[0.0]


def test_batch_independence():
    check_batch_independence(FAMILY.build_scorer("tiny"), 32)


def test_end_to_end(tmp_path):
    check_smoke(train_evaluate_export("memae", tmp_path), "memae", ReconstructionScorer)
