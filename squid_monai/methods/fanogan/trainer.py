"""f-AnoGAN's two training stages in one MONAI :class:`~monai.engines.Trainer` run.

Source: ``seeds/lecture_gan_anomaly_detection.txt``, "03 F-AnoGAN": Step 1 trains a WGAN-GP
on normal images; Step 2 trains the encoder with the generator's and the critic's
"parameters ... fixed" on the izi_f loss (:mod:`.losses`).

* Stage 1 (epochs ``1 .. gan_epochs``): every iteration one critic step on the batch and a
  fresh ``z ~ N(0, I)`` (WGAN-GP loss with gradient penalty); every ``n_critic``-th
  iteration (of the run, so a resumed run keeps the rhythm) also one generator step on a
  fresh ``z`` (Gulrajani et al. 2017, Algorithm 1: ``n_critic`` = 5). The encoder is not
  touched.
* Stage 2 (epochs ``gan_epochs + 1 .. max_epochs``): one encoder step per iteration on
  ``mean izi_f``; G and D run in eval mode with their parameters frozen
  (``requires_grad=False`` for the step) and their optimisers are never stepped, so their
  weights and BatchNorm statistics stay bitwise as stage 1 left them.

The stage is a function of ``engine.state.epoch`` only (:meth:`FAnoGANTrainer.stage`), which a
resumed run restores from its checkpoint, so a killed run resumes in the right stage.
``gan_epochs`` is a fraction of ``max_epochs`` (< 1) or a count (>= 1); the documents give no
split: the lecture's exercise runs 1500 WGAN-GP epochs, then 200 encoder epochs (about 0.88),
and the recipes use 0.8, leaving the encoder a little more.

Validations during stage 1 score with the untrained encoder (the scorer is always E then
G): their AUCs mean nothing. ``on_encoder_stage`` callables run when stage 2 begins;
:class:`StartEncoderStage` restarts the model selection there (so ``model.pt`` is a stage-2
model) and restarts the weight average from the live weights (so the average's G is the G
the encoder is trained against).

``engine.state.output``: stage 1 ``loss`` (critic + generator), ``loss_critic``,
``loss_generator``, ``loss_wasserstein`` (the critic's distance estimate), ``loss_gradient_penalty``;
stage 2 ``loss`` = ``loss_encoder`` (mean izi_f), ``loss_image``, ``loss_feature``; both
``stage``. Non-finite losses are skipped as in :class:`~squid_monai.methods.squid.trainer.SQUIDTrainer`
(the guard of their shared base, :class:`~squid_monai.engines.base.AdversarialTrainer`; the
generator's BatchNorm statistics restored). Distributed data parallelism is not wired
for this family (the bundle's multi-GPU config wraps only a generator and a discriminator).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver

from ...engines.base import AdversarialTrainer
from ...engines.utils import average_running_stats, norm_buffers, unwrap
from .losses import FAnoGANLossWeights, critic_loss, generator_loss, gradient_penalty, izi_f

__all__ = ["FAnoGANTrainer", "StartEncoderStage", "resolve_gan_epochs", "restart_selection"]

logger = logging.getLogger(__name__)


def resolve_gan_epochs(gan_epochs: float, max_epochs: int) -> int:
    """The number of stage-1 (WGAN-GP) epochs: ``round(gan_epochs * max_epochs)`` for a
    fraction (< 1), kept within ``[1, max_epochs - 1]``; ``gan_epochs`` itself for a count
    (>= 1), which must leave at least one epoch for the encoder."""
    max_epochs = int(max_epochs)
    if max_epochs < 2:
        raise ValueError(
            f"f-AnoGAN trains in two stages (WGAN-GP, then the encoder): it needs epochs >= 2, got {max_epochs}"
        )
    value = float(gan_epochs)
    if not value > 0:
        raise ValueError(
            f"gan_epochs must be > 0 (a fraction < 1 or a count >= 1), got {gan_epochs!r}"
        )
    if value < 1:
        return min(max(round(value * max_epochs), 1), max_epochs - 1)
    if value != int(value):
        raise ValueError(
            f"gan_epochs >= 1 is a count of epochs and must be whole, got {gan_epochs!r}"
        )
    if int(value) >= max_epochs:
        raise ValueError(
            f"gan_epochs={int(value)} leaves no epoch of the {max_epochs} for the encoder"
        )
    return int(value)


@contextlib.contextmanager
def _frozen(*modules: torch.nn.Module):
    """No parameter gradient for ``modules`` inside (restoring each flag afterwards): the
    gradients still flow through them to the inputs."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def restart_selection(evaluator: Engine, metrics: Mapping | Iterable | None = None) -> None:
    """Forget every validation so far: the evaluator's best metric and its epoch (MONAI's
    initial -1), the records of the key-metric checkpoint savers attached to it (Ignite keeps
    the saved scores in memory and would refuse a lower one), and the ``history`` of
    smoothed metrics in ``metrics`` (e.g. :class:`~squid_monai.metrics.SmoothedAUC`)."""
    evaluator.state.best_metric = -1
    evaluator.state.best_metric_epoch = -1
    for handlers in getattr(evaluator, "_event_handlers", {}).values():
        for handler, *_ in handlers:
            saver = getattr(handler, "__self__", None)
            if isinstance(saver, CheckpointSaver) and isinstance(
                saver._key_metric_checkpoint, Checkpoint
            ):
                saver._key_metric_checkpoint.reset()
    values = metrics.values() if isinstance(metrics, Mapping) else (metrics or ())
    for metric in values:
        history = getattr(metric, "history", None)
        if isinstance(history, list):
            history.clear()


