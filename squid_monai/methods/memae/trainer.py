"""MemAE's trainer: the auto-encoder's iteration (one network, one optimiser step per batch)
with MemAE's objective, the entropy of the addressing added to the L2 (:mod:`.losses`)."""

from __future__ import annotations

from ..autoencoder import AutoEncoderTrainer
from .losses import MemAELossWeights, memae_losses

__all__ = ["MemAETrainer"]


class MemAETrainer(AutoEncoderTrainer):
    """:class:`~squid_monai.methods.autoencoder.AutoEncoderTrainer` on :func:`.losses.memae_losses`
    (``engine.state.output`` adds ``loss_entropy``)."""

    weights_type = MemAELossWeights
    objective = staticmethod(memae_losses)
