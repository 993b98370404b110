"""The GANomaly training iteration as a MONAI :class:`~monai.engines.Trainer`.

One iteration, in the order of the authors' ``optimize_params`` (Akcay et al., ACCV 2018):

1. generator forward ``x -> z -> x_hat -> z_hat``;
2. generator step on ``w_adv L_adv + w_con L_con + w_enc L_enc`` (:mod:`.losses`) against
   the current discriminator: L_adv matches the discriminator's features of ``x`` and
   ``x_hat`` (computed through the plain module: under DDP this gradient is the
   generator's, it must not be reduced into the discriminator);
3. discriminator step on ``0.5 (BCE(D(x), 1) + BCE(D(x_hat.detach()), 0))``;
4. if that loss fell below ``reinit_threshold`` (1e-5), the discriminator is re-initialised
   (the authors' ``reinit_d``: it has won, and would give the generator no gradient);
   ``reinit_discriminator = False`` turns this off.

Both networks are updated every iteration (no critic schedule). ``engine.state.output``
holds ``loss`` and the terms (``loss_generator``, ``loss_discriminator``,
``loss_adversarial``, ``loss_contextual``, ``loss_latent``) as floats. As in
:class:`~squid_monai.engines.SQUIDTrainer`: a non-finite loss is never back-propagated (the
step is skipped, the BatchNorm statistics it touched restored, counted in
``engine.state.skipped_steps``; too many in a row stop the run), AMP uses one
``GradScaler`` per optimiser on CUDA and bfloat16 autocast on the CPU, and under
``torch.distributed`` every decision is taken by all ranks together.
``engine.state.discriminator_reinits`` counts the re-initialisations of this process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.engines import Trainer
from monai.engines.utils import IterationEvents

from ...engines.trainer import (_all_ranks, _average_running_stats, _distributed, _norm_buffers, _restore,
                                plain_tensor, unwrap)
from .losses import GANomalyLossWeights, discriminator_loss, generator_losses
from .networks import reinitialise

__all__ = ["GANomalyTrainer"]

logger = logging.getLogger(__name__)


class GANomalyTrainer(Trainer):
    """Adversarial training of GANomaly (see the module docstring).

    Args:
        device, max_epochs, train_data_loader: as in :class:`monai.engines.Trainer`; batches
            are dicts with ``image_key`` (B, 1, H, W) in [0, 1].
        generator, discriminator: the networks (optionally DDP-wrapped).
        g_optimizer, d_optimizer: their optimisers.
        loss_weights: :class:`GANomalyLossWeights` or a dict of its fields.
        reinit_discriminator: re-initialise the discriminator when its loss collapses (the
            original's behaviour, default on).
        reinit_threshold: the collapse level (the original's 1e-5).
        amp, max_nonfinite, g_scaler, d_scaler, image_key, epoch_length, non_blocking,
        train_handlers, key_train_metric, additional_metrics, event_names, event_to_attr:
            as in :class:`~squid_monai.engines.SQUIDTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        loss_weights: GANomalyLossWeights | dict | None = None,
        reinit_discriminator: bool = True,
        reinit_threshold: float = 1e-5,
        amp: bool = False,
        max_nonfinite: int = 20,
        g_scaler: torch.amp.GradScaler | None = None,
        d_scaler: torch.amp.GradScaler | None = None,
        image_key: str = "image",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
    ):
        super().__init__(
            device=device, max_epochs=max_epochs, data_loader=train_data_loader, epoch_length=epoch_length,
            non_blocking=non_blocking, key_metric=key_train_metric, additional_metrics=additional_metrics,
            handlers=train_handlers, amp=amp, event_names=event_names, event_to_attr=event_to_attr, decollate=False,
        )
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.optimizer = g_optimizer  # the learning rate MLFlowHandler / StatsHandler log
        if isinstance(loss_weights, dict):
            loss_weights = GANomalyLossWeights(**loss_weights)
        self.loss_weights = loss_weights or GANomalyLossWeights()
        self.reinit_discriminator, self.reinit_threshold = bool(reinit_discriminator), float(reinit_threshold)
        self.max_nonfinite, self.image_key = max_nonfinite, image_key
        self.amp_device = torch.device(device).type
        self.amp_dtype = torch.float16 if self.amp_device == "cuda" else torch.bfloat16
        use_scaler = amp and self.amp_device == "cuda"
        self.g_scaler = g_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.d_scaler = d_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.state.skipped_steps = 0
        self.state.discriminator_reinits = 0
        self._nonfinite_run = 0

    def run(self) -> None:  # MONAI's Trainer.run builds a deprecated single scaler: not used here
        super(Trainer, self).run()

    def _autocast(self):
        return torch.autocast(device_type=self.amp_device, dtype=self.amp_dtype, enabled=self.amp)

    def _finite(self, engine: GANomalyTrainer, what: str, loss: torch.Tensor) -> bool:
        if _all_ranks(torch.isfinite(loss).all()):
            return True
        engine.state.skipped_steps += 1
        self._nonfinite_run += 1
        logger.warning("non-finite %s loss at iteration %d: step skipped, weights untouched",
                       what, engine.state.iteration)
        if self._nonfinite_run >= self.max_nonfinite:
            raise RuntimeError(
                f"{self._nonfinite_run} consecutive non-finite losses (last: {what} at iteration "
                f"{engine.state.iteration}): training diverged; lower the learning rate or disable AMP, "
                "then resume from the latest checkpoint"
            )
        return False

    @staticmethod
    def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skips the step itself if AMP produced inf/NaN gradients
        scaler.update()

    def _reinitialise_discriminator(self, engine: GANomalyTrainer, d_loss: float) -> None:
        """The authors' ``reinit_d``: fresh DCGAN weights (identical on every rank)."""
        disc = unwrap(self.discriminator)
        reinitialise(disc)
        if _distributed():
            for tensor in disc.state_dict().values():
                dist.broadcast(tensor, src=0)
        engine.state.discriminator_reinits += 1
        logger.info("discriminator loss %.2e < %.0e at iteration %d: discriminator re-initialised",
                    d_loss, self.reinit_threshold, engine.state.iteration)

    def _iteration(self, engine: GANomalyTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = batchdata[self.image_key] if isinstance(batchdata, dict) else batchdata
        image = plain_tensor(image).to(engine.state.device, non_blocking=engine.non_blocking).float()
        gen, disc = self.generator, self.discriminator
        gen.train()
        disc.train()
        plain_disc = unwrap(disc)
        g_norm, d_norm = _norm_buffers(gen), _norm_buffers(disc)

        with self._autocast():
            out = gen(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # generator step against the current discriminator (the authors update G first)
        with self._autocast():
            with torch.no_grad():
                real_features = plain_disc.features(image)
            fake_features = plain_disc.features(out["reconstruction"])
            terms = generator_losses(image, out, real_features, fake_features, self.loss_weights)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = self._finite(engine, "generator", terms["generator"])
        if g_ok:
            self._step(terms["generator"], self.g_optimizer, self.g_scaler)
            d_norm = _norm_buffers(disc)  # the feature passes' statistics are kept with the step
        else:
            _restore(g_norm + d_norm)

        # discriminator step: real images vs the detached reconstruction
        with self._autocast():
            real_logit = disc(image)
            fake_logit = disc(out["reconstruction"].detach())
            d_loss = discriminator_loss(real_logit, fake_logit)
        d_ok = self._finite(engine, "discriminator", d_loss)
        if d_ok:
            self._step(d_loss, self.d_optimizer, self.d_scaler)
        else:
            _restore(d_norm)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if g_ok and d_ok:
            self._nonfinite_run = 0
        d_value = float(d_loss.detach())
        reinit = bool(d_ok and self.reinit_discriminator
                      and _all_ranks(d_loss.detach() < self.reinit_threshold))
        if reinit:
            self._reinitialise_discriminator(engine, d_value)
        _average_running_stats(gen, disc)

        g_value = float(terms["generator"].detach())
        engine.state.output = {
            "loss": g_value + d_value,
            "loss_generator": g_value,
            "loss_discriminator": d_value,
            **{f"loss_{k}": float(terms[k].detach()) for k in ("adversarial", "contextual", "latent")},
            "generator_updated": g_ok,
            "discriminator_reinitialised": reinit,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
