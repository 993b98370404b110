"""SQUID's scorer: preprocessed image -> student reconstruction -> discriminator logit
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

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...scoring.scorer import CalibratedScorer, feature_distance, pixel_residual
from .networks import SQUIDDiscriminator, SQUIDGenerator

__all__ = [
    "SCORE_SOURCES",
    "DEFAULT_EVIDENCE",
    "EVIDENCE",
    "NORMAL_TOKENS",
    "SQUIDScorer",
    "tile_residuals",
]

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


def evidence_weights(evidence: Sequence[str]) -> torch.Tensor:
    """(len(EVIDENCE),) 1 for each piece of ``evidence`` the ``combined`` source sums, else 0."""
    if isinstance(evidence, str) or not evidence or set(evidence) - set(EVIDENCE):
        raise ValueError(f"evidence must be a non-empty list of {EVIDENCE}, got {evidence!r}")
    return torch.tensor([float(name in evidence) for name in EVIDENCE])


def tile_residuals(
    image: torch.Tensor, reconstruction: torch.Tensor, tile: int, power: torch.Tensor | float = 2.0
) -> torch.Tensor:
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

    def __init__(
        self,
        generator: SQUIDGenerator,
        discriminator: SQUIDDiscriminator,
        mean: float = 0.0,
        std: float = 1.0,
        threshold: float = 0.5,
        score_source: str = "logit",
        tile_power: float = 2.0,
        tile_two_sided: bool = False,
        evidence: Sequence[str] = DEFAULT_EVIDENCE,
    ):
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
        if not float(tile_power) > 0:
            raise ValueError(f"tile_power must be positive, got {tile_power!r}")
        super().__init__(mean, std, threshold)
        self.generator = generator
        self.discriminator = discriminator
        self.register_buffer("score_source_code", torch.tensor(SCORE_SOURCES.index(score_source)))
        tiles = generator.grid * generator.grid
        self.register_buffer(
            "tile_mean", torch.zeros(tiles)
        )  # per tile, on normal images (fit_normals)
        self.register_buffer("tile_std", torch.ones(tiles))
        self.register_buffer(
            "tile_power", torch.tensor(float(tile_power))
        )  # exponent of tile_residuals
        self.register_buffer("tile_two_sided", torch.tensor(bool(tile_two_sided)))  # see worst_tile
        # the combined source's statistics and normal tokens (fit_normals): fixed shapes, filled
        # in place, so that an EMA copy sharing the buffers sees them
        self.register_buffer("evidence_weights", evidence_weights(evidence))
        self.register_buffer("evidence_mean", torch.zeros(len(EVIDENCE)))
        self.register_buffer("evidence_std", torch.ones(len(EVIDENCE)))
        dim = (
            generator.inpainting.memory.memory.shape[-1] if generator.inpainting is not None else 0
        )
        self.register_buffer(
            "normal_tokens", torch.zeros(tiles, NORMAL_TOKENS, dim)
        )  # (T, S, D): a bank per tile
        self.register_buffer("normal_count", torch.tensor(0))
        # the bank's slot numbers, a buffer: ``torch.arange(..., device=...)`` would be traced
        # as a constant on the export's device
        self.register_buffer("token_slots", torch.arange(NORMAL_TOKENS), persistent=False)
        self._set_combined(score_source)
        self._follow_networks()

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
        return torch.where(
            code == 0,
            out["logit"],
            torch.where(code == 1, -out["residual"], -self.worst_tile(out["tile_residual"])),
        )

    def combined_evidence(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per image (B,), the ``combined`` source's sum of the chosen standardised evidence
        (high = abnormal)."""
        z = (self._evidence(out) - self.evidence_mean) / self.evidence_std
        z = torch.cat(
            [z[:, :3], z[:, 3:4].abs(), z[:, 4:]], 1
        )  # the feature residual in either direction
        return (z * self.evidence_weights).sum(1)

    @property
    def evidence(self) -> tuple[str, ...]:
        return tuple(name for name, w in zip(EVIDENCE, self.evidence_weights.tolist()) if w)

    def _evidence(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, len(EVIDENCE)) each piece of evidence, abnormal = high, before standardisation."""
        return torch.stack(
            [
                -out["logit"].float(),
                out["teacher_student"].float(),
                out["normal_knn"].float(),
                out["feature"].float(),
                self.worst_tile(out["tile_residual"].float()),
            ],
            1,
        )

    def nearest_normal(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T*D) tokens -> (B,) mean over tiles of the squared distance (per dimension) to
        the nearest normal calibration token at the same tile position. Differences, not the
        expanded ``|a|^2 + |b|^2 - 2ab`` of ``cdist``, which loses the small distances of
        near neighbours in float32."""
        bank = self.normal_tokens  # (T, S, D)
        query = tokens.float().reshape(-1, bank.shape[0], 1, bank.shape[2])
        distance = (query - bank).pow(2).mean(-1)  # (B, T, S)
        valid = self.token_slots < self.normal_count
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
        tokens = (
            out["tokens"]
            .float()
            .reshape(len(tiles), *self.normal_tokens.shape[::2])
            .transpose(0, 1)
        )  # (T, N, D)
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

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # models saved before the score source existed scored the logit; before the tile
        # score existed they had no tile statistics (unused by their sources)
        state_dict.setdefault(prefix + "score_source_code", torch.tensor(0))
        state_dict.setdefault(prefix + "tile_mean", torch.zeros_like(self.tile_mean))
        state_dict.setdefault(prefix + "tile_std", torch.ones_like(self.tile_std))
        state_dict.setdefault(
            prefix + "tile_power", torch.tensor(2.0)
        )  # before the exponent: squared
        state_dict.setdefault(prefix + "tile_two_sided", torch.tensor(False))  # and one-sided
        saved = state_dict.get(prefix + "evidence_mean")
        if saved is not None and saved.numel() < len(EVIDENCE):
            # the first combined models (before ``evidence`` was a switch) summed all the pieces
            # there were then, and kept the logit's statistics (not the negated logit's); the
            # pieces added since get weight 0 and neutral statistics
            state_dict[prefix + "evidence_weights"] = evidence_weights(
                EVIDENCE[: saved.numel()]
            ).to(saved.device)
            for name, fill in (("evidence_mean", 0.0), ("evidence_std", 1.0)):
                value = state_dict[prefix + name]
                state_dict[prefix + name] = torch.cat(
                    [value, value.new_full((len(EVIDENCE) - value.numel(),), fill)]
                )
            state_dict[prefix + "evidence_mean"][0] *= -1
        for name in (
            "evidence_weights",
            "evidence_mean",
            "evidence_std",
            "normal_tokens",
            "normal_count",
        ):
            state_dict.setdefault(
                prefix + name, getattr(self, name).clone()
            )  # before the combined source

        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # read from the loaded state (on the CPU), not from the buffer: no device round trip
        self._set_combined(SCORE_SOURCES[int(state_dict[prefix + "score_source_code"])])

    def set_score_source(self, score_source: str, evidence: Sequence[str] | None = None) -> None:
        """Score by another source from now on, for ``combined`` summing ``evidence`` (default: as
        before); refit with :func:`calibrate` before scoring."""
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
        self._check_source(score_source)
        if evidence is not None:
            self.evidence_weights.copy_(evidence_weights(evidence))
        self.score_source_code.fill_(SCORE_SOURCES.index(score_source))
        self._set_combined(score_source)

    def _check_source(self, score_source: str) -> None:
        if score_source == "combined" and (
            self.generator.inpainting is None or self.generator.teacher is None
        ):
            raise ValueError(
                "score_source 'combined' needs the in-painting block and the teacher (distillation)"
            )

    def _set_combined(self, score_source: str) -> None:
        """The Python flag of the ``combined`` source, kept equal to the source buffer (whose
        value ``score_source`` is): it decides what :meth:`raw` computes (the teacher, a second
        discriminator pass), which a traced graph must know."""
        self._check_source(score_source)
        self._combined = score_source == "combined"

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.generator.evidence(image) if self._combined else self.generator(image)
        reconstruction = parts["student"]
        with torch.autocast(device_type=image.device.type, enabled=False):
            features = self.discriminator.features(reconstruction.float())
            logit = self.discriminator.classifier(features.flatten(1)).reshape(-1)
            residual = pixel_residual(image, reconstruction)
            tile_residual = tile_residuals(
                image,
                reconstruction,
                self.generator.image_size // self.generator.grid,
                self.tile_power,
            )
            out = {
                "logit": logit,
                "residual": residual,
                "tile_residual": tile_residual,
                "reconstruction": reconstruction,
            }
            if self._combined:
                tokens = parts["tokens"].float().flatten(1)
                out.update(
                    teacher_student=pixel_residual(parts["teacher"], reconstruction),
                    normal_knn=self.nearest_normal(tokens),
                    feature=feature_distance(self.discriminator.features(image.float()), features),
                    tokens=tokens,
                )
        return out
