"""The explanation of a score: the ``heatmap`` everywhere in the project (hot = drives the
anomaly score up); the residual ``|input - reconstruction|`` is the ``difference``
(:func:`squid_monai.scoring.record.difference_map`).

Two explainers, one call (``explain(images, out)``, :func:`explainer_for` picks):

* :class:`ScoreSaliency` (the default): the gradient of the score the model reports with
  respect to the input pixels. It explains *that* number whatever produced it: the worst
  tile's residual of the DigitAnatomy recipe, the chest recipe's combined evidence, the
  logit, any family's score.
* :class:`DiscriminatorGradCAM`: Grad-CAM of the discriminator on the reconstruction, what
  the discriminator finds abnormal. It explains the logit alone, the paper's score, which
  neither SQUID recipe reports any more (``squid_monai/methods/squid/recipes.py``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.visualize import GradCAM
from torch import nn

__all__ = [
    "EXPLAINERS",
    "DiscriminatorGradCAM",
    "ExportSaliency",
    "ScoreSaliency",
    "explainer_for",
    "gradcam_heatmap",
    "last_conv_layer",
]

#: What a heat map can explain (:func:`explainer_for`): the reported score, or the discriminator.
EXPLAINERS = ("score", "discriminator")


def last_conv_layer(module: nn.Module) -> str:
    """Dotted name of the last convolution registered in ``module`` (Grad-CAM's usual target:
    the deepest layer that still has a spatial map)."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not names:
        raise ValueError(
            f"{type(module).__name__} has no convolution layer; pass target_layer explicitly"
        )
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
            raise ValueError(
                f"discriminator must return logits (B, 1), got shape {tuple(out.shape)}"
            )
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

    def __init__(
        self, discriminator: nn.Module, target_layer: str | None = None, target: str = "abnormal"
    ) -> None:
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
        self._cam = GradCAM(
            nn_module=self._model, target_layers=f"net.{layer}", postprocessing=lambda m: m
        )

    def explain(self, images: torch.Tensor, out: dict[str, torch.Tensor]) -> np.ndarray:
        """The heat maps of a scored batch (``out``: the scorer's output on ``images``): of its
        reconstructions, which the discriminator scores."""
        return self(out["reconstruction"])

    def __call__(self, image: torch.Tensor) -> np.ndarray:
        """Heat maps (B, H, W) in [0, 1], upsampled bilinearly to the image size."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B,1,H,W), got shape {tuple(image.shape)}")
        ref = next(self._model.parameters(), torch.empty(0))
        x = image.detach().to(device=ref.device, dtype=ref.dtype).requires_grad_(True)
        with torch.enable_grad():
            cam = self._cam(x, class_idx=0)
        return _normalise_per_image(cam[:, 0].detach().float().cpu().numpy())


def gradcam_heatmap(
    discriminator: nn.Module,
    image: torch.Tensor,
    target_layer: str | None = None,
    target: str = "abnormal",
) -> np.ndarray:
    """One-shot :class:`DiscriminatorGradCAM`: heat maps (B, H, W) in [0, 1] for ``image``
    (B,1,H,W). For many batches build a ``DiscriminatorGradCAM`` once instead."""
    return DiscriminatorGradCAM(discriminator, target_layer, target)(image)


class _Abnormality(nn.Module):
    """A scorer's reported quantity as a differentiable (B, 1) output, abnormal = high: the
    negated normality, which the calibrated score increases with (``CalibratedScorer.forward``
    computes the same under ``no_grad``)."""

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return -self.scorer.normality(self.scorer.raw(x)).float().reshape(-1, 1)


class ScoreSaliency:
    """The heat map of the reported score: ``|d score / d pixel|`` (the saliency of Simonyan et
    al. 2014), smoothed by a Gaussian of ``smoothing`` times the image side (0: the raw
    gradient; edges replicated, so the border is not darkened), then min-max scaled per image
    to [0, 1]. A pixel's gradient is noisy from one pixel to the next (on a chest X-ray it
    covers the lungs in speckle); the default 1/32, 2 px at 64 px, shows the regions.

    The score is a function of the input image alone, through every network and statistic
    the scorer uses (for SQUID: encoder, in-painting memory, decoders, discriminator, tile and
    evidence statistics), so its gradient says which pixels move *that* number. For the
    DigitAnatomy recipe's worst-tile residual the map lies mostly in the worst tile; for the chest
    recipe's combined score it sums every piece of evidence. Computed on a private deep copy
    of the scorer in eval mode, fp32, with frozen parameters, so the caller's model is left
    exactly as it was. One backward pass per batch: each image's score depends on that image
    alone (the scorers are batch-independent), so the gradient of the batch's summed score is
    each image's own gradient (``monai.visualize.VanillaGrad`` computes the same one image at a
    time, at twice the cost; BENCHMARKS.md, "Reliability").
    """

    def __init__(self, scorer: nn.Module, smoothing: float = 1 / 32) -> None:
        self.smoothing = _check_smoothing(smoothing)
        for name in ("raw", "normality"):
            if not callable(getattr(scorer, name, None)):
                raise ValueError(
                    f"{type(scorer).__name__} has no {name}(): the score saliency needs a "
                    "CalibratedScorer (not an export)"
                )
        net = copy.deepcopy(scorer).eval()
        for p in net.parameters():
            p.requires_grad_(False)  # gradients are needed w.r.t. the input only
        self._model = _Abnormality(net).eval()

    def explain(
        self, images: torch.Tensor, out: dict[str, torch.Tensor] | None = None
    ) -> np.ndarray:
        """The heat maps of a scored batch: of the input ``images`` (``out`` is not needed)."""
        return self(images)

    def __call__(self, image: torch.Tensor) -> np.ndarray:
        """Heat maps (B, H, W) in [0, 1] of a (B, 1, H, W) batch (an all-zero gradient gives an
        all-zero map)."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B,1,H,W), got shape {tuple(image.shape)}")
        ref = next(self._model.parameters(), None)
        ref = ref if ref is not None else next(self._model.buffers(), torch.empty(0))
        x = (image.as_tensor() if isinstance(image, MetaTensor) else image).detach()
        x = x.to(device=ref.device, dtype=torch.float32)
        return _saliency(self._model, x, self.smoothing, type(self._model.scorer).__name__)


