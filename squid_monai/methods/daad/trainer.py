"""The DAAD / DAAD+ training iteration as a MONAI :class:`~monai.engines.Trainer`.

Source: ``seeds/daad_paper.txt``, sections 3.1.3 and 3.2. One iteration:

* DAAD: one generator step on ``50 * MSE(x_hat, x)``.
* DAAD+: a discriminator step on the real images and the detached reconstructions (eq. 5),
  then a generator step on eq. (3), ``50 L_rec + 0.5 L_adv + 0.5 L_ali``, against the updated
  discriminator (its logit and ``f_D`` of x_hat, ``f_D(x)`` as the fixed target). The paper
  does not give the alternation; one D step then one G step per batch is DCGAN's.

The non-finite-loss guard, mixed precision (one ``GradScaler`` per optimiser), the iteration
events and the float ``engine.state.output`` (``loss`` and every ``loss_*`` term) follow
:class:`squid_monai.methods.squid.trainer.SQUIDTrainer` (their shared base:
:class:`~squid_monai.engines.base.AdversarialTrainer`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from ...engines.base import AdversarialTrainer
from ...engines.utils import average_running_stats, norm_buffers, unwrap
from .losses import DAADLossWeights, discriminator_loss, generator_losses

__all__ = ["DAADTrainer"]


class DAADTrainer(AdversarialTrainer):
    """DAAD (``discriminator=None``) or DAAD+ training.

    Args:
        device, max_epochs, train_data_loader: as in :class:`monai.engines.Trainer`; batches
            are dicts with ``image_key`` (B, 1, H, W) in [0, 1].
        generator, g_optimizer: the memory auto-encoder and its optimiser.
        discriminator, d_optimizer: DAAD+'s discriminator and its optimiser (None: DAAD).
        loss_weights: :class:`~.losses.DAADLossWeights` or a dict of its fields.
        kwargs: ``g_scaler``, ``d_scaler``, ``amp``, ``max_nonfinite``, ``image_key`` and
            MONAI's engine arguments, see :class:`~squid_monai.engines.base.AdversarialTrainer`
            (its arguments in this family's positional order).
    """

    weights_type = DAADLossWeights

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
        **kwargs: Any,
    ):
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("DAAD+ needs both a discriminator and its optimiser; DAAD neither")
        nets = (generator, discriminator, g_optimizer, d_optimizer)
        super().__init__(device, max_epochs, train_data_loader, *nets, loss_weights, **kwargs)

    def _iteration(self, engine: DAADTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        gen, disc = self.generator, self.discriminator
        nets = [gen] if disc is None else [gen, disc]
        for net in nets:
            net.train()
        g_norm = norm_buffers(gen)
        d_norm = norm_buffers(disc) if disc is not None else []

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
            d_ok = self._guarded_step(
                engine, "discriminator", d_loss, self.d_optimizer, self.d_scaler, d_norm
            )
            if d_ok:
                d_norm = norm_buffers(disc)
            # the generator's gradient, through the plain module (DDP must not reduce it into D)
            plain = unwrap(disc)
            with self._autocast():
                fake_logit, fake_features = plain.forward_features(reconstruction)
                with torch.no_grad():
                    real_features = plain.features(image)
                terms = generator_losses(
                    image,
                    reconstruction,
                    self.loss_weights,
                    fake_logit,
                    real_features,
                    fake_features,
                )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = self._guarded_step(
            engine,
            "generator",
            terms["generator"],
            self.g_optimizer,
            self.g_scaler,
            g_norm + d_norm,
        )
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if d_ok and g_ok:
            self._nonfinite_run = 0
        average_running_stats(*nets)

        output = {
            "loss_generator": float(terms["generator"].detach()),
            **{f"loss_{k}": float(v.detach()) for k, v in terms.items() if k != "generator"},
        }
        output["loss"] = output["loss_generator"]
        if d_loss is not None:
            output["loss_discriminator"] = float(d_loss.detach())
            output["loss"] += output["loss_discriminator"]
        output["generator_updated"] = g_ok
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output
