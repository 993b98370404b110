"""THE scoring path: preprocessed image -> student reconstruction -> discriminator logit
-> calibrated score -> decision.

Everything that scores (the validation evaluator, ``evaluate.json``, ``inference.json``,
the MLflow model, the TorchScript export and the deploy operators) calls
:class:`SQUIDScorer`, so they cannot drift apart.

Score (SQUID.md section 5): ``s = 1 - sigmoid((logit - mean) / std)`` where ``mean`` and
``std`` are those of the discriminator's logit on un-augmented normal training images.
Higher is more anomalous; the decision is ``s > threshold``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.data import MetaTensor

from .networks import SQUIDDiscriminator, SQUIDGenerator, build, get_config

__all__ = ["SQUIDScorer", "calibrate", "calibrated_score", "build_scorer", "load_scorer", "save_network_config"]


def calibrated_score(logit: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Map discriminator logits (real = high) to anomaly scores in (0, 1) (abnormal = high)."""
    return 1.0 - torch.sigmoid((logit - mean) / std)


class SQUIDScorer(nn.Module):
    """Inference wrapper of a trained SQUID: the teacher is never computed, no autograd
    graph is built, and each image is scored independently of the others in its batch
    (per-image normalisation in the discriminator, see :class:`SQUIDDiscriminator`).

    ``forward(image)`` with image (B, 1, H, W) preprocessed in [0, 1] returns
    ``{"score": (B,), "logit": (B,), "reconstruction": (B, 1, H, W)}``. The calibration
    (``mean``, ``std``) and the decision ``threshold`` are buffers, saved with the weights.
    """

    def __init__(self, generator: SQUIDGenerator, discriminator: SQUIDDiscriminator,
                 mean: float = 0.0, std: float = 1.0, threshold: float = 0.5):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        # threshold set from normal images only (a quantile of their scores), for reference
        self.register_buffer("normal_threshold", torch.tensor(float(threshold)))
        self.eval()

    def train(self, mode: bool = True) -> SQUIDScorer:
        """A scorer is always in eval mode; training happens on the networks themselves."""
        return super().train(False)

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
        was_training = self.generator.training, self.discriminator.training
        self.generator.eval()
        self.discriminator.eval()
        with torch.no_grad():
            reconstruction = self.generator(image)["student"]
            # the logit and the score in fp32 also under autocast: the calibration is fp32, and
            # fp16 would quantise scores near the threshold
            with torch.autocast(device_type=image.device.type, enabled=False):
                logit = self.discriminator(reconstruction.float()).reshape(-1)
                score = calibrated_score(logit, self.mean, self.std)
        self.generator.train(was_training[0])
        self.discriminator.train(was_training[1])
        return {"score": score, "logit": logit, "reconstruction": reconstruction}

    def decide(self, score: torch.Tensor) -> torch.Tensor:
        """1 = "likely abnormal, look closer"."""
        return (score > self.threshold).long()


@torch.no_grad()
def calibrate(scorer: SQUIDScorer, batches: Iterable, device: torch.device | str = "cpu",
              key: str = "image", quantile: float = 0.95) -> tuple[float, float]:
    """Mean and std of the logit over un-augmented normal images, stored in ``scorer``,
    together with the normal-only threshold (the ``quantile`` of their calibrated scores).

    ``batches`` yields dicts with ``key`` (B, 1, H, W) or tensors. Returns (mean, std).
    """
    logits = []
    for batch in batches:
        image = batch[key] if isinstance(batch, dict) else batch
        logits.append(scorer(torch.as_tensor(image).to(device))["logit"].float().cpu())
    if not logits:
        raise ValueError("calibration needs at least one normal image")
    values = torch.cat(logits)
    std = values.std().item() if values.numel() > 1 else 1.0
    mean = values.mean().item()
    scorer.set_calibration(mean, std if std > 1e-8 else 1.0)
    scores = calibrated_score(values, scorer.mean.cpu(), scorer.std.cpu())
    scorer.normal_threshold.fill_(torch.quantile(scores, quantile).item())
    return mean, scorer.std.item()


def save_network_config(path: str | os.PathLike, preset: str, **overrides: Any) -> Path:
    """Write the recipe of a network (``{"preset", "overrides"}``) beside its weights, so
    that every consumer rebuilds exactly the trained architecture."""
    get_config(preset, **overrides)  # fail now, not at load time
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"preset": preset, "overrides": overrides}, indent=2))
    return path


def build_scorer(preset: str = "paper", **overrides: Any) -> SQUIDScorer:
    """An untrained scorer of a preset (bundle configs use it as ``network_def``)."""
    return SQUIDScorer(*build(preset, **overrides))


def load_scorer(weights: str | os.PathLike, network_config: str | os.PathLike | dict | None = None,
                map_location: str | torch.device = "cpu") -> SQUIDScorer:
    """Rebuild a trained scorer from ``model.pt`` (a :class:`SQUIDScorer` state dict) and its
    ``network.json`` (default: beside the weights). Loads with ``weights_only=True``."""
    weights = Path(weights)
    if network_config is None:
        network_config = weights.with_name("network.json")
    if not isinstance(network_config, dict):
        try:
            network_config = json.loads(Path(network_config).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{network_config}: cannot read the network recipe ({err})") from err
    scorer = build_scorer(network_config["preset"], **network_config.get("overrides", {}))
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{weights}: not a readable SQUID checkpoint ({err})") from err
    state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = scorer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not match the network recipe (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return scorer.to(map_location)
