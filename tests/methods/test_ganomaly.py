"""GANomaly (shared/docs/BASELINES.md, GANomaly row; Akcay et al., ACCV 2018): the latent
distance score computed by hand from the networks' z and z_hat, the three generator loss
terms with their weights (1, 50, 1) and the discriminator's BCE by hand, the discriminator
step changing only D, the re-initialisation of a collapsed discriminator, batch
independence, Grad-CAM on the scorer's discriminator, the family interface, and the bundle
end to end (train, evaluate, TorchScript export with parity)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import squid_monai.methods.ganomaly.trainer as trainer_module
from squid_monai.export import export_bundle
from squid_monai.handlers import latest_checkpoint
from squid_monai.loading import load_scorer
from squid_monai.methods import ModelFamily, Scorer, get_family
from squid_monai.methods.ganomaly import (
    FAMILY,
    GANomalyLossWeights,
    GANomalyScorer,
    GANomalyTrainer,
    discriminator_loss,
    generator_losses,
    latent_distance,
)
from squid_monai.methods.ganomaly.networks import pyramid
from squid_monai.scoring import explainer_for, last_conv_layer
from squid_monai.scoring.scorer import calibrated_score
from squid_monai.workflow import DigitAnatomySource

from ..trained_bundle import BUNDLE, CONFIGS, TINY, evaluate_test_split, run_command

SIZE = 32  # the tiny preset
TRAIN_CONFIGS = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'methods' / 'ganomaly.json'}']"


def _batches(n=2, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(batch, 1, SIZE, SIZE, generator=g)} for _ in range(n)]


def _trainer(batches=1, lr=1e-3, **kwargs):
    gen, disc = FAMILY.build_networks("tiny")
    g_opt = torch.optim.Adam(gen.parameters(), lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr, betas=(0.5, 0.999))
    return GANomalyTrainer("cpu", 1, _batches(batches), gen, disc, g_opt, d_opt, **kwargs)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# --- the family -------------------------------------------------------------------------------


def test_ganomaly_is_a_model_family():
    assert get_family("ganomaly") is FAMILY and isinstance(FAMILY, ModelFamily)
    sizes = {p: FAMILY.get_config(p)["image_size"] for p in FAMILY.network_presets}
    assert sizes["tiny"] == 32 and sizes["small"] == 64 and sizes["paper"] == 128
    assert sizes["digitanatomy"] == sizes["digitanatomy_small"] == 96
    assert FAMILY.get_config("paper")["latent_size"] == 100  # the authors' nz
    for name in ("chest", "digitanatomy"):
        assert FAMILY.recipe_presets[name]["loss_weights"] == {
            "adversarial": 1.0,
            "contextual": 50.0,
            "latent": 1.0,
        }
        assert FAMILY.recipe_presets[name]["reinit_discriminator"] is True
    assert FAMILY.loss_weights is GANomalyLossWeights and FAMILY.trainer is GANomalyTrainer
    nets = FAMILY.build_networks("tiny", latent_size=8)
    assert len(nets) == 2 and all(isinstance(n, nn.Module) for n in nets)
    out = nets[0](torch.rand(2, 1, SIZE, SIZE))
    assert out["z"].shape == out["z_hat"].shape == (2, 8) and out["reconstruction"].shape == (
        2,
        1,
        SIZE,
        SIZE,
    )
    assert (
        0 <= out["reconstruction"].min() and out["reconstruction"].max() <= 1
    )  # the bundle's range
    with pytest.raises(KeyError, match="unknown network setting"):
        FAMILY.get_config("tiny", widths=4)
    # the authors' pyramid: halve to a 4 x 4 map (3 x 3 at 96 px); other sizes are refused
    assert pyramid(32) == (2, 4) and pyramid(128) == (4, 4) and pyramid(96) == (4, 3)
    with pytest.raises(ValueError, match="3 or 4 times a power of two"):
        FAMILY.build_networks("tiny", image_size=80)
    scorer = FAMILY.build_scorer("tiny")
    assert isinstance(scorer, GANomalyScorer) and isinstance(scorer, Scorer)
    out = scorer(torch.rand(3, 1, SIZE, SIZE))
    assert {"score", "logit", "reconstruction", "residual", "latent_distance"} <= set(out)
    assert out["score"].shape == out["logit"].shape == (3,) and out["reconstruction"].shape == (
        3,
        1,
        SIZE,
        SIZE,
    )


def test_the_discriminator_is_a_logit_network_and_grad_cam_works():
    scorer = FAMILY.build_scorer("tiny")
    disc = scorer.discriminator
    x = torch.rand(2, 1, SIZE, SIZE)
    disc.eval()
    assert disc(x).shape == (2, 1)
    features = disc.features(x)
    torch.testing.assert_close(
        disc(x), disc.classifier(features)
    )  # f(.) is what the logit is made of
    # the linear head is the original's valid convolution over the last map
    weight = disc.classifier[1].weight.reshape(1, *features.shape[1:])
    torch.testing.assert_close(disc(x), F.conv2d(features, weight).flatten(1))
    layer = dict(disc.named_modules())[last_conv_layer(disc)]
    maps = []
    layer.register_forward_hook(lambda m, i, o: maps.append(o))
    disc(x)
    assert maps[0].shape[-2:] == (4, 4)  # Grad-CAM's layer keeps a spatial map
    for explain in ("discriminator", "score"):
        heat = explainer_for(scorer, explain).explain(x, scorer(x))
        assert (
            heat.shape == (2, SIZE, SIZE) and 0 <= heat.min() and heat.max() == pytest.approx(1.0)
        )


# --- the score ----------------------------------------------------------------------------------


def test_latent_distance_is_the_mean_absolute_difference():
    z = torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    z_hat = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 2.0, 2.0]])
    torch.testing.assert_close(
        latent_distance(z, z_hat), torch.tensor([1.5, 0.5])
    )  # L1: not (1+4+9)/4, 4/4


def test_the_score_is_the_latent_distance_of_the_networks():
    scorer = FAMILY.build_scorer("tiny")
    scorer.set_calibration(-0.3, 0.05)
    gen = scorer.generator
    x = torch.rand(4, 1, SIZE, SIZE)
    out = scorer(x)
    gen.eval()
    with torch.no_grad():
        z = gen.encoder(x)
        x_hat = gen.decoder(z)
        z_hat = gen.reencoder(x_hat)
    distance = (z - z_hat).abs().mean(dim=1)
    torch.testing.assert_close(out["latent_distance"], distance)
    torch.testing.assert_close(out["logit"], -distance)  # normality: high = normal
    torch.testing.assert_close(out["score"], torch.sigmoid(-(-distance + 0.3) / 0.05))
    torch.testing.assert_close(out["reconstruction"], x_hat)
    torch.testing.assert_close(out["residual"], (x - x_hat).pow(2).flatten(1).mean(1))
    # a larger latent distance is a higher (more anomalous) score
    order = distance.argsort()
    assert torch.all(out["score"][order].diff() > 0)


def test_scores_do_not_depend_on_the_batch():
    for norm in ("batch", "instance"):
        torch.manual_seed(0)
        scorer = GANomalyScorer(*FAMILY.build_networks("tiny", norm=norm))
        with (
            torch.no_grad()
        ):  # BatchNorm statistics away from their initial values, as after training
            for layer in scorer.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.running_mean.uniform_(-0.5, 0.5)
                    layer.running_var.uniform_(0.5, 2.0)
        x = torch.rand(5, 1, SIZE, SIZE)
        together = scorer(x)
        # scoring leaves every network in eval mode, never restores a training flag (issue 39)
        assert not any(m.training for m in scorer.modules())
        for i in range(5):
            alone = scorer(x[i : i + 1])
            for key in ("score", "latent_distance", "reconstruction"):
                torch.testing.assert_close(
                    alone[key], together[key][i : i + 1], atol=1e-6, rtol=1e-5
                )
    # without eval mode the same BatchNorm generator would depend on the batch (the test can fail)
    gen = FAMILY.build_networks("tiny")[0].train()
    with torch.no_grad():
        assert not torch.allclose(gen(x[:1])["z"], gen(x)["z"][:1], atol=1e-4)


# --- the losses ---------------------------------------------------------------------------------


def test_generator_loss_terms_and_weights_by_hand():
    image = torch.zeros(1, 1, 2, 2)
    out = {
        "reconstruction": torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]]]),
        "z": torch.tensor([[1.0, 3.0]]),
        "z_hat": torch.tensor([[0.0, 1.0]]),
    }
    real, fake = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    terms = generator_losses(image, out, real, fake, GANomalyLossWeights())
    assert terms["contextual"].item() == pytest.approx(0.25)  # mean |x - x_hat|
    assert terms["latent"].item() == pytest.approx(2.5)  # mean (z - z_hat)^2 = (1 + 4) / 2
    assert terms["adversarial"].item() == pytest.approx(
        2.0
    )  # mean (f(x) - f(x_hat))^2 = (0 + 4) / 2
    assert terms["generator"].item() == pytest.approx(1 * 2.0 + 50 * 0.25 + 1 * 2.5)
    other = generator_losses(
        image, out, real, fake, GANomalyLossWeights(adversarial=2, contextual=10, latent=3)
    )
    assert other["generator"].item() == pytest.approx(2 * 2.0 + 10 * 0.25 + 3 * 2.5)


def test_discriminator_loss_is_the_mean_bce_of_real_and_fake():
    logit = torch.tensor([[math.log(3.0)]])  # sigmoid = 0.75
    assert discriminator_loss(logit, logit).item() == pytest.approx(
        0.5 * (-math.log(0.75) - math.log(0.25))
    )
    assert discriminator_loss(torch.zeros(4, 1), torch.zeros(4, 1)).item() == pytest.approx(
        math.log(2.0)
    )


def test_the_trainer_logs_the_hand_computed_losses_of_its_networks():
    trainer = _trainer()
    gen, disc = (
        copy.deepcopy(trainer.generator).train(),
        copy.deepcopy(trainer.discriminator).train(),
    )
    image = trainer.data_loader[0]["image"]
    trainer.run()
    out = trainer.state.output
    with (
        torch.no_grad()
    ):  # the pre-step networks in training mode (batch statistics), as the step saw them
        g = gen(image)
        x_hat = g["reconstruction"]
        adversarial = (disc.features(image) - disc.features(x_hat)).pow(2).mean()
        contextual = (image - x_hat).abs().mean()
        latent = (g["z"] - g["z_hat"]).pow(2).mean()
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(disc(image), torch.ones(4, 1))
            + F.binary_cross_entropy_with_logits(disc(x_hat), torch.zeros(4, 1))
        )
    assert out["loss_adversarial"] == pytest.approx(adversarial.item(), rel=1e-5)
    assert out["loss_contextual"] == pytest.approx(contextual.item(), rel=1e-5)
    assert out["loss_latent"] == pytest.approx(latent.item(), rel=1e-5)
    assert out["loss_generator"] == pytest.approx(
        (adversarial + 50 * contextual + latent).item(), rel=1e-5
    )
    assert out["loss_discriminator"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert out["loss"] == pytest.approx(out["loss_generator"] + out["loss_discriminator"])
    assert out["generator_updated"] and not out["discriminator_reinitialised"]


def test_the_generator_step_changes_only_g_and_the_discriminator_step_only_d():
    trainer = _trainer()
    gen, disc = trainer.generator, trainer.discriminator
    snapshots = {"before": (_params(gen), _params(disc))}
    for name, opt in (("after_g", trainer.g_optimizer), ("after_d", trainer.d_optimizer)):
        step = opt.step

        def wrapped(*args, _step=step, _name=name, **kwargs):
            result = _step(*args, **kwargs)
            snapshots[_name] = (
                _params(gen),
                _params(disc),
                [p.grad.clone() for p in gen.parameters()],
            )
            return result

        opt.step = wrapped
    trainer.run()
    g0, d0 = snapshots["before"]
    g1, d1, g_grad1 = snapshots["after_g"]
    g2, d2, g_grad2 = snapshots["after_d"]
    assert not _same(g0, g1) and _same(d0, d1)  # the generator step: G only
    assert _same(g1, g2) and not _same(d1, d2)  # the discriminator step: D only
    assert _same(g_grad1, g_grad2)  # ... and its loss sends no gradient into G (detached x_hat)


# --- the discriminator re-initialisation ---------------------------------------------------------------


def _inflated(trainer):
    """D's weights set far from the DCGAN initialisation N(0, 0.02)."""
    with torch.no_grad():
        for m in trainer.discriminator.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.fill_(0.5)
    return trainer


