"""What every family's scorer shares: the calibration, the score and the decision rule.

Score (SQUID.md section 5): ``s = 1 - sigmoid((x - mean) / std)`` where ``x`` is the quantity a
family calibrates (its :meth:`CalibratedScorer.normality`, high = normal) and ``mean`` and ``std``
are those of ``x`` on un-augmented normal training images. Higher is more anomalous; the
decision is ``s > threshold`` (:func:`decide`). Each family's scorer subclasses
:class:`CalibratedScorer` in ``squid_monai/methods/<family>/scorer.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from monai.data import MetaTensor

from . import domain

__all__ = [
    "CalibratedScorer",
    "feature_distance",
    "pixel_residual",
    "calibrate",
    "calibrated_score",
    "decide",
]


def decide(score: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """THE decision rule: 1 = "likely abnormal, look closer" when ``score > threshold``,
    compared in float64 (a threshold read from JSON is not rounded to the score's dtype)."""
    score = torch.as_tensor(score).double()
    limit = (
        threshold.to(score)
        if isinstance(threshold, torch.Tensor)
        else torch.tensor(float(threshold), dtype=score.dtype)
    )
    return (score > limit).long()


def calibrated_score(
    logit: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float
) -> torch.Tensor:
    """Map discriminator logits (real = high) to anomaly scores in (0, 1) (abnormal = high):
    ``1 - sigmoid(z)``, computed as ``sigmoid(-z)``, which keeps very normal images above 0
    in float32 (``1 - sigmoid(20)`` rounds to exactly 0)."""
    return torch.sigmoid(-(logit - mean) / std)


class CalibratedScorer(nn.Module):
    """What every family's scorer shares: the calibration and threshold buffers, the
    eval-only mode, the decision, and the score ``sigmoid(-(normality - mean) / std)``.

    A family implements :meth:`raw` (the network outputs of one batch, at least
    ``reconstruction``; with ``residual`` (B,) when a pixel residual is meaningful) and
    :meth:`normality` (the calibrated quantity, high = normal). ``forward`` runs ``raw``
    under ``no_grad`` and returns ``{"score", "logit", **raw}``, ``logit`` being the
    normality unless ``raw`` gives one.

    Scoring cannot change the model: every sub-module is put in eval mode when it is assigned
    (so a freshly built or loaded scorer, and :meth:`raw` called directly, are in inference
    mode), and ``forward`` only ever switches sub-modules *to* eval (a trainer sharing the
    networks switches them back to training at its next iteration). It never restores a
    training flag afterwards: with concurrent calls (a server's threads) a restore would leave
    another call's forward in training mode, updating BatchNorm statistics and memories.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, threshold: float = 0.5):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        # threshold set from normal images only (a quantile of their scores), for reference
        self.register_buffer("normal_threshold", torch.tensor(float(threshold)))
        # the domain guard (:mod:`.domain`): calibration thumbnails and the distance limit
        bank, limit = domain.empty_bank()
        self.register_buffer("domain_bank", bank)
        self.register_buffer("domain_limit", limit)
        self.eval()

    def train(self, mode: bool = True) -> CalibratedScorer:
        """A scorer is always in eval mode; training happens on the networks themselves."""
        return super().train(False)

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, nn.Module):
            value.eval()  # in inference mode by construction (see the class docstring)
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A state dict saved before the domain guard existed loads with the guard's empty
        bank (:data:`.domain.NOT_RECORDED`), not as a mismatch."""
        bank, limit = domain.empty_bank()
        state_dict.setdefault(f"{prefix}domain_bank", bank)
        state_dict.setdefault(f"{prefix}domain_limit", limit)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _inference_mode(self) -> None:
        """Every sub-module in eval mode, one way only (thread-safe: no flag is restored)."""
        for module in self.modules():
            if module.training:
                module.training = False

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The family's outputs for a (B, 1, H, W) batch in [0, 1] (no_grad, eval mode)."""
        raise NotImplementedError

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The calibrated quantity of a forward's output (B,), high = normal."""
        raise NotImplementedError

    def fit_normals(self, out: dict[str, torch.Tensor]) -> None:
        """Fit what the normality needs beyond the mean and std, from the outputs ``out``
        (each (N,) or (N, K)) of the normal calibration images; nothing by default."""

    def _follow_networks(self) -> None:
        """Put this scorer's own buffers on its networks' device; a family's ``__init__`` ends
        with it. A scorer wraps networks the training config has already moved: left on the
        CPU, its calibration would meet CUDA weights at the first validation."""
        device = next((p.device for p in self.parameters()), None)
        if device is not None:
            self.to(device)

    def set_calibration(self, mean: float, std: float, threshold: float | None = None) -> None:
        if not std > 0:
            raise ValueError(f"calibration std must be positive, got {std}")
        self.mean.fill_(float(mean))
        self.std.fill_(float(std))
        if threshold is not None:
            self.threshold.fill_(float(threshold))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(image, MetaTensor):  # plain tensors: MetaTensor slows every op down
            image = image.as_tensor()
        self._inference_mode()
        # fp32 also under autocast: the threshold is chosen on these scores (calibration,
        # validation) and applied to them at inference; fp16 would quantise scores near it
        # and overflow to NaN
        with torch.no_grad(), torch.autocast(device_type=image.device.type, enabled=False):
            out = self.raw(image.float())
            normality = self.normality(out).float()
            score = calibrated_score(normality, self.mean, self.std)
            distance = domain.nearest_in_bank(domain.thumbnails(image), self.domain_bank)
        out.setdefault("logit", normality)
        return {"score": score, **out, "domain_distance": distance}

    def fit_domain(self, thumbs: torch.Tensor) -> torch.Tensor:
        """Fit the domain guard (:func:`.domain.fit_bank`) on the thumbnails of the normal
        calibration images; returns their distances to the bank."""
        bank, limit, distances = domain.fit_bank(thumbs)
        self.domain_bank.copy_(bank)
        self.domain_limit.fill_(float(limit))
        return distances

    def decide(self, score: torch.Tensor) -> torch.Tensor:
        """1 = "likely abnormal, look closer" (:func:`decide` at the stored threshold)."""
        return decide(score, self.threshold)


def pixel_residual(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per image, the mean squared difference (B,), in fp32."""
    return (image.float() - reconstruction.float()).pow(2).flatten(1).mean(1)


def feature_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image, the mean squared difference of two discriminator feature maps (B,): the
    feature residual (f-AnoGAN's kappa term, DAAD's alignment error L)."""
    return (features.float() - reference.float()).pow(2).flatten(1).mean(1)


def _refuse_non_finite(outputs: dict[str, torch.Tensor]) -> None:
    """Images whose outputs are non-finite where other images' are finite (an output that is
    non-finite for all, such as a distance to normals not yet fitted, says nothing) would
    poison the calibration: refuse them before anything is fitted."""
    bad = None
    for value in outputs.values():
        finite = torch.isfinite(value.float()).reshape(len(value), -1).all(dim=1)
        if finite.any():
            bad = ~finite if bad is None else bad | ~finite
    if bad is not None and bad.any():
        raise _non_finite_error(bad)


def _non_finite_error(bad: torch.Tensor) -> ValueError:
    """The refusal of a calibration whose normals ``bad`` (a boolean per image) score non-finite."""
    return ValueError(
        f"calibration: {int(bad.sum())} of {len(bad)} normal images give a non-finite score "
        "(the model's weights or these images hold NaN or inf)"
    )


@torch.no_grad()
def calibrate(
    scorer: CalibratedScorer,
    batches: Iterable,
    device: torch.device | str = "cpu",
    key: str = "image",
    quantile: float = 0.95,
) -> tuple[float, float]:
    """Mean and std of the scored quantity (:meth:`CalibratedScorer.normality`: the logit, the
    negated residual or the negated worst tile) over un-augmented normal images, stored in ``scorer``,
    together with the normal-only threshold (the ``quantile`` of their calibrated scores).
    First, :meth:`~CalibratedScorer.fit_normals` on the same images (one pass); the domain
    guard (:meth:`~CalibratedScorer.fit_domain`) on their thumbnails too.

    ``batches`` yields dicts with ``key`` (B, 1, H, W) or tensors. Returns (mean, std).
    """
    parts: dict[str, list[torch.Tensor]] = {}
    thumbs = []
    for batch in batches:
        image = torch.as_tensor(batch[key] if isinstance(batch, dict) else batch).to(device)
        thumbs.append(domain.thumbnails(image).cpu())
        for name, value in scorer(image).items():
            if value.dim() <= 2:  # per-image values, not images
                parts.setdefault(name, []).append(value)
    if not parts:
        raise ValueError("calibration needs at least one normal image")
    out = {name: torch.cat(chunks) for name, chunks in parts.items()}
    _refuse_non_finite(out)
    # fitting writes buffers only (normals, domain bank): keep those, not the weights
    before = {name: value.clone() for name, value in scorer.named_buffers()}
    scorer.fit_normals(out)
    scorer.fit_domain(torch.cat(thumbs))
    values = scorer.normality(out).float().cpu()
    if not torch.isfinite(values).all():  # every later score would be NaN: refuse, unchanged
        scorer.load_state_dict(before, strict=False)
        raise _non_finite_error(~torch.isfinite(values))
    std = values.std().item() if values.numel() > 1 else 1.0
    mean = values.mean().item()
    scorer.set_calibration(mean, std if std > 1e-8 else 1.0)
    scores = calibrated_score(values, scorer.mean.cpu(), scorer.std.cpu())
    scorer.normal_threshold.fill_(torch.quantile(scores, quantile).item())
    return mean, scorer.std.item()