class StartEncoderStage:
    """What changes outside the trainer when stage 2 begins (an ``on_encoder_stage``
    callable of :class:`FAnoGANTrainer`).

    Args:
        evaluator, metrics: :func:`restart_selection` of the validation engine and its key
            metrics, so that the best model is chosen among encoder-stage validations only.
        ema_model, model: copy ``model``'s parameters into ``ema_model`` (the weight
            average's copy): the average then starts from the frozen G and D the encoder is
            trained against instead of lagging behind them. Nothing when they are one object
            (averaging off).
    """

    def __init__(
        self,
        evaluator: Engine | None = None,
        metrics: Mapping | Iterable | None = None,
        ema_model: torch.nn.Module | None = None,
        model: torch.nn.Module | None = None,
    ):
        self.evaluator, self.metrics, self.ema_model, self.model = (
            evaluator,
            metrics,
            ema_model,
            model,
        )

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        if self.evaluator is not None:
            restart_selection(self.evaluator, self.metrics)
        if (
            self.ema_model is not None
            and self.model is not None
            and self.ema_model is not self.model
        ):
            live = dict(self.model.named_parameters())
            for name, param in self.ema_model.named_parameters():
                param.copy_(live[name])
        logger.info(
            "f-AnoGAN: encoder stage from epoch %d (generator and critic frozen)",
            engine.state.epoch,
        )


