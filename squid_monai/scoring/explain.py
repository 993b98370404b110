"""The explanation of a score: Grad-CAM of the discriminator on the reconstruction.

``heatmap`` everywhere in the project means this map (hot = drives the anomaly score up);
the residual ``|input - reconstruction|`` is the ``difference``
(:func:`squid_monai.scoring.record.difference_map`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

__all__ = ["DiscriminatorGradCAM", "explainer_for", "gradcam_heatmap", "last_conv_layer"]


def last_conv_layer(module: nn.Module) -> str:
    """Dotted name of the last convolution registered in ``module`` (Grad-CAM's usual target:
    the deepest layer that still has a spatial map)."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not names:
        raise ValueError(f"{type(module).__name__} has no convolution layer; pass target_layer explicitly")
    return names[-1]


class _Oriented(nn.Module):
    """Turns the discriminator's "real" logit into the quantity to explain."""

    def __init__(self, net: nn.Module, sign: float) -> None:
        super().__init__()
        self.net = net
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.ndim != 2 or out.shape[1] != 1:
            raise ValueError(f"discriminator must return logits (B, 1), got shape {tuple(out.shape)}")
        return self.sign * out


def _normalise_per_image(cam: np.ndarray) -> np.ndarray:
    """Min-max scale each map to [0, 1]; a constant map becomes all zeros (nothing to show).

    MONAI's default post-processing maps (min, max) to (1, 0), i.e. flips the map; we keep
    "hot = important".
    """
    lo = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (cam - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


class DiscriminatorGradCAM:
    """Grad-CAM of a discriminator (``(B,1,H,W) -> logits (B,1)``) via ``monai.visualize.GradCAM``.

    MONAI's GradCAM registers hooks on the target layer for good, may switch in-place
    activations off, toggles train/eval on the whole model and writes parameter gradients.
    To leave the caller's model exactly as it was (weights, BN running statistics, gradients,
    modes, hooks), it works on a private deep copy taken at construction: build a new one
    after further training. The copy runs in eval mode, i.e. the scoring path (SQUID's
    discriminator then normalises each image by its own statistics); maps are therefore
    independent of the other images in the batch.

    Args:
        discriminator: the network to explain.
        target_layer: dotted module name in ``discriminator``; default its last convolution.
        target: ``"abnormal"`` explains the negated logit (what makes the image look
            abnormal; the score rises as the logit falls), ``"normal"`` the logit itself.
    """

    def __init__(self, discriminator: nn.Module, target_layer: str | None = None,
                 target: str = "abnormal") -> None:
        if target not in ("abnormal", "normal"):
            raise ValueError(f"target must be 'abnormal' or 'normal', got {target!r}")
        net = copy.deepcopy(discriminator).eval()
        for p in net.parameters():
            p.requires_grad_(False)  # gradients are needed w.r.t. activations only
        layer = target_layer or last_conv_layer(net)
        if layer not in dict(net.named_modules()):
            raise ValueError(f"target_layer {layer!r} not found in {type(discriminator).__name__}")
        self.target_layer = layer
        self._model = _Oriented(net, -1.0 if target == "abnormal" else 1.0).eval()
        self._cam = GradCAM(nn_module=self._model, target_layers=f"net.{layer}",
                            postprocessing=lambda m: m)

    def __call__(self, image: torch.Tensor) -> np.ndarray:
        """Heat maps (B, H, W) in [0, 1], upsampled bilinearly to the image size."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B,1,H,W), got shape {tuple(image.shape)}")
        ref = next(self._model.parameters(), torch.empty(0))
        x = image.detach().to(device=ref.device, dtype=ref.dtype).requires_grad_(True)
        with torch.enable_grad():
            cam = self._cam(x, class_idx=0)
        return _normalise_per_image(cam[:, 0].detach().float().cpu().numpy())


def gradcam_heatmap(discriminator: nn.Module, image: torch.Tensor, target_layer: str | None = None,
                    target: str = "abnormal") -> np.ndarray:
    """One-shot :class:`DiscriminatorGradCAM`: heat maps (B, H, W) in [0, 1] for ``image``
    (B,1,H,W). For many batches build a ``DiscriminatorGradCAM`` once instead."""
    return DiscriminatorGradCAM(discriminator, target_layer, target)(image)


def explainer_for(scorer: nn.Module) -> DiscriminatorGradCAM | None:
    """The heat-map explainer of a scorer: Grad-CAM of its ``discriminator``; None when it
    has none (e.g. a TorchScript export, whose modules take no hooks)."""
    discriminator = getattr(scorer, "discriminator", None)
    if not isinstance(discriminator, nn.Module) or isinstance(discriminator, torch.jit.ScriptModule):
        return None
    return DiscriminatorGradCAM(discriminator)