def _weight_std(disc):
    return torch.cat(
        [m.weight.flatten() for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ).std()


@pytest.mark.parametrize(
    "collapsed, switch, reinit", [(True, True, True), (False, True, False), (True, False, False)]
)
def test_a_collapsed_discriminator_is_reinitialised(monkeypatch, collapsed, switch, reinit):
    if collapsed:  # the discriminator loss below the original's 1e-5 (about 1e-8)
        real_loss = trainer_module.discriminator_loss
        monkeypatch.setattr(
            trainer_module, "discriminator_loss", lambda r, f: real_loss(r, f) * 1e-8
        )
    trainer = _inflated(_trainer(lr=1e-4, reinit_discriminator=switch))
    trainer.run()
    out = trainer.state.output
    assert (out["loss_discriminator"] < 1e-5) == collapsed
    assert out[
        "discriminator_reinitialised"
    ] == reinit and trainer.state.discriminator_reinits == int(reinit)
    weights = [
        m.weight for m in trainer.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    if reinit:  # fresh DCGAN weights
        assert _weight_std(trainer.discriminator).item() == pytest.approx(0.02, rel=0.2)
        assert all(w.abs().max() < 0.2 for w in weights)
    else:  # one Adam step away from 0.5
        assert all(torch.allclose(w, torch.full_like(w, 0.5), atol=1e-3) for w in weights)


def test_non_finite_losses_are_skipped_and_weights_untouched():
    trainer = _trainer(batches=2)
    trainer.data_loader = [{"image": torch.full((4, 1, SIZE, SIZE), float("nan"))}] * 2
    before = [
        {k: v.clone() for k, v in net.state_dict().items()}
        for net in (trainer.generator, trainer.discriminator)
    ]
    trainer.run()
    assert trainer.state.skipped_steps == 4  # G and D, two iterations
    for saved, net in zip(before, (trainer.generator, trainer.discriminator)):
        changed = [k for k, v in net.state_dict().items() if not torch.equal(saved[k], v)]
        assert not changed, changed[:5]


# --- the bundle, end to end -------------------------------------------------------------------------


def test_bundle_trains_evaluates_and_exports(tmp_path):
    out = tmp_path / "run"
    result = run_command(
        [
            "run",
            "training",
            "--config_file",
            TRAIN_CONFIGS,
            "--epochs",
            "2",
            "--output_dir",
            str(out),
            *TINY,
            "--mlflow_tracking",
            "false",
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    models = out / "models"
    recipe = json.loads((models / "network.json").read_text())
    assert {k: recipe[k] for k in ("family", "preset", "overrides")} == {
        "family": "ganomaly",
        "preset": "tiny",
        "overrides": {},
    }
    ckpt = torch.load(latest_checkpoint(models), weights_only=True)
    assert {
        "model",
        "ema_model",
        "g_optimizer",
        "d_optimizer",
        "g_scaler",
        "d_scaler",
        "trainer",
    } <= set(ckpt)
    assert (
        "g_scheduler" not in ckpt and ckpt["trainer"]["iteration"] == 4
    )  # constant rate; 2 epochs x 2
    scorer = load_scorer(models / "model.pt")
    assert (
        isinstance(scorer, GANomalyScorer)
        and scorer.std.item() > 0
        and 0 < scorer.threshold.item() < 1
    )
    summary = json.loads((models / "training_summary.json").read_text())
    assert {"val_auc", "val_auc_residual", "val_auc_feature"} <= set(summary["last_val_metrics"])

    evaluate_test_split(out)
    data = DigitAnatomySource().validation(SIZE, split="test", n_normal=2, n_abnormal=2)
    images = torch.stack([data[i]["image"].as_tensor() for i in range(len(data))])
    expected = scorer(images)
    torch.testing.assert_close(
        expected["score"], calibrated_score(-expected["latent_distance"], scorer.mean, scorer.std)
    )

    exported = export_bundle(BUNDLE, out, filepath=tmp_path / "model.ts")
    assert {"score", "logit", "latent_distance", "reconstruction"} <= set(exported["max_abs_diff"])
    assert max(exported["max_abs_diff"].values()) <= 1e-5
    module = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu")
    got = module(images)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0)
