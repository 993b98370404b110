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
:class:`~squid_monai.methods.squid.trainer.SQUIDTrainer` (their shared base,
:class:`~squid_monai.engines.base.AdversarialTrainer`): a non-finite loss is never
back-propagated (the step is skipped, the BatchNorm statistics it touched restored, counted in
``engine.state.skipped_steps``; too many in a row stop the run), AMP uses one
``GradScaler`` per optimiser on CUDA and bfloat16 autocast on the CPU, and under
``torch.distributed`` every decision is taken by all ranks together.
``engine.state.discriminator_reinits`` counts the re-initialisations of this process.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from monai.engines.utils import IterationEvents

from ...engines.base import AdversarialTrainer
from ...engines.utils import all_ranks, average_running_stats, is_distributed, norm_buffers, unwrap
from .losses import GANomalyLossWeights, discriminator_loss, generator_losses
from .networks import reinitialise

__all__ = ["GANomalyTrainer"]

logger = logging.getLogger(__name__)


class GANomalyTrainer(AdversarialTrainer):
    """Adversarial training of GANomaly (see the module docstring).

    Args:
        args, kwargs: the engine, the two networks, their optimisers and scalers, AMP and the
            guard, in :class:`~squid_monai.engines.base.AdversarialTrainer`'s order; batches
            are dicts with ``image_key`` (B, 1, H, W) in [0, 1], ``loss_weights`` a
            :class:`GANomalyLossWeights` or a dict of its fields.
        reinit_discriminator: re-initialise the discriminator when its loss collapses (the
            original's behaviour, default on).
        reinit_threshold: the collapse level (the original's 1e-5).
    """

    weights_type = GANomalyLossWeights

    def __init__(
        self,
        *args: Any,
        reinit_discriminator: bool = True,
        reinit_threshold: float = 1e-5,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.reinit_discriminator, self.reinit_threshold = (
            bool(reinit_discriminator),
            float(reinit_threshold),
        )
        self.state.discriminator_reinits = 0

    def _reinitialise_discriminator(self, engine: GANomalyTrainer, d_loss: float) -> None:
        """The authors' ``reinit_d``: fresh DCGAN weights (identical on every rank)."""
        disc = unwrap(self.discriminator)
        reinitialise(disc)
        if is_distributed():
            for tensor in disc.state_dict().values():
                dist.broadcast(tensor, src=0)
        engine.state.discriminator_reinits += 1
        logger.info(
            "discriminator loss %.2e < %.0e at iteration %d: discriminator re-initialised",
            d_loss,
            self.reinit_threshold,
            engine.state.iteration,
        )

    def _iteration(self, engine: GANomalyTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        gen, disc = self.generator, self.discriminator
        gen.train()
        disc.train()
        plain_disc = unwrap(disc)
        g_norm, d_norm = norm_buffers(gen), norm_buffers(disc)

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
        g_ok = self._guarded_step(
            engine,
            "generator",
            terms["generator"],
            self.g_optimizer,
            self.g_scaler,
            g_norm + d_norm,
        )
        if g_ok:
            d_norm = norm_buffers(disc)  # the feature passes' statistics are kept with the step

        # discriminator step: real images vs the detached reconstruction
        with self._autocast():
            real_logit = disc(image)
            fake_logit = disc(out["reconstruction"].detach())
            d_loss = discriminator_loss(real_logit, fake_logit)
        d_ok = self._guarded_step(
            engine, "discriminator", d_loss, self.d_optimizer, self.d_scaler, d_norm
        )
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if g_ok and d_ok:
            self._nonfinite_run = 0
        d_value = float(d_loss.detach())
        reinit = bool(
            d_ok
            and self.reinit_discriminator
            and all_ranks(d_loss.detach() < self.reinit_threshold)
        )
        if reinit:
            self._reinitialise_discriminator(engine, d_value)
        average_running_stats(gen, disc)

        g_value = float(terms["generator"].detach())
        engine.state.output = {
            "loss": g_value + d_value,
            "loss_generator": g_value,
            "loss_discriminator": d_value,
            **{
                f"loss_{k}": float(terms[k].detach())
                for k in ("adversarial", "contextual", "latent")
            },
            "generator_updated": g_ok,
            "discriminator_reinitialised": reinit,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
