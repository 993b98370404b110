"""DAAD's anomaly score: the reconstruction error fused with D's feature alignment error.

Source: ``seeds/daad_paper.txt``, section 3.3, eq. (7): ``A(x) = gamma R(x) + (1 - gamma) L(x)``,
``R`` the average pixel-wise difference of x and x_hat (eq. 4), ``L`` the distance of their
discriminator features (eq. 6), "both R(x) and L(x) are linearly scaled to the range of
[0, 1] before fusion", ``gamma = 0.9`` (section 4.1).

* ``R`` = mean squared pixel difference and ``L`` = mean squared difference of ``f_D``
  (the losses' MSE reading of ``||.||_2``; :mod:`.losses`).
* The linear scaling: the paper does not say over which images; scaling over the scored
  set would make an image's score depend on the others. Here it is fixed from the normal
  images: ``R_s = (R - R_lo) / (R_hi - R_lo)`` with ``[R_lo, R_hi]`` the range (minimum,
  maximum) of ``R`` over the un-augmented normal calibration images (the very images the
  shared ``Calibrate`` handler uses), likewise ``L``. The ranges are buffers of the scorer,
  fitted by :func:`fit_scaling` (the :class:`FitScoreScaling` handler, just before
  ``Calibrate`` at every validation), saved with the weights; a test image is scored
  alone. Normal images fall in [0, 1]; values outside are not clipped (an anomaly's excess
  over the normal range is what ranks it).
* Plain DAAD (no discriminator) has no ``L``: ``A = R_s``. DAAD+'s ``A`` is eq. (7).
* The calibrated quantity (``normality``, high = normal) is ``-A``; ``logit`` is therefore
  ``-A`` too (DAAD has no logit of its own; D's logit is not part of the score).

``forward`` returns ``score``, ``logit``, ``reconstruction``, ``residual`` (``R``, raw),
``anomaly`` (``A``) and, for DAAD+, ``alignment`` (``L``, raw). DAAD+ exposes its
discriminator as ``scorer.discriminator`` (Grad-CAM on request); plain DAAD has none. Both
are explained by the gradient of their score (:mod:`squid_monai.scoring.explain`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from ...distributed import on_rank0_then_share
from ...scoring.scorer import CalibratedScorer, pixel_residual

__all__ = ["DAADScorer", "FitScoreScaling", "alignment_error", "fit_scaling", "calibrate_daad"]

logger = logging.getLogger(__name__)


def alignment_error(
    discriminator: nn.Module, image: torch.Tensor, reconstruction: torch.Tensor
) -> torch.Tensor:
    """``L(x)`` per image (B,): mean squared difference of ``f_D(x)`` and ``f_D(x_hat)``."""
    diff = discriminator.features(image) - discriminator.features(reconstruction)
    return diff.float().pow(2).flatten(1).mean(1)


class DAADScorer(CalibratedScorer):
    """Inference wrapper of a trained DAAD / DAAD+ (see the module docstring).

    Args:
        generator: the :class:`~.networks.DAADGenerator`.
        discriminator: DAAD+'s :class:`~.networks.DCGANDiscriminator`; None for DAAD.
        gamma: weight of the reconstruction score in eq. (7).
        mean, std, threshold: calibration and decision threshold (buffers).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module | None = None,
        gamma: float = 0.9,
        mean: float = 0.0,
        std: float = 1.0,
        threshold: float = 0.5,
    ):
        super().__init__(mean, std, threshold)
        self.generator = generator
        self.discriminator = discriminator
        self.gamma = float(gamma)
        # [lo, hi] of R and L on normal calibration images (identity until fitted)
        self.register_buffer("residual_range", torch.tensor([0.0, 1.0]))
        self.register_buffer("alignment_range", torch.tensor([0.0, 1.0]))
        self._follow_networks()

    @staticmethod
    def _scale(value: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
        return (value - bounds[0]) / (bounds[1] - bounds[0])

    def fuse(self, residual: torch.Tensor, alignment: torch.Tensor | None = None) -> torch.Tensor:
        """``A = gamma R_s + (1 - gamma) L_s`` (``R_s`` alone without a discriminator)."""
        r = self._scale(residual.float(), self.residual_range)
        if alignment is None:
            return r
        return self.gamma * r + (1.0 - self.gamma) * self._scale(
            alignment.float(), self.alignment_range
        )

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        reconstruction = self.generator(image)
        with torch.autocast(device_type=image.device.type, enabled=False):
            out = {
                "reconstruction": reconstruction,
                "residual": pixel_residual(image, reconstruction),
            }
            alignment = None
            if self.discriminator is not None:
                alignment = alignment_error(
                    self.discriminator, image.float(), reconstruction.float()
                )
                out["alignment"] = alignment
            out["anomaly"] = self.fuse(out["residual"], alignment)
        return out

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return -out["anomaly"]

    def set_scaling(
        self, residual: tuple[float, float], alignment: tuple[float, float] | None = None
    ) -> None:
        """Store the [lo, hi] ranges (in place: the buffers may be shared with an EMA copy)."""
        for buffer, bounds in ((self.residual_range, residual), (self.alignment_range, alignment)):
            if bounds is None:
                continue
            lo, hi = float(bounds[0]), float(bounds[1])
            if not hi - lo > 1e-12:  # all normal images alike: any unit span keeps the order
                hi = lo + max(abs(lo), 1e-12)
            buffer.copy_(torch.tensor([lo, hi], dtype=buffer.dtype))


@torch.no_grad()
def fit_scaling(
    scorer: DAADScorer, batches: Iterable, device: torch.device | str = "cpu", key: str = "image"
) -> dict[str, tuple[float, float]]:
    """Fit the scorer's ``R`` and ``L`` ranges on normal images (``batches`` yields dicts with
    ``key`` or tensors). Returns the ranges fitted."""
    values: dict[str, list[torch.Tensor]] = {"residual": [], "alignment": []}
    for batch in batches:
        image = batch[key] if isinstance(batch, dict) else batch
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        out = scorer(image.to(device))
        for name in values:
            if name in out:
                values[name].append(out[name].float().cpu())
    if not values["residual"]:
        raise ValueError("fitting the score scaling needs at least one normal image")
    ranges = {
        name: (float(torch.cat(v).min()), float(torch.cat(v).max()))
        for name, v in values.items()
        if v
    }
    scorer.set_scaling(ranges["residual"], ranges.get("alignment"))
    return ranges


def calibrate_daad(
    scorer: DAADScorer, batches, device: torch.device | str = "cpu", quantile: float = 0.95
):
    """Scaling then the shared calibration (mean, std, normal-only threshold), on the same
    normal images (a re-iterable loader or a list). Returns (mean, std)."""
    from ...scoring import calibrate

    fit_scaling(scorer, batches, device)
    return calibrate(scorer, batches, device, quantile=quantile)


class FitScoreScaling:
    """Before each validation, fit ``scorer``'s ``R`` / ``L`` ranges on the normal
    calibration images (``data_loader``). Attach before ``Calibrate`` (the family configs
    put it first in the validation handlers), which then calibrates the fused score. Under
    torch.distributed rank 0 fits and the other ranks receive its ranges."""

    def __init__(self, scorer: DAADScorer, data_loader):
        self.scorer, self.data_loader = scorer, data_loader

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        ranges = on_rank0_then_share(
            self.scorer, lambda: fit_scaling(self.scorer, self.data_loader, engine.state.device)
        )
        if ranges is None:  # not rank 0
            return
        logger.info(
            "DAAD score scaling on normal images: %s",
            ", ".join(f"{k} [{lo:.5g}, {hi:.5g}]" for k, (lo, hi) in ranges.items()),
        )
