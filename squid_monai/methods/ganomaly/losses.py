"""GANomaly's losses (BASELINES.md, GANomaly row; Akcay et al., ACCV 2018, section 3).

Generator: ``L = w_adv L_adv + w_con L_con + w_enc L_enc`` with

* ``L_adv = mean((f(x) - f(x_hat))^2)``: feature matching on the discriminator's last map
  f (weight 1);
* ``L_con = mean(|x - x_hat|)``: the contextual L1 (weight 50);
* ``L_enc = mean((z - z_hat)^2)``: the latent L2 (weight 1).

The means are over every element, as in the authors' ``l2_loss`` / ``nn.L1Loss``.
Discriminator: ``0.5 (BCE(D(x), 1) + BCE(D(x_hat), 0))`` on the detached reconstruction
(the authors' ``err_d``), computed from logits (BCE with logits, autocast-safe; the
original applies a Sigmoid then ``nn.BCELoss``: the same function).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GANomalyLossWeights", "discriminator_loss", "generator_losses", "latent_distance"]


@dataclass
class GANomalyLossWeights:
    """The generator loss weights (the documents': 1, 50, 1)."""

    adversarial: float = 1.0
    contextual: float = 50.0
    latent: float = 1.0


def generator_losses(
    image: torch.Tensor,
    out: dict[str, torch.Tensor],
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    weights: GANomalyLossWeights,
) -> dict[str, torch.Tensor]:
    """The three terms (unweighted) and ``generator`` (their weighted sum), in fp32.

    ``out`` is the generator's output (``reconstruction``, ``z``, ``z_hat``); the features
    are the discriminator's ``features`` of the image and of the reconstruction."""
    adversarial = (real_features.float() - fake_features.float()).pow(2).mean()
    contextual = (image.float() - out["reconstruction"].float()).abs().mean()
    latent = (out["z"].float() - out["z_hat"].float()).pow(2).mean()
    total = (
        weights.adversarial * adversarial
        + weights.contextual * contextual
        + weights.latent * latent
    )
    return {
        "generator": total,
        "adversarial": adversarial,
        "contextual": contextual,
        "latent": latent,
    }


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """``0.5 (BCE(real, 1) + BCE(fake, 0))`` from logits, in fp32."""
    real = F.binary_cross_entropy_with_logits(
        real_logit.float(), torch.ones_like(real_logit, dtype=torch.float)
    )
    fake = F.binary_cross_entropy_with_logits(
        fake_logit.float(), torch.zeros_like(fake_logit, dtype=torch.float)
    )
    return 0.5 * (real + fake)


def latent_distance(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """The anomaly score per image, ``mean |z - z_hat|`` over the latent (B,) (the paper's
    L1 score A(x) = ||G_E(x) - E(G(x))||_1, divided by the latent size; the authors' code
    uses the squared distance instead), in fp32."""
    return (z.float() - z_hat.float()).abs().flatten(1).mean(1)
