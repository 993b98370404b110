"""The auto-encoder's objective (lecture_gan_anomaly_detection.txt, "Loss Function in
AutoEncoder"): the L2 distance between a normal image and its reconstruction,

    L = w_rec * mean((x - x_hat)^2)

the per-pixel mean (the lecture's L2 is a sum over pixels: a constant factor, i.e. a
rescaled learning rate). A network that holds ``num_models`` independent models on equal
parts of the image (Patch-MemAE) is trained on ``num_models * L`` (:mod:`.trainer`). All in
fp32, whatever the autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AutoEncoderLossWeights", "autoencoder_losses", "reconstruction_error"]


@dataclass
class AutoEncoderLossWeights:
    """Weight of the L2 term (the only one)."""

    reconstruction: float = 1.0


def reconstruction_error(out: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """``mean((x - x_hat)^2)`` over the batch, in fp32."""
    return (out["reconstruction"].float() - image.float()).pow(2).mean()


def autoencoder_losses(
    out: dict[str, torch.Tensor],
    image: torch.Tensor,
    weights: AutoEncoderLossWeights,
    num_models: int = 1,
) -> dict[str, torch.Tensor]:
    """``reconstruction`` and ``total`` (the weighted term times ``num_models``: what is
    back-propagated)."""
    terms = {"reconstruction": reconstruction_error(out, image)}
    terms["total"] = num_models * (weights.reconstruction * terms["reconstruction"])
    return terms
