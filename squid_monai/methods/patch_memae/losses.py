"""Patch-MemAE's objective is MemAE's, taken for each tile position's MemAE and summed: the
trainer multiplies MemAE's objective on the whole image by the network's ``num_models``
(:mod:`squid_monai.methods.autoencoder.trainer`), which for equal tiles is that sum."""

from __future__ import annotations

from ..memae import MemAELossWeights, addressing_entropy, memae_losses

__all__ = ["MemAELossWeights", "addressing_entropy", "memae_losses"]