class FAnoGANTrainer(AdversarialTrainer):
    """WGAN-GP, then izi_f encoder training (module docstring).

    Args:
        device, max_epochs, train_data_loader: as for any MONAI trainer; batches are dicts
            with ``image_key`` (B, 1, H, W) in [0, 1].
        generator, discriminator, encoder: G (with ``latent_dim``), the critic D (with
            ``features``) and E.
        g_optimizer, d_optimizer, e_optimizer: one optimiser per network (``e_optimizer``
            must hold E's parameters only).
        loss_weights: :class:`FAnoGANLossWeights` or a dict of its fields.
        n_critic: critic steps per generator step in stage 1.
        gan_epochs: stage-1 epochs, a fraction of ``max_epochs`` (< 1) or a count
            (:func:`resolve_gan_epochs`).
        e_scaler: the encoder's ``torch.amp.GradScaler`` (put it in checkpoints).
        on_encoder_stage: callables ``f(engine)`` run when the first stage-2 epoch starts
            (again after a resume into that epoch), e.g. :class:`StartEncoderStage`.
        kwargs: ``g_scaler``, ``d_scaler``, ``amp`` (a ``GradScaler`` per optimiser, float16
            on CUDA, bfloat16 on the CPU when asked; the gradient penalty is always float32),
            ``max_nonfinite``, ``image_key`` and MONAI's engine arguments, see
            :class:`~squid_monai.engines.base.AdversarialTrainer`.
    """

    weights_type = FAnoGANLossWeights

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        encoder: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        e_optimizer: torch.optim.Optimizer,
        loss_weights: FAnoGANLossWeights | dict | None = None,
        n_critic: int = 5,
        gan_epochs: float = 0.8,
        *,
        e_scaler: torch.amp.GradScaler | None = None,
        on_encoder_stage: Sequence[Callable[[Engine], Any]] = (),
        **kwargs: Any,
    ):
        nets = (generator, discriminator, g_optimizer, d_optimizer)
        super().__init__(device, max_epochs, train_data_loader, *nets, loss_weights, **kwargs)
        if int(n_critic) < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        encoder_params = {id(p) for p in encoder.parameters()}
        if any(
            id(p) not in encoder_params
            for group in e_optimizer.param_groups
            for p in group["params"]
        ):
            raise ValueError(
                "e_optimizer must hold the encoder's parameters only (G and D are frozen in stage 2)"
            )
        self.encoder, self.e_optimizer = encoder, e_optimizer
        self.n_critic = int(n_critic)
        self.gan_epochs = resolve_gan_epochs(gan_epochs, max_epochs)
        self.on_encoder_stage = list(on_encoder_stage or ())
        self.e_scaler = self.grad_scaler(e_scaler)
        self.add_event_handler(Events.EPOCH_STARTED, self._begin_epoch)

    def stage(self, epoch: int | None = None) -> int:
        """1 (WGAN-GP) or 2 (encoder) for a 1-based ``epoch`` (default: the current one)."""
        epoch = self.state.epoch if epoch is None else epoch
        return 1 if int(epoch) <= self.gan_epochs else 2

    def _begin_epoch(self, engine: FAnoGANTrainer) -> None:
        if int(engine.state.epoch) == self.gan_epochs + 1:
            for callback in self.on_encoder_stage:
                callback(engine)

    def _iteration(self, engine: FAnoGANTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        if self.stage(engine.state.epoch) == 1:
            output = self._gan_iteration(engine, image)
        else:
            output = self._encoder_iteration(engine, image)
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output

    def _latent(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randn(batch, unwrap(self.generator).latent_dim, device=device)

    def _gan_iteration(self, engine: FAnoGANTrainer, image: torch.Tensor) -> dict[str, Any]:
        gen, disc = self.generator, self.discriminator
        gen.train()
        disc.train()
        self.encoder.eval()
        update_g = engine.state.iteration % self.n_critic == 0
        batch = image.shape[0]
        g_norm = norm_buffers(
            gen
        )  # the fake pass writes G's BatchNorm statistics: restored if skipped
        with self._autocast(), torch.no_grad():
            fake = gen(self._latent(batch, image.device))
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # critic: real and fake in one pass (no batch statistics in the critic), penalty in fp32
        with self._autocast():
            values = disc(torch.cat([image, fake.to(image.dtype)]))
        penalty = gradient_penalty(disc, image, fake)
        d_terms = critic_loss(values[:batch], values[batch:], penalty, self.loss_weights)
        d_ok = self._guarded_step(
            engine, "critic", d_terms["critic"], self.d_optimizer, self.d_scaler, g_norm
        )
        if d_ok:
            g_norm = norm_buffers(gen)

        if update_g:
            plain = unwrap(disc)  # G's gradient through D; D's own parameters stay out of it
            with _frozen(plain), self._autocast():
                g_loss = generator_loss(plain(gen(self._latent(batch, image.device))))
        else:  # logged only: the critic step's fake values
            g_loss = generator_loss(values[batch:].detach())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = update_g and self._guarded_step(
            engine, "generator", g_loss, self.g_optimizer, self.g_scaler, g_norm
        )
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if d_ok and (g_ok or not update_g):
            self._nonfinite_run = 0
        average_running_stats(gen)
        return {
            "loss": float(d_terms["critic"].detach()) + float(g_loss.detach()),
            "loss_critic": float(d_terms["critic"].detach()),
            "loss_generator": float(g_loss.detach()),
            "loss_wasserstein": float(d_terms["wasserstein"].detach()),
            "loss_gradient_penalty": float(d_terms["gradient_penalty"].detach()),
            "stage": 1,
            "generator_updated": g_ok,
        }

    def _encoder_iteration(self, engine: FAnoGANTrainer, image: torch.Tensor) -> dict[str, Any]:
        # the plain G and D (never their DDP wrappers): they take no part in any gradient reduction
        gen, disc = unwrap(self.generator), unwrap(self.discriminator)
        gen.eval()
        disc.eval()
        self.encoder.train()
        with _frozen(gen, disc):
            with self._autocast():
                reconstruction = gen(self.encoder(image))
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            with torch.autocast(device_type=self.amp_device, enabled=False):
                with torch.no_grad():
                    real_features = disc.features(image)
                terms = izi_f(
                    image,
                    reconstruction,
                    real_features,
                    disc.features(reconstruction.float()),
                    self.loss_weights.kappa,
                )
                loss = terms["izi_f"].mean()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            if self._guarded_step(engine, "encoder", loss, self.e_optimizer, self.e_scaler):
                self._nonfinite_run = 0
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        return {
            "loss": float(loss.detach()),
            "loss_encoder": float(loss.detach()),
            "loss_image": float(terms["image"].detach().mean()),
            "loss_feature": float(terms["feature"].detach().mean()),
            "stage": 2,
        }
