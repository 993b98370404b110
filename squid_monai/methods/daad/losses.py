"""DAAD's loss terms and their weights.

Source: ``seeds/daad_paper.txt``, section 3.2, eq. (3)-(6), and section 4.1 (weights).

| term | definition |
|---|---|
| ``reconstruction`` | eq. (4): MSE(x_hat, x) |
| ``adversarial``    | eq. (5), generator side: BCE-with-logits(D(x_hat), real) |
| ``alignment``      | eq. (6): MSE(f_D(x_hat), f_D(x)), f_D(x) detached |
| ``generator``      | eq. (3): 50 reconstruction + 0.5 adversarial + 0.5 alignment (DAAD+); DAAD: 50 reconstruction |
| ``discriminator``  | eq. (5), discriminator side: BCE(D(x), real) + BCE(D(x_hat detached), fake) |

Choices where the paper is silent or loose: eq. (4) and (6) are written as ``||.||_2``; we take
the mean squared error (PyTorch's ``MSELoss``, what "L2 loss" is in the GANomaly line of code
DAAD builds on), so the weights do not depend on the image or feature size. The generator
uses the non-saturating form of eq. (5) (``-log D(G(x))``, Goodfellow et al. [15]). D is
trained by the adversarial loss only: the alignment loss trains G (a D that also minimised it
could collapse its features, which the adversarial training is there to prevent, section
3.1.3), with ``f_D(x)`` as a fixed target. BCE is computed on logits (MONAI's
``PatchAdversarialLoss`` applies a sigmoid and ``BCELoss``, which is unstable and refused under
float16 autocast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DAADLossWeights", "generator_losses", "discriminator_loss"]


@dataclass
class DAADLossWeights:
    """lambda_rec, lambda_adv, lambda_ali of eq. (3); defaults: the paper's (section 4.1)."""

    reconstruction: float = 50.0
    adversarial: float = 0.5
    alignment: float = 0.5


def _bce(logit: torch.Tensor, real: bool) -> torch.Tensor:
    logit = logit.float()
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, 1.0 if real else 0.0))


def generator_losses(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    weights: DAADLossWeights,
    fake_logit: torch.Tensor | None = None,
    real_features: torch.Tensor | None = None,
    fake_features: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The unweighted terms and ``generator``, their weighted sum (what is back-propagated).
    Without ``fake_logit`` (plain DAAD) only the reconstruction term exists."""
    terms = {"reconstruction": F.mse_loss(reconstruction.float(), image.float())}
    total = weights.reconstruction * terms["reconstruction"]
    if fake_logit is not None:
        terms["adversarial"] = _bce(fake_logit, real=True)
        terms["alignment"] = F.mse_loss(fake_features.float(), real_features.detach().float())
        total = (
            total
            + weights.adversarial * terms["adversarial"]
            + weights.alignment * terms["alignment"]
        )
    terms["generator"] = total
    return terms


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """D's side of eq. (5): real images are real, reconstructions fake."""
    return _bce(real_logit, real=True) + _bce(fake_logit, real=False)
