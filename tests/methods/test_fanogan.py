"""f-AnoGAN (seeds/lecture_gan_anomaly_detection.txt, "03 F-AnoGAN"): the WGAN-GP gradient
penalty, the two training stages in one run (G and D frozen bitwise in stage 2, the stage a
function of the epoch that survives a resume), the izi_f score, batch independence, the
family interface, and the bundle end to end (train both stages, evaluate, export)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from ignite.engine import Events
from torch import nn

from squid_monai.engines import AnomalyEvaluator
from squid_monai.export import export_bundle
from squid_monai.handlers import (
    AtomicCheckpointSaver,
    ResumeFromLatest,
    RNGState,
    SaveLatest,
    latest_checkpoint,
)
from squid_monai.loading import load_scorer
from squid_monai.methods import ModelFamily, Scorer, get_family
from squid_monai.methods.fanogan import (
    FAMILY,
    FAnoGANLossWeights,
    FAnoGANScorer,
    FAnoGANTrainer,
    StartEncoderStage,
    critic_loss,
    generator_loss,
    gradient_penalty,
    izi_f,
    resolve_gan_epochs,
)
from squid_monai.metrics import SmoothedAUC
from squid_monai.scoring import explainer_for
from squid_monai.workflow import DigitAnatomySource

from ..trained_bundle import BUNDLE, CONFIGS, TINY, VAL_SIZE, evaluate_test_split, run_command

SIZE = 32  # the tiny preset
FANOGAN_CONFIGS = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'methods' / 'fanogan.json'}']"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny convolutions only lose from more on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the family -------------------------------------------------------------------------------


def test_fanogan_is_a_model_family():
    assert get_family("fanogan") is FAMILY and isinstance(FAMILY, ModelFamily)
    assert {"tiny", "small", "digitanatomy_small", "paper", "digitanatomy"} <= set(
        FAMILY.network_presets
    )
    sizes = {p: FAMILY.get_config(p)["image_size"] for p in FAMILY.network_presets}
    assert sizes["tiny"] == 32 and sizes["small"] == 64 and sizes["paper"] == 128
    assert sizes["digitanatomy"] == sizes["digitanatomy_small"] == 96
    assert {"chest", "digitanatomy"} <= set(FAMILY.recipe_presets)
    assert FAMILY.recipe_presets["chest"]["n_critic"] == 5  # WGAN-GP's
    assert FAMILY.loss_weights is FAnoGANLossWeights and FAMILY.trainer is FAnoGANTrainer
    nets = FAMILY.build_networks("tiny", latent_dim=8)
    assert len(nets) == 3 and all(
        type(n).__module__.startswith("squid_monai") and isinstance(n, nn.Module) for n in nets
    )
    assert nets[0].latent_dim == 8 and nets[2](torch.rand(2, 1, SIZE, SIZE)).shape == (2, 8)
    with pytest.raises(KeyError, match="unknown network setting"):
        FAMILY.get_config("tiny", channels=(1,))
    with pytest.raises(ValueError, match="no batch statistics"):
        FAMILY.build_networks("tiny", critic_norm="batch")
    scorer = FAMILY.build_scorer("tiny")
    assert isinstance(scorer, FAMILY.scorer) and isinstance(scorer, Scorer)
    out = scorer(torch.rand(3, 1, SIZE, SIZE))
    assert {"score", "logit", "reconstruction", "residual", "izi_f"} <= set(out)
    assert out["reconstruction"].shape == (3, 1, SIZE, SIZE) and out["score"].shape == (3,)


def test_the_critic_is_the_scorers_discriminator_and_grad_cam_works():
    scorer = FAMILY.build_scorer("tiny")
    x = torch.rand(2, 1, SIZE, SIZE)
    assert scorer.discriminator(x).shape == (2, 1)
    # the critic value is the final linear layer on f (the features of the izi_f term)
    linear = scorer.discriminator.final[1]
    torch.testing.assert_close(scorer.discriminator(x), linear(scorer.discriminator.features(x)))
    for explain in ("discriminator", "score"):
        maps = explainer_for(scorer, explain).explain(x, scorer(x))
        assert maps.shape == (2, SIZE, SIZE) and 0 <= maps.min() and maps.max() <= 1


# --- losses against their definitions ----------------------------------------------------------


class _Linear(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True) + self.b


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    w = torch.zeros(1, 1, 2, 2)
    w[0, 0, 0, 0], w[0, 0, 1, 1] = 3.0 * 0.6, 3.0 * 0.8  # ||w|| = 3
    critic = _Linear(w)
    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx((3.0 - 1.0) ** 2, abs=1e-5)  # whatever the interpolates
    penalty.backward()  # create_graph: the penalty trains the critic, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 2 * (3.0 - 1.0) * w / 3.0)
    assert critic.b.grad is None  # the bias does not change the gradient


def test_gradient_penalty_interpolates_per_sample():
    """D(x) = ||x||^2 / 2 has gradient xhat: the penalty is mean_i (||eps_i x_i + (1 - eps_i) y_i|| - 1)^2."""

    class Half(nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).pow(2).sum(1, keepdim=True)

    real, fake = torch.full((2, 1, 1, 4), 1.0), torch.zeros(2, 1, 1, 4)
    eps = torch.tensor([0.25, 1.0])  # xhat norms: 0.25 * 2 = 0.5 and 2
    penalty = gradient_penalty(Half(), real, fake, epsilon=eps)
    assert penalty.item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)


def test_critic_and_generator_losses_by_hand():
    terms = critic_loss(
        torch.tensor([[1.0], [2.0]]),
        torch.tensor([[0.0], [-1.0]]),
        torch.tensor(0.5),
        FAnoGANLossWeights(gradient_penalty=10.0),
    )
    assert terms["wasserstein"].item() == pytest.approx(2.0)  # 1.5 - (-0.5)
    assert terms["critic"].item() == pytest.approx(-2.0 + 10.0 * 0.5)
    assert generator_loss(torch.tensor([[0.0], [-1.0]])).item() == pytest.approx(0.5)


def test_izi_f_by_hand():
    image, reconstruction = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    reconstruction[1] = 0.5
    f_image = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    f_rec = torch.tensor([[3.0, 2.0], [1.0, 1.0]])
    terms = izi_f(image, reconstruction, f_image, f_rec, kappa=0.5)
    torch.testing.assert_close(terms["image"], torch.tensor([1.0, 0.25]))  # 1/n ||x - G(E(x))||^2
    torch.testing.assert_close(
        terms["feature"], torch.tensor([2.0, 1.0])
    )  # 1/n_d ||f(x) - f(G(E(x)))||^2
    torch.testing.assert_close(terms["izi_f"], torch.tensor([1.0 + 0.5 * 2.0, 0.25 + 0.5 * 1.0]))


def test_the_score_is_izi_f_of_the_image():
    g, d, e = FAMILY.build_networks("tiny")
    scorer = FAnoGANScorer(g, d, e, kappa=2.5)
    scorer.set_calibration(-0.3, 0.2)
    x = torch.rand(3, 1, SIZE, SIZE)
    out = scorer(x)
    with torch.no_grad():
        for net in (g, d, e):
            net.eval()
        rec = g(e(x))
        pixel = ((x - rec) ** 2).mean(dim=(1, 2, 3))
        feature = ((d.features(x) - d.features(rec)) ** 2).mean(dim=1)
    expected = pixel + 2.5 * feature
    torch.testing.assert_close(out["reconstruction"], rec)
    torch.testing.assert_close(out["izi_f"], expected)
    torch.testing.assert_close(out["residual"], pixel)
    torch.testing.assert_close(out["logit"], -expected)  # normality = -izi_f is what is calibrated
    torch.testing.assert_close(out["score"], torch.sigmoid(-((-expected) - (-0.3)) / 0.2))
    # kappa is saved with the weights: a model rebuilt from its recipe scores with it
    rebuilt = FAMILY.build_scorer("tiny")
    rebuilt.load_state_dict(scorer.state_dict())
    assert rebuilt.kappa.item() == 2.5
    torch.testing.assert_close(rebuilt(x)["score"], out["score"])


def test_scores_do_not_depend_on_the_batch():
    scorer = FAMILY.build_scorer("tiny")
    with (
        torch.no_grad()
    ):  # G's BatchNorm statistics away from their initial values, as after training
        for layer in scorer.generator.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    x = torch.rand(5, 1, SIZE, SIZE)
    together = scorer(x)
    for i in range(5):
        alone = scorer(x[i : i + 1])
        for key in ("score", "izi_f", "reconstruction"):
            torch.testing.assert_close(alone[key], together[key][i : i + 1], atol=1e-6, rtol=1e-5)


# --- the trainer -------------------------------------------------------------------------------


def _batches(n=3, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(batch, 1, SIZE, SIZE, generator=g)} for _ in range(n)]


def _setup(seed=0, **kwargs):
    torch.manual_seed(seed)
    g, d, e = FAMILY.build_networks("tiny")
    opts = {
        "g_optimizer": torch.optim.Adam(g.parameters(), 1e-3, betas=(0.0, 0.9)),
        "d_optimizer": torch.optim.Adam(d.parameters(), 1e-3, betas=(0.0, 0.9)),
        "e_optimizer": torch.optim.Adam(e.parameters(), 1e-3),
    }
    kwargs = {"max_epochs": 2, "gan_epochs": 1, "n_critic": 2, **kwargs}
    trainer = FAnoGANTrainer(
        "cpu",
        train_data_loader=_batches(),
        generator=g,
        discriminator=d,
        encoder=e,
        **opts,
        **kwargs,
    )
    outputs = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda eng: outputs.append((eng.state.epoch, dict(eng.state.output))),
    )
    return trainer, (g, d, e), opts, outputs


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gan_epochs_a_fraction_or_a_count():
    assert resolve_gan_epochs(0.8, 10) == 8 and resolve_gan_epochs(0.5, 2) == 1
    assert (
        resolve_gan_epochs(0.99, 2) == 1 and resolve_gan_epochs(0.01, 10) == 1
    )  # both stages always run
    assert resolve_gan_epochs(3, 10) == 3 and resolve_gan_epochs(3.0, 10) == 3
    for bad, epochs in ((10, 10), (1.5, 10), (0, 10), (0.5, 1)):
        with pytest.raises(ValueError):
            resolve_gan_epochs(bad, epochs)


def test_stage_1_trains_g_and_d_stage_2_only_e_with_g_and_d_bitwise_frozen():
    trainer, (g, d, e), opts, outputs = _setup()
    assert [trainer.stage(k) for k in (1, 2)] == [1, 2]
    states = {}
    trainer.add_event_handler(
        Events.EPOCH_STARTED(once=2),
        lambda _: states.update(
            g=_state(g),
            d=_state(d),
            e=_state(e),
            opt={k: copy.deepcopy(o.state_dict()) for k, o in opts.items()},
        ),
    )
    start = {"g": _state(g), "d": _state(d), "e": _state(e)}
    trainer.run()
    # stage 1: the critic every iteration, the generator every n_critic-th (iteration 2), E untouched
    assert [(ep, o["stage"]) for ep, o in outputs] == [(1, 1)] * 3 + [(2, 2)] * 3
    assert [o["generator_updated"] for _, o in outputs[:3]] == [False, True, False]
    assert {
        "loss",
        "loss_critic",
        "loss_generator",
        "loss_wasserstein",
        "loss_gradient_penalty",
    } <= set(outputs[0][1])
    assert {"loss", "loss_encoder", "loss_image", "loss_feature"} <= set(outputs[3][1])
    assert not _equal(start["g"], states["g"]) and not _equal(start["d"], states["d"])
    assert _equal(start["e"], states["e"])
    assert not any(
        k.endswith("num_batches_tracked") and v.item() == 0 for k, v in states["g"].items()
    )
    # stage 2: G and D (weights and BatchNorm statistics) bitwise as stage 1 left them, E trained
    assert _equal(states["g"], _state(g)) and _equal(states["d"], _state(d))
    assert not _equal(states["e"], _state(e))
    assert (
        _optimizer_steps(opts["g_optimizer"]) == _optimizer_steps(states["opt"]["g_optimizer"]) == 1
    )
    assert (
        _optimizer_steps(opts["d_optimizer"]) == _optimizer_steps(states["opt"]["d_optimizer"]) == 3
    )
    assert (
        _optimizer_steps(opts["e_optimizer"]) == 3
        and _optimizer_steps(states["opt"]["e_optimizer"]) == 0
    )
    assert all(
        p.requires_grad for net in (g, d, e) for p in net.parameters()
    )  # frozen only during the step
    # the stage-2 optimiser holds E's parameters only
    with pytest.raises(ValueError, match="encoder's parameters only"):
        FAnoGANTrainer(
            "cpu",
            2,
            _batches(),
            g,
            d,
            e,
            opts["g_optimizer"],
            opts["d_optimizer"],
            torch.optim.Adam([*e.parameters(), *g.parameters()]),
        )


def _optimizer_steps(optimizer) -> int:
    state = (
        optimizer.state_dict()["state"] if hasattr(optimizer, "state_dict") else optimizer["state"]
    )
    return max((int(s["step"]) for s in state.values()), default=0)


def test_a_killed_run_resumes_in_the_right_stage_to_the_same_weights(tmp_path):
    reference, ref_nets, _, _ = _setup()
    reference.run()

    def handlers(folder, nets, opts, trainer_scalers=None):
        objects = {
            "generator": nets[0],
            "discriminator": nets[1],
            "encoder": nets[2],
            **opts,
            "rng": RNGState(),
        }
        return [ResumeFromLatest(folder, objects), SaveLatest(folder, objects)]

    # first run: killed after epoch 1 (the last GAN epoch)
    torch.manual_seed(0)
    nets = FAMILY.build_networks("tiny")
    opts = _opts(nets)
    first = FAnoGANTrainer(
        "cpu",
        2,
        _batches(),
        *nets,
        **opts,
        gan_epochs=1,
        n_critic=2,
        train_handlers=handlers(tmp_path, nets, opts),
    )
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda eng: eng.terminate())
    first.run()
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=1.pt"
    # the same command again, fresh networks: resumes at epoch 2, in stage 2
    torch.manual_seed(123)
    nets = FAMILY.build_networks("tiny")
    opts = _opts(nets)
    started = []
    second = FAnoGANTrainer(
        "cpu",
        2,
        _batches(),
        *nets,
        **opts,
        gan_epochs=1,
        n_critic=2,
        train_handlers=handlers(tmp_path, nets, opts),
        on_encoder_stage=[started.append],
    )
    stages = []
    second.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda eng: stages.append((eng.state.epoch, eng.state.output["stage"])),
    )
    second.run()
    assert stages == [(2, 2)] * 3 and started == [second]
    for a, b in zip(ref_nets, nets):
        assert _equal(_state(a), _state(b))


def _opts(nets):
    g, d, e = nets
    return {
        "g_optimizer": torch.optim.Adam(g.parameters(), 1e-3, betas=(0.0, 0.9)),
        "d_optimizer": torch.optim.Adam(d.parameters(), 1e-3, betas=(0.0, 0.9)),
        "e_optimizer": torch.optim.Adam(e.parameters(), 1e-3),
    }


def test_the_encoder_stage_restarts_model_selection_and_the_weight_average(tmp_path):
    """Stage-1 validations score with an untrained encoder: once stage 2 starts, the best
    model is chosen among stage-2 validations only, and the average restarts from the live G and D."""
    scorer = FAMILY.build_scorer("tiny")
    x = torch.rand(8, 1, SIZE, SIZE)
    order = scorer(x)["score"].argsort()
    label = torch.zeros(8, dtype=torch.long)
    label[order[4:]] = 1  # the 4 highest scores abnormal: AUC 1
    data = [{"image": x, "label": label}]
    smoothed = SmoothedAUC(window=3, output_transform=lambda o: (o["score"], o["label"]))
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": scorer},
        save_key_metric=True,
        key_metric_filename="model.pt",
    )
    evaluator = AnomalyEvaluator(
        "cpu", data, scorer, key_val_metric={"val_auc_smoothed": smoothed}, val_handlers=[saver]
    )
    evaluator.run(1)
    assert evaluator.state.best_metric == 1.0 and (tmp_path / "model.pt").is_file()
    ema = copy.deepcopy(scorer)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.1)  # the average lags behind the live weights
    (tmp_path / "model.pt").unlink()
    StartEncoderStage(evaluator, {"val_auc_smoothed": smoothed}, ema_model=ema, model=scorer)(
        evaluator
    )
    assert evaluator.state.best_metric == -1 and smoothed.history == []
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), scorer.parameters()))
    label[:] = 1 - label  # a worse validation (AUC 0) is the best of stage 2 and is saved
    evaluator.run(2)
    assert evaluator.state.best_metric == 0.0 and evaluator.state.best_metric_epoch == 2
    assert (tmp_path / "model.pt").is_file() and smoothed.history == [0.0]


# --- the bundle, end to end --------------------------------------------------------------------


def test_bundle_trains_both_stages_evaluates_and_exports(tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        "training",
        "--config_file",
        FANOGAN_CONFIGS,
        "--epochs",
        "2",
        "--output_dir",
        str(out),
        *TINY,
        "--n_critic",
        "2",
        "--mlflow_tracking",
        "false",
    ]
    result = run_command(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "encoder stage from epoch 2" in log
    models = out / "models"
    assert json.loads((models / "network.json").read_text())["family"] == "fanogan"
    summary = json.loads((models / "training_summary.json").read_text())
    assert (
        summary["epochs"] == 2 and summary["best_epoch"] == 2
    )  # chosen among encoder-stage validations
    assert (
        "val_auc_feature" in summary["last_val_metrics"]
    )  # the critic's features: the kappa term's AUC
    ckpt = torch.load(latest_checkpoint(models), weights_only=True)
    assert {
        "g_optimizer",
        "d_optimizer",
        "e_optimizer",
        "g_scaler",
        "d_scaler",
        "e_scaler",
        "trainer",
    } <= set(ckpt)
    assert (
        ckpt["trainer"]["iteration"] == 4 and ckpt["e_optimizer"]["state"]
    )  # 2 x 2 iterations; E was trained
    scorer = load_scorer(models / "model.pt")
    assert (
        isinstance(scorer, FAnoGANScorer)
        and scorer.std.item() > 0
        and 0 < scorer.threshold.item() < 1
    )

    evaluate_test_split(out)
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    assert metrics["n_normal"] == metrics["n_abnormal"] == VAL_SIZE

    exported = export_bundle(BUNDLE, out, filepath=tmp_path / "model.ts")
    assert {"score", "izi_f", "reconstruction"} <= set(exported["max_abs_diff"])
    assert max(exported["max_abs_diff"].values()) <= 1e-5
    module = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu")
    data = DigitAnatomySource().validation(SIZE, split="test", n_normal=2, n_abnormal=2)
    images = torch.stack([data[i]["image"].as_tensor() for i in range(len(data))])
    expected, got = scorer(images), module(images)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0)
