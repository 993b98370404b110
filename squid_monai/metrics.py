"""Binary anomaly-detection metrics and threshold selection for anomaly scores (every family).

Conventions used everywhere in this module (and by :class:`squid_monai.scoring.CalibratedScorer`):

* label 1 = abnormal = positive class, label 0 = normal;
* a higher score means more abnormal;
* the decision is ``score > threshold`` (strictly greater), so an image scoring exactly the
  threshold is called normal.

The Ignite side is split in two so that the bundle stays MONAI-native: the key metric (AUC)
is MONAI's own ``monai.handlers.ROCAUC`` used directly in the configs (same value as
:func:`roc_auc`, ties included; see the tests), while :class:`AnomalyMetrics` adds the
thresholded figures (accuracy, F1, ...) that MONAI has no handler for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

__all__ = [
    "CRITERIA",
    "AnomalyMetrics",
    "auc_by_anomaly",
    "OptionalAUC",
    "SmoothedAUC",
    "best_threshold",
    "binary_metrics",
    "bootstrap_auc",
    "check_labels_scores",
    "evaluate_scores",
    "inpainting_rates",
    "normal_only_threshold",
    "pointing_rates",
    "roc_auc",
]

#: Criteria accepted by :func:`best_threshold`.
CRITERIA = ("f1", "youden", "accuracy")

# Relative tolerance under which two criterion values count as a tie (they are ratios of
# small integers, so genuine differences are far larger than this).
_TIE_TOL = 1e-12


def _as_1d(values: Any, what: str) -> np.ndarray:
    """Flatten tensors/arrays/lists to a 1-D float64 numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    elif isinstance(values, (list, tuple)) and values and isinstance(values[0], torch.Tensor):
        values = np.concatenate([v.detach().cpu().reshape(-1).numpy() for v in values])
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    return arr


def _check_scores(scores: Any, what: str = "scores") -> np.ndarray:
    arr = _as_1d(scores, what)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{what} contain {int(bad.sum())} non-finite value(s) (NaN or inf), first at index "
            f"{int(np.flatnonzero(bad)[0])}; a diverged or broken model cannot be evaluated"
        )
    return arr