def _check_smoothing(smoothing: float) -> float:
    if not 0 <= float(smoothing) < 1:
        raise ValueError(
            f"smoothing must be in [0, 1) (a fraction of the image side), got {smoothing!r}"
        )
    return float(smoothing)


def _saliency(model, x: torch.Tensor, smoothing: float, name: str) -> np.ndarray:
    """``|d model(x).sum() / d x|``, Gaussian-smoothed (``smoothing`` x the image side) and
    min-max scaled per image: the post-processing both saliency explainers share."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        abnormality = model(x)
        if not abnormality.requires_grad:
            raise ValueError(
                f"the score of {name} does not depend on the input through autograd; "
                "it cannot be explained by its gradient"
            )
        (grad,) = torch.autograd.grad(abnormality.sum(), x)
    heat = grad.abs()
    if smoothing > 0:
        kernel = gaussian_1d(torch.tensor(smoothing * max(x.shape[-2:])), normalize=True).to(heat)
        heat = separable_filtering(heat, [kernel, kernel], mode="replicate")
    return _normalise_per_image(heat[:, 0].float().cpu().numpy())


class ExportSaliency:
    """:class:`ScoreSaliency` of a model known by its ``forward`` only, such as the
    TorchScript export of a scorer (``forward(image)`` -> dict with ``score``): the gradient
    of the reported ``score`` with respect to the input, with the same smoothing and scaling.
    The export is traced from the eager scorer, whose ``no_grad`` the trace does not keep, so
    its graph is differentiable; where the score saturates the gradient may vanish (an all-zero
    map). Raises ``ValueError`` when the output does not depend on the input through autograd.
    The model is used as it is (gradients are taken with respect to the input only)."""

    def __init__(self, model: nn.Module, smoothing: float = 1 / 32, key: str = "score") -> None:
        self.model, self.smoothing, self.key = model, _check_smoothing(smoothing), key

    def explain(self, images: torch.Tensor, out: dict | None = None) -> np.ndarray:
        """The heat maps of a scored batch: of the input ``images``."""
        return self(images)

    def __call__(self, image: torch.Tensor) -> np.ndarray:
        """Heat maps (B, H, W) in [0, 1] of a (B, 1, H, W) batch."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B,1,H,W), got shape {tuple(image.shape)}")
        ref = next(self.model.parameters(), None)
        x = image.as_tensor() if isinstance(image, MetaTensor) else image
        x = x.to(device=ref.device if ref is not None else x.device, dtype=torch.float32)
        score = lambda v: self.model(v)[self.key].float().reshape(-1, 1)  # noqa: E731
        return _saliency(score, x, self.smoothing, type(self.model).__name__)


def explainer_for(
    scorer: nn.Module, explain: str = "score"
) -> ScoreSaliency | DiscriminatorGradCAM | None:
    """The heat-map explainer of a scorer (:data:`EXPLAINERS`): ``score``, the saliency of its
    reported score (:class:`ScoreSaliency`); ``discriminator``, Grad-CAM of its
    ``discriminator``. An ONNX or OpenVINO scorer (:class:`.runtimes.ExportedScorer`) is
    explained by the PyTorch scorer it was exported from (its ``reference``). None when the
    scorer cannot be explained that way: a TorchScript export (no hooks, no ``raw``), or no
    discriminator."""
    if explain not in EXPLAINERS:
        raise ValueError(f"explain must be one of {EXPLAINERS}, got {explain!r}")
    if isinstance(scorer, torch.jit.ScriptModule):
        return None
    if explain == "score":
        scorer = getattr(scorer, "reference", scorer)
        return ScoreSaliency(scorer) if callable(getattr(scorer, "raw", None)) else None
    discriminator = getattr(scorer, "discriminator", None)
    if not isinstance(discriminator, nn.Module) or isinstance(
        discriminator, torch.jit.ScriptModule
    ):
        return None
    return DiscriminatorGradCAM(discriminator)
