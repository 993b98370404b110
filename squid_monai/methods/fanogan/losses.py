"""f-AnoGAN's losses: the WGAN-GP critic and generator losses (stage 1) and the izi_f
encoder loss, which is also the anomaly score (stage 2 and scoring).

Sources:

* WGAN-GP (``seeds/lecture_gan_anomaly_detection.txt``, "WGAN-GP Training, Step 1": "The
  discriminator outputs the Wasserstein distance between generated and real data
  distribution"); the loss itself is Gulrajani et al. 2017, Algorithm 1, which the lecture
  names but does not spell out:
  ``L_D = mean D(G(z)) - mean D(x) + lambda * mean_i (||grad_xhat D(xhat_i)||_2 - 1)^2``,
  ``xhat_i = eps_i x_i + (1 - eps_i) G(z_i)``, ``eps_i ~ U[0, 1]`` per sample,
  ``lambda = 10``; ``L_G = -mean D(G(z))``.
* izi_f (lecture, "Encoder Training, Step 2" and "Detect Anomaly, Step 3"):
  ``L_E(x) = 1/n ||x - G(E(x))||^2 + kappa/n_d ||f(x) - f(G(E(x)))||^2`` with n the number
  of pixels, n_d the number of features of ``f`` (the critic's intermediate layer); the
  anomaly score AS is the same quantity of the query image. The documents give no value
  for kappa: 1.0, f-AnoGAN's reference implementation's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FAnoGANLossWeights", "gradient_penalty", "critic_loss", "generator_loss", "izi_f"]


@dataclass
class FAnoGANLossWeights:
    """The weighted terms: ``gradient_penalty`` (WGAN-GP's lambda) and ``kappa`` (the
    feature term of izi_f, in the encoder loss and in the score)."""

    gradient_penalty: float = 10.0
    kappa: float = 1.0


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, epsilon: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean_i (||grad_xhat D(xhat_i)||_2 - 1)^2`` on the random interpolates
    ``xhat_i = eps_i real_i + (1 - eps_i) fake_i`` (one ``eps_i ~ U[0, 1]`` per sample unless
    given, shape (B,)), with the graph kept (``create_graph``) so that the penalty trains the
    critic. Computed in float32: a double backward in float16 under-/overflows easily."""
    real, fake = real.detach().float(), fake.detach().float()
    if epsilon is None:
        epsilon = torch.rand(real.shape[0], device=real.device)
    epsilon = epsilon.to(real).reshape(-1, *([1] * (real.ndim - 1)))
    interpolates = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        values = critic(interpolates)
        (grad,) = torch.autograd.grad(values.sum(), interpolates, create_graph=True)
        return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def critic_loss(
    real_value: torch.Tensor,
    fake_value: torch.Tensor,
    penalty: torch.Tensor,
    weights: FAnoGANLossWeights,
) -> dict[str, torch.Tensor]:
    """WGAN-GP's critic loss and its terms: ``critic`` (what is minimised),
    ``wasserstein`` (``mean D(x) - mean D(G(z))``, the critic's estimate of the distance)
    and ``gradient_penalty`` (unweighted)."""
    wasserstein = real_value.float().mean() - fake_value.float().mean()
    return {
        "critic": -wasserstein + weights.gradient_penalty * penalty.float(),
        "wasserstein": wasserstein,
        "gradient_penalty": penalty.float(),
    }


def generator_loss(fake_value: torch.Tensor) -> torch.Tensor:
    """WGAN's generator loss ``-mean D(G(z))``."""
    return -fake_value.float().mean()


def izi_f(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    image_features: torch.Tensor,
    reconstruction_features: torch.Tensor,
    kappa: float | torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per image (B,): ``image`` = 1/n ||x - G(E(x))||^2, ``feature`` = 1/n_d ||f(x) -
    f(G(E(x)))||^2 and ``izi_f`` = image + kappa * feature, in float32. The encoder loss is
    the batch mean of ``izi_f``; the anomaly score is ``izi_f`` itself."""
    pixel = (image.float() - reconstruction.float()).pow(2).flatten(1).mean(1)
    feature = (image_features.float() - reconstruction_features.float()).pow(2).flatten(1).mean(1)
    return {"image": pixel, "feature": feature, "izi_f": pixel + kappa * feature}