def check_labels_scores(
    labels: Any, scores: Any, both_classes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` (0/1) and ``scores`` (finite, same length); return them as flat
    int64 / float64 arrays. ``both_classes`` demands normal and abnormal images (AUC, thresholds)."""
    y = _as_1d(labels, "labels")
    s = _check_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            f"labels must be 0 (normal) or 1 (abnormal), got values {np.unique(y).tolist()}"
        )
    y = y.astype(np.int64)
    if both_classes:
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            only = "abnormal (1)" if n_pos else "normal (0)"
            raise ValueError(
                f"labels contain only {only} images ({y.size} of them); ROC AUC and threshold "
                "selection need both normal and abnormal images"
            )
    return y, s


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (abnormal = positive, ties count one half).

    Raises:
        ValueError: one class only, NaN/inf scores, mismatched lengths or labels not 0/1.
    """
    y, s = check_labels_scores(labels, scores, both_classes=True)
    return float(roc_auc_score(y, s))


def auc_by_anomaly(labels: Any, scores: Any, kinds: Any) -> dict[str, float]:
    """Per anomaly type (``kinds``: one name per image; normals' names are ignored), the AUC of
    every normal against the abnormals of that type, so a report says which kind of anomaly a
    score misses; empty when there are no normals or no named abnormals."""
    y, s = np.asarray(labels), np.asarray(scores)
    kinds = np.asarray([str(k) for k in kinds])
    if not (y == 0).any():
        return {}
    types = sorted({k for k, label in zip(kinds, y) if label == 1 and k})
    return {t: roc_auc(y[(y == 0) | (kinds == t)], s[(y == 0) | (kinds == t)]) for t in types}


def _auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of every row of ``scores`` (B, n) against labels ``y`` (B, n), by the rank-sum
    (Mann-Whitney) identity; ties count one half, as in :func:`roc_auc`."""
    ranks = rankdata(scores, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    return ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_auc(
    labels: Any,
    scores: Any,
    reference: Any = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """AUC with a percentile bootstrap confidence interval; with ``reference`` (other scores
    of the same images), the paired difference ``AUC(scores) - AUC(reference)`` instead.

    Why: on a few hundred images the AUC of one run moves by several points with the sample
    alone, so a comparison (a variant against the full model, SQUID against the sharpness
    baseline) is only meaningful with its interval. Images are resampled within each class
    (every resample keeps both classes and the class balance), and one resample serves both
    score sets, so the shared difficulty of the images cancels in a difference.

    Returns ``{"value", "low", "high", "level", "n_resamples"}``; ``value`` is the estimate
    on the full set.
    """
    y, s = check_labels_scores(labels, scores, both_classes=True)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate(
        [rng.choice(pos, (n_resamples, pos.size)), rng.choice(neg, (n_resamples, neg.size))], axis=1
    )
    stats, value = _auc_rows(y[idx], s[idx]), roc_auc(y, s)
    if reference is not None:
        _, r = check_labels_scores(y, reference, both_classes=True)
        stats, value = stats - _auc_rows(y[idx], r[idx]), value - roc_auc(y, r)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return {
        "value": float(value),
        "low": float(low),
        "high": float(high),
        "level": level,
        "n_resamples": int(n_resamples),
    }


def _ratio(num: float, den: float, undefined: float) -> float:
    return float(num / den) if den else undefined


def _confusion(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    pred = s > threshold
    pos = y == 1
    tp = int(np.count_nonzero(pred & pos))
    fp = int(np.count_nonzero(pred & ~pos))
    fn = int(np.count_nonzero(~pred & pos))
    tn = int(np.count_nonzero(~pred & ~pos))
    return tp, fp, tn, fn


def binary_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float | int]:
    """Confusion counts and rates at ``threshold``; decision ``score > threshold`` = abnormal.

    Undefined ratios follow scikit-learn's ``zero_division=0`` for precision and F1 (0.0);
    sensitivity (no abnormal images) and specificity (no normal images) are NaN, because
    0 would misreport a rate that simply was not measured. One class only is allowed here
    (e.g. the false-alarm rate on a normal-only set).
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    y, s = check_labels_scores(labels, scores, both_classes=False)
    tp, fp, tn, fn = _confusion(y, s, threshold)
    return {
        "accuracy": (tp + tn) / y.size,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, 0.0),
        "sensitivity": _ratio(tp, tp + fn, float("nan")),
        "specificity": _ratio(tn, tn + fp, float("nan")),
        "precision": _ratio(tp, tp + fp, 0.0),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "threshold": threshold,
    }


def _candidate_thresholds(s: np.ndarray) -> np.ndarray:
    """Midpoints between sorted unique scores, plus one below all and one above all.

    The outer candidates sit half a mean gap outside the score range (0.5 if all scores are
    equal), so "everything abnormal" and "everything normal" are also considered.
    """
    u = np.unique(s)
    half_gap = 0.5 * (u[-1] - u[0]) / (u.size - 1) if u.size > 1 else 0.5
    mids = (u[:-1] + u[1:]) / 2.0
    return np.concatenate(([u[0] - half_gap], mids, [u[-1] + half_gap]))


def best_threshold(labels: Any, scores: Any, criterion: str = "f1") -> float:
    """Threshold maximising ``criterion`` on this set (use it on validation, then freeze it).

    Candidates are midway between consecutive sorted unique scores (robust to the small
    numerical drift of re-scoring), plus one below and one above all scores. Ties are broken
    deterministically by taking the **lowest** optimal threshold, i.e. the most sensitive
    one, since a missed abnormal image costs more than a false alarm in screening.

    Args:
        criterion: ``"f1"`` (F1 of the abnormal class), ``"youden"`` (sensitivity +
            specificity - 1) or ``"accuracy"``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    y, s = check_labels_scores(labels, scores, both_classes=True)
    cand = _candidate_thresholds(s)
    pos_sorted = np.sort(s[y == 1])
    neg_sorted = np.sort(s[y == 0])
    n_pos, n_neg = pos_sorted.size, neg_sorted.size
    # count of scores strictly above each candidate, per class
    tp = n_pos - np.searchsorted(pos_sorted, cand, side="right")
    fp = n_neg - np.searchsorted(neg_sorted, cand, side="right")
    fn = n_pos - tp
    tn = n_neg - fp
    if criterion == "f1":
        value = 2.0 * tp / np.maximum(2 * tp + fp + fn, 1)
    elif criterion == "youden":
        value = tp / n_pos + tn / n_neg - 1.0
    else:
        value = (tp + tn) / (n_pos + n_neg)
    best = value.max()
    first = int(np.flatnonzero(value >= best - _TIE_TOL * max(1.0, abs(best)))[0])
    return float(cand[first])


def normal_only_threshold(normal_scores: Any, quantile: float = 0.95) -> float:
    """Threshold from normal images alone: the ``quantile`` of their scores.

    This needs no abnormal examples (the realistic setting for unsupervised anomaly
    detection): with ``score > threshold`` about ``1 - quantile`` of normal images are
    flagged, i.e. the expected false-positive rate on normals is ``1 - quantile``.
    Linear interpolation between order statistics (numpy's default) is used.
    """
    quantile = float(quantile)
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    s = _check_scores(normal_scores, "normal_scores")
    return float(np.quantile(s, quantile))


def evaluate_scores(
    labels: Any,
    scores: Any,
    threshold_val: float | None = None,
    threshold_normal: float | None = None,
    best_criterion: str = "f1",
) -> dict[str, float | int]:
    """AUC plus metrics at the given thresholds, as one flat dict (ready for MLflow).

    Keys:
        ``auc``, ``n``, ``n_normal``, ``n_abnormal``;
        ``at_val_threshold/<m>`` for ``threshold_val`` (chosen on validation: the honest figure);
        ``at_normal_threshold/<m>`` for ``threshold_normal`` (set from normal images only);
        ``best_on_set/<m>`` at the ``best_criterion``-optimal threshold **of this very set**.
        The last is optimistic (it peeks at the labels being evaluated) and is reported only
        for comparison with the paper's figures.
    where ``<m>`` is every key of :func:`binary_metrics`.
    """
    y, s = check_labels_scores(labels, scores, both_classes=True)
    n_pos = int(y.sum())
    out: dict[str, float | int] = {
        "auc": roc_auc(y, s),
        "n": int(y.size),
        "n_normal": int(y.size - n_pos),
        "n_abnormal": n_pos,
    }
    named = (
        ("at_val_threshold", threshold_val),
        ("at_normal_threshold", threshold_normal),
        ("best_on_set", best_threshold(y, s, best_criterion)),
    )
    for prefix, thr in named:
        if thr is None:
            continue
        out.update({f"{prefix}/{k}": v for k, v in binary_metrics(y, s, thr).items()})
    return out


ThresholdSource = float | Callable[[], float | None] | None


def _resolve(threshold: ThresholdSource) -> float | None:
    return threshold() if callable(threshold) else threshold


class _EpochScores(Metric):
    """Accumulates ``(scores, labels)`` batches over an epoch and hands back all of them,
    gathered from every rank under torch.distributed (variable per-rank counts allowed)."""

    @reinit__is_reduced
    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        scores, labels = output
        s, y = _as_1d(scores, "scores"), _as_1d(labels, "labels")
        if s.shape != y.shape:
            raise ValueError(f"scores and labels differ in length in a batch: {s.size} vs {y.size}")
        self._scores.append(s)
        self._labels.append(y)

    def _epoch_scores(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._scores:
            raise ValueError(f"{type(self).__name__}: no scores were accumulated in this epoch")
        s, y = np.concatenate(self._scores), np.concatenate(self._labels)
        if idist.get_world_size() > 1:
            s = np.concatenate(idist.all_gather(s))
            y = np.concatenate(idist.all_gather(y))
        return s, y


class AnomalyMetrics(_EpochScores):
    """Ignite metric: :func:`evaluate_scores` over an epoch, written as flat entries.

    Attached under ``name``, it writes ``engine.state.metrics[f"{name}/{key}"]`` for every
    key of :func:`evaluate_scores` (e.g. ``val/auc``, ``val/best_on_set/f1``) and nothing
    under ``name`` itself, so MONAI's stats and MLflow handlers log plain floats. Use MONAI's
    ``ROCAUC`` for the key metric (model selection); this class adds the thresholded figures.

    ``output_transform`` must return ``(scores, labels)``: tensors of shape (B,) or (B, 1),
    or lists of per-item tensors as produced by MONAI's decollation with
    ``monai.handlers.from_engine(["score", "label"])``. Thresholds may be floats or
    zero-argument callables evaluated at the end of the epoch (e.g. the normal-only threshold
    of the calibration computed during training). Under torch.distributed every rank gathers
    all scores (variable per-rank counts allowed) and computes the same figures.
    """

    def __init__(
        self,
        threshold_val: ThresholdSource = None,
        threshold_normal: ThresholdSource = None,
        best_criterion: str = "f1",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if best_criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {best_criterion!r}; expected one of {CRITERIA}")
        self.threshold_val = threshold_val
        self.threshold_normal = threshold_normal
        self.best_criterion = best_criterion
        super().__init__(output_transform=output_transform, device=device)

    def compute(self) -> dict[str, float | int]:
        s, y = self._epoch_scores()
        return evaluate_scores(
            y, s, _resolve(self.threshold_val), _resolve(self.threshold_normal), self.best_criterion
        )

    def completed(self, engine: Engine, name: str) -> None:
        result: Mapping[str, float | int] = self.compute()
        for key, value in result.items():
            engine.state.metrics[f"{name}/{key}"] = value


def inpainting_rates(
    reconstruction: Any,
    normal: Any,
    anomalous: Any,
    cells: Sequence[Sequence[int]],
    anomaly: Sequence[str],
    grid: int = 3,
) -> dict[str, float]:
    """Does the reconstruction in-paint anomalous cells (DigitAnatomy, SQUID Figure 6)?

    For every affected cell of every image, the reconstructed cell is compared by mean
    squared error with the cell of the normal counterpart (what should be there) and with
    the anomalous input's cell (what is there). A cell counts as *in-painted* when it is
    closer to the normal content *and* closer to it than the normal cell's own mean grey
    level is (so a blank or uniformly grey guess never counts as in-painting). Returns, per anomaly type and ``"all"``, the fraction of
    in-painted cells (``inpainted/<type>``) and the mean margin ``(d_anom - d_norm) /
    (d_anom + d_norm)`` in [-1, 1] (``inpainting_margin/<type>``; +1 = perfect in-painting,
    -1 = a perfect copy of the anomaly).
    """
    rec, nor, ano = (
        np.asarray(torch.as_tensor(x).detach().float().cpu()).reshape(
            len(cells), -1, *np.shape(x)[-2:]
        )
        for x in (reconstruction, normal, anomalous)
    )
    if not rec.shape == nor.shape == ano.shape:
        raise ValueError(
            f"reconstruction, normal and anomalous shapes differ: {rec.shape}, {nor.shape}, {ano.shape}"
        )
    if len(anomaly) != len(cells):
        raise ValueError(f"{len(cells)} cell lists but {len(anomaly)} anomaly types")
    ch, cw = rec.shape[-2] // grid, rec.shape[-1] // grid
    per_type: dict[str, list[tuple[bool, float]]] = {}
    for i, (kind, affected) in enumerate(zip(anomaly, cells)):
        for c in affected:
            r, q = divmod(int(c), grid)
            window = np.s_[..., r * ch : (r + 1) * ch, q * cw : (q + 1) * cw]
            d_norm = float(np.mean((rec[i][window] - nor[i][window]) ** 2))
            d_anom = float(np.mean((rec[i][window] - ano[i][window]) ** 2))
            margin = (d_anom - d_norm) / (d_anom + d_norm) if d_anom + d_norm > 0 else 0.0
            d_flat = float(np.var(nor[i][window]))
            per_type.setdefault(str(kind), []).append((d_norm < d_anom and d_norm < d_flat, margin))
    per_type["all"] = [v for values in per_type.values() for v in values]
    out = {}
    for kind, values in per_type.items():
        if values:
            out[f"inpainted/{kind}"] = float(np.mean([v[0] for v in values]))
            out[f"inpainting_margin/{kind}"] = float(np.mean([v[1] for v in values]))
    return out


def pointing_rates(
    heatmaps: Any, cells: Sequence[Sequence[int]], anomaly: Sequence[str], grid: int = 3
) -> dict[str, float]:
    """Does the heat map point at the anomaly (DigitAnatomy)? The pointing game of Zhang et
    al. (2018) on the layout's cells: an image is a *hit* when the cell holding the most heat
    (the map summed over each of the ``grid x grid`` cells, reading order) is one of its
    affected ``cells``. Returns, per anomaly type and ``"all"``, the fraction of hits
    (``pointing/<type>``). ``heatmaps`` (N, H, W); chance is the affected share of the cells.
    """
    maps = np.asarray(torch.as_tensor(heatmaps).detach().float().cpu())
    if maps.ndim != 3 or len(maps) != len(cells) or len(anomaly) != len(cells):
        raise ValueError(
            f"need (N, H, W) heat maps with one cell list and one anomaly type each, got "
            f"{maps.shape}, {len(cells)} cell lists, {len(anomaly)} types"
        )
    ch, cw = maps.shape[1] // grid, maps.shape[2] // grid
    heat = (
        maps[:, : grid * ch, : grid * cw]
        .reshape(len(maps), grid, ch, grid, cw)
        .sum((2, 4))
        .reshape(len(maps), -1)
    )
    hits: dict[str, list[bool]] = {}
    for kind, affected, cell_heat in zip(anomaly, cells, heat):
        if len(affected):
            hits.setdefault(str(kind), []).append(
                int(cell_heat.argmax()) in {int(c) for c in affected}
            )
    hits["all"] = [h for values in hits.values() for h in values]
    return {f"pointing/{kind}": float(np.mean(values)) for kind, values in hits.items() if values}


class SmoothedAUC(_EpochScores):
    """Ignite metric: the ROC AUC of this validation averaged with the ``window - 1``
    validations before it, for model selection that is not fooled by one lucky epoch.

    One validation's AUC on 200 images swings by several points from epoch to epoch
    (SQUID.md section 5); a checkpoint chosen on the mean of the last few validations is
    one whose neighbours score well too. The per-validation AUCs are kept in
    ``history``, saved by :meth:`state_dict` (put the metric in the checkpoint), so a
    resumed run smooths over the same values. ``output_transform`` returns ``(scores,
    labels)`` as for :class:`AnomalyMetrics`.
    """

    def __init__(
        self,
        window: int = 3,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.history: list[float] = []
        super().__init__(output_transform=output_transform, device=device)

    def compute(self) -> float:
        s, y = self._epoch_scores()
        self.history.append(roc_auc(y, s))
        return float(np.mean(self.history[-self.window :]))

    def state_dict(self) -> dict:
        return {"history": list(self.history), "window": self.window}

    def load_state_dict(self, state: Mapping) -> None:
        self.history = [float(v) for v in state["history"]]


class OptionalAUC(_EpochScores):
    """Ignite metric: the ROC AUC of an evaluator output that not every family produces
    (``score_feature`` needs a discriminator, ``score_running`` a discriminator with
    running statistics). Batches without ``key`` are skipped, and a validation where no
    batch had it writes no metric at all, so one metrics list serves every family.
    """

    def __init__(self, key: str, label_key: str = "label", device: str | torch.device = "cpu"):
        self.key, self.label_key = key, label_key
        super().__init__(
            output_transform=lambda output: (output.get(self.key), output[self.label_key]),
            device=device,
        )

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        if output[0] is not None:
            super().update(output)

    def compute(self) -> float:
        s, y = self._epoch_scores()
        return roc_auc(y, s)

    def completed(self, engine: Engine, name: str) -> None:
        if self._scores:  # a family has the output on every rank or on none
            super().completed(engine, name)
