"""The deploy app's heat map: what drives the exported model's score, as everywhere in the
project (``heatmap``, :mod:`squid_monai.scoring.explain`).

The exported TorchScript scorer is traced from the eager one, and the trace keeps no
``no_grad``: its graph is differentiable, so the heat map is the same score saliency as the
bundle's (:class:`~squid_monai.scoring.explain.ExportSaliency`: ``|d score / d pixel|``,
smoothed, scaled to [0, 1] per image). An export that cannot be differentiated (its score
does not depend on the input through autograd) gets the evidence map instead: the per-pixel
residual ``|input - reconstruction|`` the pixel evidence of the score is summed from, scaled
the same way. :attr:`ExportedHeatmap.kind` says which one a map is; the result JSON, the
Secondary Capture and the SR name it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from squid_monai.scoring.explain import ExportSaliency, _normalise_per_image

__all__ = ["GRADIENT", "RESIDUAL", "ExportedHeatmap", "colour", "overlay"]

logger = logging.getLogger(__name__)

#: what a heat map is: the score's gradient, or the residual evidence (see the module docstring)
GRADIENT, RESIDUAL = "score gradient", "residual evidence"
#: each kind as the SC's and SR's words
DESCRIPTIONS = {
    GRADIENT: "gradient of the anomaly score with respect to the input pixels (smoothed)",
    RESIDUAL: "per-pixel residual |input - reconstruction|, the evidence the score sums",
}


class ExportedHeatmap:
    """The explainer the scoring operator passes to ``score_images``: ``explain(images, out)``
    gives (B, H, W) maps in [0, 1] and sets :attr:`kind` (:data:`GRADIENT` or :data:`RESIDUAL`)."""

    def __init__(self, module: torch.nn.Module):
        self.saliency = ExportSaliency(module)
        self.kind = GRADIENT

    def explain(self, images: torch.Tensor, out: dict[str, torch.Tensor]) -> np.ndarray:
        if self.kind == GRADIENT:
            try:
                return self.saliency(images)
            except (ValueError, RuntimeError) as exc:  # not differentiable (no graph, no grad_fn)
                logger.warning(
                    "The exported model cannot be differentiated (%s); heat maps show "
                    "the residual evidence instead",
                    exc,
                )
                self.kind = RESIDUAL
        reconstruction = out["reconstruction"].detach().float().cpu()
        residual = (images.detach().float().cpu() - reconstruction).abs()
        return _normalise_per_image(residual[:, 0].numpy())  # the saliency's own scaling


def _jet(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) in [0, 1]: the jet colour map (blue, cyan, yellow, red)
    as three ramps, in NumPy: the MAP image has no matplotlib (pipelines/requirements.txt)."""
    x = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    return np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)


def colour(heatmap: np.ndarray) -> np.ndarray:
    """The heat map (H, W) in [0, 1] as an RGB uint8 image (``heatmap.png``)."""
    return np.round(_jet(heatmap) * 255.0).astype(np.uint8)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, min_side: int = 256
) -> np.ndarray:
    """The heat map blended over the grey model input (both (H, W) in [0, 1]) as an RGB
    uint8 image, enlarged by a whole factor to at least ``min_side`` pixels (bilinear), the
    way ``squid_monai.visualize.overlay_heatmap`` shows it."""
    from PIL import Image

    grey = np.clip(np.asarray(image, np.float32), 0.0, 1.0)[..., None]
    rgb = np.round(((1 - alpha) * grey + alpha * _jet(heatmap)) * 255.0).astype(np.uint8)
    factor = max(1, -(-min_side // max(rgb.shape[:2])))
    if factor > 1:
        size = (rgb.shape[1] * factor, rgb.shape[0] * factor)
        rgb = np.asarray(Image.fromarray(rgb, mode="RGB").resize(size, Image.BILINEAR))
    return rgb
