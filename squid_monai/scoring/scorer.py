"""The SQUID scorer: preprocessed image -> student reconstruction -> discriminator logit
-> calibrated score, and the decision rule every consumer applies.

Score (SQUID.md section 5): ``s = 1 - sigmoid((logit - mean) / std)`` where ``mean`` and
``std`` are those of the discriminator's logit on un-augmented normal training images.
Higher is more anomalous; the decision is ``s > threshold`` (:func:`decide`).

``score_source="residual"`` calibrates the negated mean squared reconstruction residual
instead of the logit (the auto-encoder / MemAE / DAAD score on SQUID's in-painted
reconstruction): once the student in-paints anomalies away, the residual is large
exactly where the input is abnormal. ``"tile_residual"`` (beyond the paper) scores the
most atypical tile instead of the image mean: each of the generator's tiles' mean squared
residual (or mean of another power of it, ``tile_power``), standardised by that tile's mean
and std on the normal calibration images, maximised over the tiles (or, ``tile_two_sided``,
the largest absolute standardised log residual), so that one abnormal tile is not diluted
by the normal others and a tile that is always hard to reconstruct does not dominate
(BENCHMARKS.md, "Make SQUID detect"). ``"combined"`` (beyond the paper) sums pieces of
evidence (:data:`EVIDENCE`; ``evidence`` chooses them), each standardised by its mean and std
on the normal calibration images: the negated logit, the teacher-student reconstruction
difference, the distance of each tile's token to the nearest normal calibration token at that
tile position (mean over tiles), how far the discriminator-feature residual lies from the
normals' in either direction (on chest X-rays a pneumonia's lies *below* it), and the worst
tile's standardised residual. On chest X-rays no single one is reliable from seed to seed;
the sum of the first four is (BENCHMARKS.md, "Session 17"). The source, the tile exponent,
the sidedness, the chosen evidence, the tile and evidence statistics and the normal tokens
are buffers, saved with the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor

from ..networks import SQUIDDiscriminator, SQUIDGenerator

__all__ = ["SCORE_SOURCES", "DEFAULT_EVIDENCE", "EVIDENCE", "NORMAL_TOKENS", "CalibratedScorer", "SQUIDScorer", "feature_distance", "pixel_residual", "calibrate", "calibrated_score", "decide"]

#: What the calibrated score is computed from (index = the ``score_source_code`` buffer).
SCORE_SOURCES = ("logit", "residual", "tile_residual", "combined")

#: What the ``combined`` source can sum, each oriented abnormal = high (the logit negated), in
#: the order of the ``evidence_*`` buffers; ``feature`` counts in either direction.
EVIDENCE = ("logit", "teacher_student", "normal_knn", "feature", "tile_residual")

#: The ``combined`` source's default evidence (the chest recipe's).
DEFAULT_EVIDENCE = ("logit", "teacher_student", "normal_knn", "feature")

#: At most this many normal calibration images' tokens are kept for ``normal_knn`` (the
#: calibration set's default size, :meth:`~squid_monai.workflow.DataSource.calibration`).
NORMAL_TOKENS = 256


def decide(score: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """THE decision rule: 1 = "likely abnormal, look closer" when ``score > threshold``,
    compared in float64 (a threshold read from JSON is not rounded to the score's dtype)."""
    score = torch.as_tensor(score).double()
    limit = threshold.to(score) if isinstance(threshold, torch.Tensor) else torch.tensor(float(threshold), dtype=score.dtype)
    return (score > limit).long()


def calibrated_score(logit: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Map discriminator logits (real = high) to anomaly scores in (0, 1) (abnormal = high):
    ``1 - sigmoid(z)``, computed as ``sigmoid(-z)``, which keeps very normal images above 0
    in float32 (``1 - sigmoid(20)`` rounds to exactly 0)."""
    return torch.sigmoid(-(logit - mean) / std)


def evidence_weights(evidence: Sequence[str]) -> torch.Tensor:
    """(len(EVIDENCE),) 1 for each piece of ``evidence`` the ``combined`` source sums, else 0."""
    if isinstance(evidence, str) or not evidence or set(evidence) - set(EVIDENCE):
        raise ValueError(f"evidence must be a non-empty list of {EVIDENCE}, got {evidence!r}")
    return torch.tensor([float(name in evidence) for name in EVIDENCE])


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
        self.eval()

    def train(self, mode: bool = True) -> CalibratedScorer:
        """A scorer is always in eval mode; training happens on the networks themselves."""
        return super().train(False)

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, nn.Module):
            value.eval()  # in inference mode by construction (see the class docstring)
        super().__setattr__(name, value)

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
        with torch.no_grad():
            out = self.raw(image)
            # the score in fp32 also under autocast: the calibration is fp32, and fp16
            # would quantise scores near the threshold
            with torch.autocast(device_type=image.device.type, enabled=False):
                normality = self.normality(out).float()
                score = calibrated_score(normality, self.mean, self.std)
        out.setdefault("logit", normality)
        return {"score": score, **out}

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


def tile_residuals(image: torch.Tensor, reconstruction: torch.Tensor, tile: int,
                   power: torch.Tensor | float = 2.0) -> torch.Tensor:
    """Per image and ``tile`` x ``tile`` tile (row-major), the mean of ``|difference| ** power``
    (B, tiles), in fp32: 2 is the mean squared difference; a larger power weighs the few
    pixels an anomaly gets badly wrong above the many a blurry reconstruction gets a little
    wrong. A fixed pooling kernel, not adaptive pooling, which every exporter takes."""
    error = (image.float() - reconstruction.float()).abs().pow(power).mean(1, keepdim=True)
    return F.avg_pool2d(error, tile).flatten(1)


class SQUIDScorer(CalibratedScorer):
    """Inference wrapper of a trained SQUID: no autograd graph is built, each image is scored
    independently of the others in its batch (per-image normalisation in the discriminator,
    see :class:`SQUIDDiscriminator`), and the teacher is computed only for the ``combined``
    source.

    ``forward(image)`` with image (B, 1, H, W) preprocessed in [0, 1] returns
    ``{"score": (B,), "logit": (B,), "residual": (B,), "tile_residual": (B, tiles),
    "reconstruction": (B, 1, H, W)}``, and for ``combined`` also ``teacher_student``,
    ``normal_knn``, ``feature`` (B,) and ``tokens`` (B, T*D). The calibration (``mean``,
    ``std``), the decision ``threshold`` and the score source (:data:`SCORE_SOURCES`) are
    buffers, saved with the weights.
    """

    def __init__(self, generator: SQUIDGenerator, discriminator: SQUIDDiscriminator,
                 mean: float = 0.0, std: float = 1.0, threshold: float = 0.5, score_source: str = "logit",
                 tile_power: float = 2.0, tile_two_sided: bool = False, evidence: Sequence[str] = DEFAULT_EVIDENCE):
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
        if not float(tile_power) > 0:
            raise ValueError(f"tile_power must be positive, got {tile_power!r}")
        super().__init__(mean, std, threshold)
        self.generator = generator
        self.discriminator = discriminator
        self.register_buffer("score_source_code", torch.tensor(SCORE_SOURCES.index(score_source)))
        tiles = generator.grid * generator.grid
        self.register_buffer("tile_mean", torch.zeros(tiles))  # per tile, on normal images (fit_normals)
        self.register_buffer("tile_std", torch.ones(tiles))
        self.register_buffer("tile_power", torch.tensor(float(tile_power)))  # exponent of tile_residuals
        self.register_buffer("tile_two_sided", torch.tensor(bool(tile_two_sided)))  # see worst_tile
        # the combined source's statistics and normal tokens (fit_normals): fixed shapes, filled
        # in place, so that an EMA copy sharing the buffers sees them
        self.register_buffer("evidence_weights", evidence_weights(evidence))
        self.register_buffer("evidence_mean", torch.zeros(len(EVIDENCE)))
        self.register_buffer("evidence_std", torch.ones(len(EVIDENCE)))
        dim = generator.inpainting.memory.memory.shape[-1] if generator.inpainting is not None else 0
        self.register_buffer("normal_tokens", torch.zeros(tiles, NORMAL_TOKENS, dim))  # (T, S, D): a bank per tile
        self.register_buffer("normal_count", torch.tensor(0))
        self._set_combined()

    @property
    def score_source(self) -> str:
        return SCORE_SOURCES[int(self.score_source_code)]

    def worst_tile(self, tile_residual: torch.Tensor) -> torch.Tensor:
        """Per image (B,), the most atypical tile residual, standardised by that tile's normal
        statistics (:meth:`fit_normals`); ``tile_residual`` (B, tiles) as :meth:`raw` gives it.

        One-sided (the default): the largest standardised residual. Two-sided
        (``tile_two_sided``): the largest absolute standardised *log* residual, so that a tile
        reconstructed far better than that tile ever is counts too (a blank cell copied as
        blank, where a digit always leaves a residual); the log makes both tails comparable.
        """
        z = (self._tile_values(tile_residual) - self.tile_mean) / self.tile_std
        return torch.where(self.tile_two_sided, z.abs(), z).amax(1)

    def _tile_values(self, tile_residual: torch.Tensor) -> torch.Tensor:
        """What the tile statistics describe: the residual, or its log when two-sided."""
        return torch.where(self.tile_two_sided, tile_residual.clamp_min(1e-12).log(), tile_residual)

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._combined:
            return -self.combined_evidence(out)
        # selects, not a Python branch on the buffer: ``torch.export`` (ONNX, OpenVINO) keeps them graph ops
        code = self.score_source_code
        return torch.where(code == 0, out["logit"],
                           torch.where(code == 1, -out["residual"], -self.worst_tile(out["tile_residual"])))

    def combined_evidence(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per image (B,), the ``combined`` source's sum of the chosen standardised evidence
        (high = abnormal)."""
        z = (self._evidence(out) - self.evidence_mean) / self.evidence_std
        z = torch.cat([z[:, :3], z[:, 3:4].abs(), z[:, 4:]], 1)  # the feature residual in either direction
        return (z * self.evidence_weights).sum(1)

    @property
    def evidence(self) -> tuple[str, ...]:
        return tuple(name for name, w in zip(EVIDENCE, self.evidence_weights.tolist()) if w)

    def _evidence(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, len(EVIDENCE)) each piece of evidence, abnormal = high, before standardisation."""
        return torch.stack([-out["logit"].float(), out["teacher_student"].float(), out["normal_knn"].float(),
                            out["feature"].float(), self.worst_tile(out["tile_residual"].float())], 1)

    def nearest_normal(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T*D) tokens -> (B,) mean over tiles of the squared distance (per dimension) to
        the nearest normal calibration token at the same tile position. Differences, not the
        expanded ``|a|^2 + |b|^2 - 2ab`` of ``cdist``, which loses the small distances of
        near neighbours in float32."""
        bank = self.normal_tokens  # (T, S, D)
        query = tokens.float().reshape(-1, bank.shape[0], 1, bank.shape[2])
        distance = (query - bank).pow(2).mean(-1)  # (B, T, S)
        valid = torch.arange(bank.shape[1], device=bank.device) < self.normal_count
        return distance.masked_fill(~valid, float("inf")).amin(-1).mean(1)

    def fit_tiles(self, tile_residual: torch.Tensor) -> torch.Tensor:
        """Each tile's residual (log residual when two-sided) mean and std on normal images,
        from their ``tile_residual`` (N, tiles), in place; whatever the score source (only the
        tile statistics: the rest of :meth:`fit_normals` needs the source's own outputs).
        Returns the values described."""
        tiles = self._tile_values(tile_residual.float())
        self.tile_mean.copy_(tiles.mean(0))
        spread = tiles.std(0).clamp_min(1e-8) if len(tiles) > 1 else torch.ones_like(self.tile_std)
        self.tile_std.copy_(spread)
        return tiles

    def fit_normals(self, out: dict[str, torch.Tensor]) -> None:
        """From the normal calibration images' outputs ``out``, in place (the buffers may be
        shared with an EMA copy): each tile's residual (log residual when two-sided) mean and
        std; for ``combined``, the normal token bank (the first :data:`NORMAL_TOKENS` images)
        and the mean and std of each piece of evidence. A calibration image's own token is
        left out of its nearest-normal distance, which ``out["normal_knn"]`` then holds."""
        tiles = self.fit_tiles(out["tile_residual"])
        if not self._combined:
            return
        if len(tiles) < 2:
            raise ValueError("the combined score needs at least two normal calibration images")
        tokens = out["tokens"].float().reshape(len(tiles), *self.normal_tokens.shape[::2]).transpose(0, 1)  # (T, N, D)
        count = min(tokens.shape[1], self.normal_tokens.shape[1])
        self.normal_tokens.zero_()[:, :count].copy_(tokens[:, :count])
        self.normal_count.fill_(count)
        bank = tokens[:, :count].double()  # float64: cdist's expanded form is exact enough in it
        distance = torch.cdist(bank, bank).pow(2) / bank.shape[-1]  # (T, N, N)
        distance.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # leave each image's own token out
        own = distance.amin(-1).mean(0).float()
        out["normal_knn"] = torch.cat([own, self.nearest_normal(out["tokens"][count:].float())])
        evidence = self._evidence(out)  # after the tile statistics, which the worst tile uses
        self.evidence_mean.copy_(evidence.mean(0))
        self.evidence_std.copy_(evidence.std(0).clamp_min(1e-8))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # models saved before the score source existed scored the logit; before the tile
        # score existed they had no tile statistics (unused by their sources)
        state_dict.setdefault(prefix + "score_source_code", torch.tensor(0))
        state_dict.setdefault(prefix + "tile_mean", torch.zeros_like(self.tile_mean))
        state_dict.setdefault(prefix + "tile_std", torch.ones_like(self.tile_std))
        state_dict.setdefault(prefix + "tile_power", torch.tensor(2.0))  # before the exponent: squared
        state_dict.setdefault(prefix + "tile_two_sided", torch.tensor(False))  # and one-sided
        saved = state_dict.get(prefix + "evidence_mean")
        if saved is not None and saved.numel() < len(EVIDENCE):
            # the first combined models (before ``evidence`` was a switch) summed all the pieces
            # there were then, and kept the logit's statistics (not the negated logit's); the
            # pieces added since get weight 0 and neutral statistics
            state_dict[prefix + "evidence_weights"] = evidence_weights(EVIDENCE[:saved.numel()]).to(saved.device)
            for name, fill in (("evidence_mean", 0.0), ("evidence_std", 1.0)):
                value = state_dict[prefix + name]
                state_dict[prefix + name] = torch.cat([value, value.new_full((len(EVIDENCE) - value.numel(),), fill)])
            state_dict[prefix + "evidence_mean"][0] *= -1
        for name in ("evidence_weights", "evidence_mean", "evidence_std", "normal_tokens", "normal_count"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())  # before the combined source

        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._set_combined()

    def set_score_source(self, score_source: str, evidence: Sequence[str] | None = None) -> None:
        """Score by another source from now on, for ``combined`` summing ``evidence`` (default: as
        before); refit with :func:`calibrate` before scoring."""
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
        self._check_source(score_source)
        if evidence is not None:
            self.evidence_weights.copy_(evidence_weights(evidence))
        self.score_source_code.fill_(SCORE_SOURCES.index(score_source))
        self._set_combined()

    def _check_source(self, score_source: str) -> None:
        if score_source == "combined" and (self.generator.inpainting is None or self.generator.teacher is None):
            raise ValueError("score_source 'combined' needs the in-painting block and the teacher (distillation)")

    def _set_combined(self) -> None:
        """The Python flag of the ``combined`` source, kept equal to the source buffer: it decides
        what :meth:`raw` computes (the teacher, a second discriminator pass), which a traced
        graph must know."""
        self._check_source(self.score_source)
        self._combined = self.score_source == "combined"

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.generator.evidence(image) if self._combined else self.generator(image)
        reconstruction = parts["student"]
        with torch.autocast(device_type=image.device.type, enabled=False):
            features = self.discriminator.features(reconstruction.float())
            logit = self.discriminator.classifier(features.flatten(1)).reshape(-1)
            residual = pixel_residual(image, reconstruction)
            tile_residual = tile_residuals(image, reconstruction, self.generator.image_size // self.generator.grid,
                                           self.tile_power)
            out = {"logit": logit, "residual": residual, "tile_residual": tile_residual,
                   "reconstruction": reconstruction}
            if self._combined:
                tokens = parts["tokens"].float().flatten(1)
                out.update(teacher_student=pixel_residual(parts["teacher"], reconstruction),
                           normal_knn=self.nearest_normal(tokens),
                           feature=feature_distance(self.discriminator.features(image.float()), features),
                           tokens=tokens)
        return out


@torch.no_grad()
def calibrate(scorer: SQUIDScorer, batches: Iterable, device: torch.device | str = "cpu",
              key: str = "image", quantile: float = 0.95) -> tuple[float, float]:
    """Mean and std of the scored quantity (:meth:`SQUIDScorer.normality`: the logit, the
    negated residual or the negated worst tile) over un-augmented normal images, stored in ``scorer``,
    together with the normal-only threshold (the ``quantile`` of their calibrated scores).
    First, :meth:`~CalibratedScorer.fit_normals` on the same images (one pass).

    ``batches`` yields dicts with ``key`` (B, 1, H, W) or tensors. Returns (mean, std).
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        image = batch[key] if isinstance(batch, dict) else batch
        for name, value in scorer(torch.as_tensor(image).to(device)).items():
            if value.dim() <= 2:  # per-image values, not images
                parts.setdefault(name, []).append(value)
    if not parts:
        raise ValueError("calibration needs at least one normal image")
    out = {name: torch.cat(chunks) for name, chunks in parts.items()}
    scorer.fit_normals(out)
    values = scorer.normality(out).float().cpu()
    std = values.std().item() if values.numel() > 1 else 1.0
    mean = values.mean().item()
    scorer.set_calibration(mean, std if std > 1e-8 else 1.0)
    scores = calibrated_score(values, scorer.mean.cpu(), scorer.std.cpu())
    scorer.normal_threshold.fill_(torch.quantile(scores, quantile).item())
    return mean, scorer.std.item()
