"""The DAAD / DAAD+ training iteration as a MONAI :class:`~monai.engines.Trainer`.

Source: ``seeds/daad_paper.txt``, sections 3.1.3 and 3.2. One iteration:

* DAAD: one generator step on ``50 * MSE(x_hat, x)``.
* DAAD+: a discriminator step on the real images and the detached reconstructions (eq. 5),
  then a generator step on eq. (3), ``50 L_rec + 0.5 L_adv + 0.5 L_ali``, against the updated
  discriminator (its logit and ``f_D`` of x_hat, ``f_D(x)`` as the fixed target). The paper
  does not give the alternation; one D step then one G step per batch is DCGAN's.

The non-finite-loss guard, mixed precision (one ``GradScaler`` per optimiser), the iteration
events and the float ``engine.state.output`` (``loss`` and every ``loss_*`` term) follow
:class:`squid_monai.engines.SQUIDTrainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents

from ...engines.trainer import _all_ranks, _average_running_stats, _norm_buffers, _restore, plain_tensor, unwrap
from .losses import DAADLossWeights, discriminator_loss, generator_losses

__all__ = ["DAADTrainer"]

logger = logging.getLogger(__name__)


class DAADTrainer(Trainer):
    """DAAD (``discriminator=None``) or DAAD+ training.

    Args:
        device, max_epochs, train_data_loader: as in :class:`monai.engines.Trainer`; batches
            are dicts with ``image_key`` (B, 1, H, W) in [0, 1].
        generator, g_optimizer: the memory auto-encoder and its optimiser.
        discriminator, d_optimizer: DAAD+'s discriminator and its optimiser (None: DAAD).
        loss_weights: :class:`~.losses.DAADLossWeights` or a dict of its fields.
        amp: mixed precision (float16 with GradScalers on CUDA, bfloat16 autocast on CPU).
        max_nonfinite: consecutive non-finite steps tolerated before the run is stopped.
        g_scaler, d_scaler: ``torch.amp.GradScaler`` per optimiser (saved in checkpoints).
        image_key, epoch_length, non_blocking, train_handlers, key_train_metric,
        additional_metrics, event_names, event_to_attr: as in :class:`monai.engines.Trainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        discriminator: torch.nn.Module | None = None,
        d_optimizer: torch.optim.Optimizer | None = None,
        loss_weights: DAADLossWeights | dict | None = None,
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
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("DAAD+ needs both a discriminator and its optimiser; DAAD neither")
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.optimizer = g_optimizer  # the learning rate StatsHandler / MLFlowHandler log
        if isinstance(loss_weights, dict):
            loss_weights = DAADLossWeights(**loss_weights)
        self.loss_weights = loss_weights or DAADLossWeights()
        self.max_nonfinite, self.image_key = max_nonfinite, image_key
        self.amp_device = torch.device(device).type
        self.amp_dtype = torch.float16 if self.amp_device == "cuda" else torch.bfloat16
        use_scaler = amp and self.amp_device == "cuda"
        self.g_scaler = g_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.d_scaler = d_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.state.skipped_steps = 0
        self._nonfinite_run = 0

    def run(self) -> None:  # MONAI's Trainer.run builds a deprecated single scaler: not used here
        super(Trainer, self).run()

    def _autocast(self):
        return torch.autocast(device_type=self.amp_device, dtype=self.amp_dtype, enabled=self.amp)

    def _finite(self, engine: DAADTrainer, what: str, loss: torch.Tensor) -> bool:
        if _all_ranks(torch.isfinite(loss).all()):
            return True
        engine.state.skipped_steps += 1
        self._nonfinite_run += 1
        logger.warning("non-finite %s loss at iteration %d: step skipped, weights untouched", what, engine.state.iteration)
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

    def _iteration(self, engine: DAADTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = batchdata[self.image_key] if isinstance(batchdata, dict) else batchdata
        image = plain_tensor(image).to(engine.state.device, non_blocking=engine.non_blocking).float()
        gen, disc = self.generator, self.discriminator
        nets = [gen] if disc is None else [gen, disc]
        for net in nets:
            net.train()
        g_norm = _norm_buffers(gen)
        d_norm = _norm_buffers(disc) if disc is not None else []

        with self._autocast():
            reconstruction = gen(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        d_loss, d_ok = None, True
        if disc is None:
            with self._autocast():
                terms = generator_losses(image, reconstruction, self.loss_weights)
        else:
            with self._autocast():
                d_loss = discriminator_loss(disc(image), disc(reconstruction.detach()))
            d_ok = self._finite(engine, "discriminator", d_loss)
            if d_ok:
                self._step(d_loss, self.d_optimizer, self.d_scaler)
                d_norm = _norm_buffers(disc)
            else:
                _restore(d_norm)
            # the generator's gradient, through the plain module (DDP must not reduce it into D)
            plain = unwrap(disc)
            with self._autocast():
                fake_logit, fake_features = plain.forward_features(reconstruction)
                with torch.no_grad():
                    real_features = plain.features(image)
                terms = generator_losses(image, reconstruction, self.loss_weights, fake_logit, real_features,
                                         fake_features)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = self._finite(engine, "generator", terms["generator"])
        if g_ok:
            self._step(terms["generator"], self.g_optimizer, self.g_scaler)
        else:
            _restore(g_norm + d_norm)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if d_ok and g_ok:
            self._nonfinite_run = 0
        _average_running_stats(*nets)

        output = {"loss_generator": float(terms["generator"].detach()),
                  **{f"loss_{k}": float(v.detach()) for k, v in terms.items() if k != "generator"}}
        output["loss"] = output["loss_generator"]
        if d_loss is not None:
            output["loss_discriminator"] = float(d_loss.detach())
            output["loss"] += output["loss_discriminator"]
        output["generator_updated"] = g_ok
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output
