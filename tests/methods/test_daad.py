"""DAAD / DAAD+ against ``seeds/daad_paper.txt`` section 3 (and BASELINES.md, "DAAD"): the
block-wise memory (division into r_h x r_w x r_c blocks, cosine-softmax addressing, the 1/N
drop), the loss of eq. (3) with the paper's weights, the fused score of eq. (7), batch
independence, the family interface, and one trained-bundle round trip per variant
(train, evaluate, TorchScript export with parity)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from squid_monai.artifact import Recipe
from squid_monai.loading import build, load_scorer
from squid_monai.methods import ModelFamily, get_family
from squid_monai.methods.daad import (
    FAMILY,
    BlockMemory,
    DAADLossWeights,
    DAADScorer,
    DAADTrainer,
    DCGANDiscriminator,
    calibrate_daad,
    discriminator_loss,
    division_rate,
    fit_scaling,
    generator_losses,
)
from squid_monai.methods.daad.memory import drop_below, memory_read
from squid_monai.scoring import CalibratedScorer, explainer_for

from ..trained_bundle import CONFIGS, VAL_SIZE

E = math.exp


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny convolutions only lose from more (on a shared
    two-core machine two threads made the bundle run several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the block-wise memory (section 3.1.2) -------------------------------------------------


def test_a_map_is_cut_into_rh_rw_rc_blocks_of_the_right_shape():
    memory = BlockMemory(channels=6, size=(8, 12), items=7, division=(4, 3), channel_division=2)
    assert memory.blocks == 4 * 3 * 2 and memory.block_shape == (3, 2, 4) and memory.dim == 24
    assert memory.memory.shape == (7, 24)
    f = torch.randn(2, 6, 8, 12)
    q = memory.divide(f)
    assert q.shape == (2, 24, 24)
    # block (c, y, x) of the grid, at index (c * r_h + y) * r_w + x, is the matching slice
    for c, y, x in [(0, 0, 0), (1, 2, 1), (1, 3, 2)]:
        expected = f[1, 3 * c : 3 * c + 3, 2 * y : 2 * y + 2, 4 * x : 4 * x + 4].reshape(-1)
        assert torch.equal(q[1, (c * 4 + y) * 3 + x], expected)
    assert torch.equal(memory.assemble(q), f)  # assembling undoes dividing
    with pytest.raises(ValueError, match="does not divide"):
        BlockMemory(channels=6, size=12, division=8)


def test_each_level_of_the_small_presets_gets_a_rate_that_fits_its_map():
    assert [division_rate(s, 8) for s in (64, 16, 8, 12, 6, 4, 2)] == [8, 8, 8, 6, 6, 4, 2]
    expected = {
        "tiny": (8, 8, 4),
        "small": (8, 8, 8, 4),
        "digitanatomy_small": (8, 8, 6, 6),
        "paper": (8, 8, 8, 8),
    }
    for preset, rates in expected.items():
        generator = FAMILY.build_networks(preset)[0]
        assert generator.divisions == rates, preset
        for memory, side, c, r in zip(
            generator.memories, generator.sides, generator.channels, rates
        ):
            # every level has its own bank of N = 500 items of the block's dimension
            assert (
                memory.size == (side, side) and memory.rates == (r, r, 1) and memory.blocks == r * r
            )
            assert memory.block_shape == (c, side // r, side // r) and memory.memory.shape == (
                500,
                c * (side // r) ** 2,
            )
    # all encoder-decoder connections pass through a memory: a decoder sees only read-outs
    generator = FAMILY.build_networks("tiny")[0]
    assert len(generator.memories) == len(generator.encoder) == 3


def _hand_memory():
    """N = 5 items of dimension 2 (not unit norm: the addressing is by cosine) and one query."""
    items = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    query = torch.tensor([3.0, 1.0])
    cos = [
        3 / math.sqrt(10),
        1 / math.sqrt(10),
        -3 / math.sqrt(10),
        -1 / math.sqrt(10),
        4 / math.sqrt(20),
    ]
    z = sum(E(c) for c in cos)
    return items, query, [E(c) / z for c in cos]


def test_addressing_drops_items_below_one_over_n_and_renormalises_exactly():
    items, query, w = _hand_memory()
    # eq. (1): w = [0.344, 0.183, 0.052, 0.097, 0.325]; 1/N = 0.2 keeps items 0 and 4 only
    assert w[0] > 0.2 and w[4] > 0.2 and max(w[1], w[2], w[3]) < 0.2
    kept = w[0] + w[4]
    out, weights = memory_read(query, items)
    assert torch.allclose(weights, torch.tensor([w[0] / kept, 0, 0, 0, w[4] / kept]), atol=1e-7)
    # eq. (2) over the kept items: q_hat = sum w_i m_i
    expected = (w[0] * items[0] + w[4] * items[4]) / kept
    assert torch.allclose(out, expected, atol=1e-6)
    # the literal reading (no re-normalisation) keeps the raw weights
    out_raw, weights_raw = memory_read(query, items, renormalise=False)
    assert torch.allclose(weights_raw, torch.tensor([w[0], 0, 0, 0, w[4]]), atol=1e-7)
    assert torch.allclose(out_raw, w[0] * items[0] + w[4] * items[4], atol=1e-6)
    # the same through a level's module: a 1 x 1 x 2 map is one block, one query
    memory = BlockMemory(channels=2, size=1, items=5, division=1)
    with torch.no_grad():
        memory.memory.copy_(items)
    assert torch.allclose(memory(query.view(1, 2, 1, 1)).flatten(), expected, atol=1e-6)


def test_the_drop_keeps_weights_equal_to_the_threshold_and_never_empties_a_query():
    w = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    assert torch.equal(
        drop_below(w, 0.25), torch.tensor([[0.625, 0.375, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    )
    # a query orthogonal to every item (here: zero) addresses them uniformly: the mean item
    items = torch.randn(500, 4)
    out, weights = memory_read(torch.zeros(1, 4), items)
    assert (weights > 0).all() and torch.allclose(out, items.mean(0, keepdim=True), atol=1e-5)


# --- the losses (section 3.2, eq. 3-6; weights section 4.1) --------------------------------


def test_loss_weights_are_the_papers_and_the_sum_is_eq_3():
    weights = DAADLossWeights()
    assert (weights.reconstruction, weights.adversarial, weights.alignment) == (50.0, 0.5, 0.5)
    for recipe in ("chest", "digitanatomy"):
        assert FAMILY.recipe_presets[recipe]["loss_weights"] == {
            "reconstruction": 50.0,
            "adversarial": 0.5,
            "alignment": 0.5,
        }
    image, recon = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.1)
    real_f, fake_f = torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.2)
    terms = generator_losses(image, recon, weights, torch.zeros(2, 1), real_f, fake_f)
    assert terms["reconstruction"].item() == pytest.approx(0.01)
    assert terms["adversarial"].item() == pytest.approx(math.log(2))  # D(x_hat) = 0.5
    assert terms["alignment"].item() == pytest.approx(0.04)
    assert terms["generator"].item() == pytest.approx(50 * 0.01 + 0.5 * math.log(2) + 0.5 * 0.04)
    plain = generator_losses(image, recon, DAADLossWeights(reconstruction=2.0))
    assert set(plain) == {"reconstruction", "generator"} and plain[
        "generator"
    ].item() == pytest.approx(0.02)
    assert discriminator_loss(torch.zeros(3, 1), torch.zeros(3, 1)).item() == pytest.approx(
        2 * math.log(2)
    )
    # the alignment target f_D(x) is fixed: its gradient reaches only f_D(x_hat)
    real_f.requires_grad_(True)
    fake_f.requires_grad_(True)
    generator_losses(image, recon, weights, torch.zeros(2, 1), real_f, fake_f)[
        "generator"
    ].backward()
    assert real_f.grad is None and fake_f.grad.abs().sum() > 0


@pytest.mark.parametrize("adversarial", [False, True])
def test_one_training_iteration_logs_every_term_and_updates_the_networks(adversarial):
    nets = FAMILY.build_networks("tiny", adversarial=adversarial)
    optimizers = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    before = [[p.detach().clone() for p in n.parameters()] for n in nets]
    banks = [m.memory.detach().clone() for m in nets[0].memories]
    data = [{"image": torch.rand(4, 1, 32, 32)}]
    trainer = DAADTrainer("cpu", 1, data, nets[0], optimizers[0], *nets[1:], *optimizers[1:])
    trainer.run()
    out = trainer.state.output
    expected = {"loss", "loss_generator", "loss_reconstruction"}
    if adversarial:
        expected |= {"loss_adversarial", "loss_alignment", "loss_discriminator"}
        assert out["loss_generator"] == pytest.approx(
            50 * out["loss_reconstruction"]
            + 0.5 * out["loss_adversarial"]
            + 0.5 * out["loss_alignment"],
            rel=1e-5,
        )
        assert out["loss"] == pytest.approx(out["loss_generator"] + out["loss_discriminator"])
    else:
        assert (
            out["loss"]
            == out["loss_generator"]
            == pytest.approx(50 * out["loss_reconstruction"], rel=1e-5)
        )
    assert expected == {k for k in out if k.startswith("loss")}
    for net, old in zip(nets, before):
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), old))
    # every memory bank is learnt end to end
    assert all(not torch.equal(m.memory, bank) for m, bank in zip(nets[0].memories, banks))


# --- the score (section 3.3, eq. 7) ---------------------------------------------------------


class _Half(nn.Module):
    def forward(self, x):
        return 0.5 * x


class _PoolDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.AvgPool2d(2))
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def test_the_fused_score_is_eq_7_on_fixed_ranges():
    x = torch.rand(3, 1, 4, 4)
    scorer = DAADScorer(_Half(), _PoolDiscriminator(), gamma=0.9)
    scorer.set_scaling((0.01, 0.05), (0.002, 0.03))
    scorer.set_calibration(-0.4, 0.2)
    out = scorer(x)
    r = (0.5 * x).pow(2).flatten(1).mean(1)  # R: mean squared pixel difference
    align = (0.5 * nn.functional.avg_pool2d(x, 2)).pow(2).flatten(1).mean(1)  # L: of f_D
    a = 0.9 * (r - 0.01) / 0.04 + 0.1 * (align - 0.002) / 0.028
    assert torch.allclose(out["residual"], r) and torch.allclose(out["alignment"], align)
    assert torch.allclose(out["anomaly"], a, atol=1e-6)
    assert torch.allclose(out["logit"], -a, atol=1e-6)  # the calibrated normality
    assert torch.allclose(out["score"], torch.sigmoid(-(-a + 0.4) / 0.2), atol=1e-6)
    plain = DAADScorer(_Half(), None, gamma=0.9)  # DAAD: no alignment score, A = R_s
    plain.set_scaling((0.01, 0.05))
    assert "alignment" not in plain(x) and torch.allclose(
        plain(x)["anomaly"], (r - 0.01) / 0.04, atol=1e-6
    )


def test_the_scaling_is_fitted_on_normal_images_and_maps_them_to_0_1():
    scorer = DAADScorer(_Half(), _PoolDiscriminator())
    normals = torch.rand(6, 1, 4, 4)
    ranges = fit_scaling(scorer, [normals[:2], normals[2:]])
    r = (0.5 * normals).pow(2).flatten(1).mean(1)
    assert ranges["residual"] == pytest.approx((r.min().item(), r.max().item()))
    a = scorer(normals)["anomaly"]
    # each of R_s, L_s spans [0, 1] on these images, so does their convex combination
    assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6
    # the fit does not depend on how the normal images are batched
    again = DAADScorer(_Half(), _PoolDiscriminator())
    refit = fit_scaling(again, [normals[i : i + 1] for i in range(6)])
    # one range at a time: pytest.approx takes no nested dict (pytest >= 9.2)
    assert refit.keys() == ranges.keys()
    for name, span in ranges.items():
        assert refit[name] == pytest.approx(span), name


@pytest.mark.parametrize("adversarial", [False, True])
def test_an_image_scores_the_same_alone_and_in_a_batch(adversarial):
    scorer = FAMILY.build_scorer("tiny", adversarial=adversarial)
    normals = torch.rand(8, 1, 32, 32)
    calibrate_daad(scorer, [normals[:4], normals[4:]])
    images = torch.rand(5, 1, 32, 32)
    batch = scorer(images)
    for i in range(5):
        alone = scorer(images[i : i + 1])
        for key in ("score", "anomaly", "residual"):
            assert torch.allclose(alone[key], batch[key][i : i + 1], atol=1e-6), key


# --- the family interface ------------------------------------------------------------------


def test_daad_is_a_model_family_with_the_required_presets():
    assert isinstance(FAMILY, ModelFamily) and get_family("daad") is FAMILY
    sizes = {"tiny": 32, "small": 64, "digitanatomy_small": 96, "paper": 128, "digitanatomy": 96}
    assert {p: FAMILY.network_presets[p]["image_size"] for p in sizes} == sizes
    assert {"chest", "digitanatomy"} <= set(FAMILY.recipe_presets)
    assert (
        FAMILY.get_config("tiny")["adversarial"] is False
        and FAMILY.get_config("tiny")["gamma"] == 0.9
    )
    assert (
        FAMILY.get_config("tiny", adversarial="true")["adversarial"] is True
    )  # command-line strings
    with pytest.raises(KeyError, match="unknown DAAD network setting"):
        FAMILY.get_config("tiny", nope=1)
    assert (
        len(FAMILY.build_networks("tiny")) == 1
        and len(FAMILY.build_networks("tiny", adversarial=True)) == 2
    )

    plain, plus = FAMILY.build_scorer("tiny"), FAMILY.build_scorer("tiny", adversarial=True)
    for scorer in (plain, plus):
        assert isinstance(scorer, FAMILY.scorer) and isinstance(scorer, CalibratedScorer)
        out = scorer(torch.rand(2, 1, 32, 32))
        assert {"score", "logit", "reconstruction", "residual", "anomaly"} <= set(out)
        assert out["reconstruction"].shape == (2, 1, 32, 32) and out["score"].shape == (2,)
    # DAAD+ exposes its discriminator (Grad-CAM heat map); plain DAAD has none, but its score
    # is explained like every family's
    assert plain.discriminator is None and explainer_for(plain, "discriminator") is None
    assert explainer_for(plain)(torch.rand(2, 1, 32, 32)).shape == (2, 32, 32)
    assert isinstance(plus.discriminator, DCGANDiscriminator)
    assert plus.discriminator(torch.rand(2, 1, 32, 32)).shape == (2, 1)
    assert explainer_for(plus, "discriminator")(torch.rand(2, 1, 32, 32)).shape == (2, 32, 32)
    # the recipe rebuilds every trained weight and buffer (scaling included)
    plus.set_scaling((0.1, 0.2), (0.3, 0.4))
    rebuilt = build(Recipe("tiny", {"adversarial": True}, family="daad"))
    rebuilt.load_state_dict(plus.state_dict())  # strict
    assert torch.equal(rebuilt.alignment_range, torch.tensor([0.3, 0.4]))


# --- end to end through the bundle ----------------------------------------------------------


def test_daad_plus_is_daad_with_the_adversarial_switch_and_the_papers_learning_rate():
    daad, plus = (
        json.loads((CONFIGS / "methods" / f).read_text()) for f in ("daad.json", "daad_plus.json")
    )
    assert {k for k in {**daad, **plus} if daad.get(k) != plus.get(k)} == {
        "network_overrides",
        "lr",
    }
    assert (
        plus["network_overrides"] == {"adversarial": True} and "lr" not in daad
    )  # the recipe's lr
    assert (
        plus["lr"] == "$@recipe['adversarial_lr']"
    )  # the numbers live in the recipes, not the configs
    recipe = get_family("daad").recipe_presets["chest"]
    assert (recipe["lr"], recipe["adversarial_lr"], recipe["betas"]) == (1e-4, 2e-4, (0.9, 0.999))
    assert (
        daad["family"] == plus["family"] == "daad" and daad["lr_schedulers"] == {}
    )  # a fixed rate (section 4.1)


@pytest.mark.parametrize("config, adversarial", [("daad.json", False), ("daad_plus.json", True)])
def test_train_evaluate_and_export_through_the_bundle(tmp_path, config, adversarial):
    from monai.bundle import run

    from squid_monai.export import export_bundle

    out = tmp_path / "run"
    common = dict(
        logging_file=False,
        output_dir=str(out),
        preset="tiny",
        mlflow_tracking=False,
        progress=False,
        val_per_class=VAL_SIZE,
        report_per_class=VAL_SIZE,
    )
    run(
        "training",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "methods" / config)],
        epochs=2,
        digitanatomy_length=32,
        calibration_images=16,
        **common,
    )
    models = out / "models"
    recipe = json.loads((models / "network.json").read_text())
    assert recipe["family"] == "daad" and recipe["preset"] == "tiny"
    assert recipe["overrides"].get("adversarial", False) is adversarial
    scorer = load_scorer(models / "model.pt")
    assert isinstance(scorer, DAADScorer) and (scorer.discriminator is not None) is adversarial
    # the saved model carries its score scaling (fitted on normal images) and calibration
    assert (
        not torch.equal(scorer.residual_range, torch.tensor([0.0, 1.0])) and scorer.std.item() > 0
    )
    assert (not torch.equal(scorer.alignment_range, torch.tensor([0.0, 1.0]))) is adversarial
    ckpt = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"model", "g_optimizer", "g_scaler", "trainer"} <= set(ckpt)
    assert ("d_optimizer" in ckpt) is adversarial and ckpt["trainer"]["iteration"] == 4

    run(
        "evaluating",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        **common,
    )
    metrics = json.loads((out / "eval" / "report" / "metrics.json").read_text())
    assert 0.0 <= metrics["detector"]["auc"] <= 1.0

    result = export_bundle(CONFIGS.parent, out, filepath=tmp_path / "model.ts")
    assert max(result["max_abs_diff"].values()) <= 1e-5
    assert ("alignment" in result["max_abs_diff"]) is adversarial
