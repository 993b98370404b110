"""The evaluation report of ``evaluate.json``: per-image scores, metrics and figures of one
labelled split, with the shortcuts that need no learning beside the learned detector (any
model family).

:class:`EvaluationReport` is attached to the :class:`~squid_monai.engines.AnomalyEvaluator`
that scores the split; at the end of the run it writes into ``output_dir``:

* ``scores.csv``: the one layout of :mod:`squid_monai.scoring.writer` (image, label,
  score, logit, decision at the model's validation threshold, threshold, ...), followed by
  the baseline scores (sharpness; the pixel nearest neighbour and the control ensemble when
  ``normals`` are given) and the DigitAnatomy anomaly type when known;
* ``metrics.json``: AUC; accuracy, F1, sensitivity, specificity (and counts) at the
  threshold chosen on validation and at the normal-only threshold stored in the model; the
  same at the best threshold on this very set, labelled as optimistic (for comparison with
  the paper only); the AUC of each baseline on the same images (``baseline_sharpness``,
  ``baseline_pixel_knn``, ``baseline_control``: the two summed, each standardised on the
  normal calibration images, :class:`~squid_monai.baselines.ControlEnsemble`); 95 % bootstrap
  intervals of every AUC and of the detector's paired difference to each baseline
  (``detector_minus_sharpness_auc``, ``detector_minus_pixel_knn_auc``,
  ``detector_minus_control_auc``); with DigitAnatomy, the AUCs per anomaly type
  (``auc_by_anomaly``: all normals against that type's abnormals). The learned model's
  own figures are the ``detector`` section, whatever its family (``model`` is its path).
  Reports written before this vocabulary key them ``squid`` and ``squid_minus_*``:
  :func:`detector_section` and :func:`detector_gain` read both;
* ``roc.png``, ``score_histogram.png``, ``confusion_matrix.png`` (validation threshold),
  ``confusion_matrix_normal_threshold.png``.

The metrics also go into ``engine.state.metrics`` as ``<split>/...`` so that an MLflow
handler attached after this one logs them; everything is computed from the rows of the
CSV, so the files agree with each other exactly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from .baselines import ControlEnsemble, image_stack, sharpness_score
from .metrics import auc_by_anomaly, bootstrap_auc, evaluate_scores, roc_auc
from .scoring import CalibratedScorer, ScoreRecord, ScoreWriter, score_images
from .scoring.domain import NOT_RECORDED, domain_warning

__all__ = [
    "EvaluationReport",
    "EXTRA_COLUMNS",
    "DETECTOR",
    "GAIN_KEYS",
    "detector_section",
    "detector_gain",
]

logger = logging.getLogger(__name__)

#: columns the evaluation adds to ``scores.csv`` (``anomaly`` only when the data has it)
EXTRA_COLUMNS = ("sharpness_score", "pixel_knn_score", "control_score", "anomaly")
_OPTIMISTIC = "best_on_this_set"

#: key of the learned model's section of ``metrics.json`` (every family)
DETECTOR = "detector"
#: baseline name -> key of the detector's paired difference to it in ``metrics.json``
GAIN_KEYS = {name: f"{DETECTOR}_minus_{name}_auc" for name in ("sharpness", "pixel_knn", "control")}
#: the keys of reports written before :data:`DETECTOR` (new key -> old key)
_OLD_KEYS = {
    DETECTOR: "squid",
    GAIN_KEYS["sharpness"]: "squid_minus_baseline_auc",
    GAIN_KEYS["pixel_knn"]: "squid_minus_pixel_knn_auc",
    GAIN_KEYS["control"]: "squid_minus_control_auc",
}

#: baselines of the report: name -> note
_BASELINES = {
    "sharpness": "negated Laplacian energy of the preprocessed image (no learning): the known "
    "smoothness shortcut; a learned model's gain must be judged against it",
    "pixel_knn": "mean squared pixel difference to the nearest of the images the model calibrates "
    "on (memory, no learning)",
    "control": "control ensemble: sharpness + pixel nearest neighbour, each standardised by its "
    "mean and std on the normal calibration images, summed (no learning); the bar a learned score "
    "must clear",
}


def detector_section(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The learned model's section of a ``metrics.json`` (:data:`DETECTOR`; ``squid`` in
    reports written before it)."""
    return metrics[DETECTOR if DETECTOR in metrics else _OLD_KEYS[DETECTOR]]


def detector_gain(metrics: Mapping[str, Any], baseline: str) -> dict[str, Any] | None:
    """The detector's paired AUC difference to ``baseline`` (``sharpness``, ``pixel_knn`` or
    ``control``) in a ``metrics.json``, under its key or the one of older reports
    (``squid_minus_baseline_auc`` for sharpness, ``squid_minus_<baseline>_auc`` otherwise);
    ``None`` when the report has none (a baseline it did not compute)."""
    key = GAIN_KEYS[baseline]
    return metrics.get(key, metrics.get(_OLD_KEYS[key]))


class EvaluationReport:
    """Collect every scored image of an evaluation run and write the report (see module
    docstring).

    Args:
        scorer: the evaluated scorer (its ``threshold`` and ``normal_threshold`` are used).
        output_dir: folder of the report files.
        split: name of the evaluated split, used in metric names and figure titles.
        best_criterion: criterion of the optimistic best-threshold figures.
        model_path: recorded in ``metrics.json``.
        family: the model family, named in the figure titles and the log line.
        normals: the images the model calibrates on (a dataset of ``{"image": ...}`` items,
            or a (N, C, H, W) tensor), for the pixel nearest-neighbour baseline and the
            control ensemble; ``None`` leaves them out. Preprocessed as the evaluated images are.
    """

    def __init__(
        self,
        scorer: CalibratedScorer,
        output_dir: str | os.PathLike,
        split: str = "test",
        best_criterion: str = "f1",
        model_path: str | os.PathLike | None = None,
        family: str = "detector",
        normals: Any = None,
    ):
        self.scorer, self.output_dir, self.split, self.family = (
            scorer,
            Path(output_dir),
            split,
            family,
        )
        self._normals_source, self._control = normals, None
        self.best_criterion = best_criterion
        self.model_path = None if model_path is None else str(model_path)
        self.rows: list[ScoreRecord] = []
        self.metrics: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine | None = None) -> None:
        self.rows, self.metrics = [], {}
        self._running: list[float] = []

    def _collect(self, engine: Engine) -> None:
        out, batch = engine.state.output, engine.state.batch
        if "score_running" in out:
            self._running.extend(out["score_running"].detach().reshape(-1).double().cpu().tolist())
        n = out["score"].numel()
        records = score_images(
            self.scorer,
            out["image"],
            names=_image_names(batch, n, self.split, len(self.rows)),
            labels=out["label"].detach().reshape(-1).cpu(),
            pixels=False,
            output=out,
        )
        image = torch.as_tensor(out["image"].detach().cpu()).float()
        baselines = {"sharpness_score": sharpness_score(image)}
        if self._normals_source is not None:
            control = self._control_ensemble().parts(image)
            baselines.update(pixel_knn_score=control["pixel_knn"], control_score=control["control"])
        anomalies = batch.get("anomaly") if isinstance(batch, dict) else None
        for i, record in enumerate(records):
            record.extra.update({k: float(v[i]) for k, v in baselines.items()})
            if anomalies is not None:
                record.extra["anomaly"] = str(anomalies[i])
        self.rows.extend(records)

    def _control_ensemble(self) -> ControlEnsemble:
        if self._control is None:
            self._control = ControlEnsemble(image_stack(self._normals_source))
        return self._control

    def _write(self, engine: Engine) -> None:
        from . import visualize  # matplotlib only when writing

        if not self.rows:
            raise ValueError(f"evaluation of the {self.split!r} split scored no image")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        labels = np.array([r.label for r in self.rows])
        scores = np.array([r.score for r in self.rows])
        thr_val, thr_normal = float(self.scorer.threshold), float(self.scorer.normal_threshold)
        self._write_csv()
        flat = evaluate_scores(labels, scores, thr_val, thr_normal, self.best_criterion)
        self.metrics = self._report(flat, labels, scores)
        (self.output_dir / "metrics.json").write_text(json.dumps(self.metrics, indent=2))

        tag = f"{self.split} split"
        visualize.plot_roc(
            labels, scores, self.output_dir / "roc.png", title=f"{self.family} ROC, {tag}"
        )
        visualize.plot_score_histogram(
            labels,
            scores,
            self.output_dir / "score_histogram.png",
            thresholds={"validation": thr_val, "normal-only": thr_normal},
            title=f"{self.family} scores by class, {tag}",
        )
        visualize.plot_confusion_matrix(
            labels, scores, thr_val, self.output_dir / "confusion_matrix.png"
        )
        visualize.plot_confusion_matrix(
            labels, scores, thr_normal, self.output_dir / "confusion_matrix_normal_threshold.png"
        )
        for key, value in flat.items():
            engine.state.metrics[f"{self.split}/{key}"] = value
        detector = self.metrics[DETECTOR]
        interval = detector["auc_95ci"]
        engine.state.metrics.update(
            {f"{self.split}/auc_95ci_low": interval[0], f"{self.split}/auc_95ci_high": interval[1]}
        )
        for name, gain_key in GAIN_KEYS.items():
            if f"baseline_{name}" not in self.metrics:
                continue
            gain = self.metrics[gain_key]
            engine.state.metrics.update(
                {
                    f"{self.split}/baseline_{name}/auc": self.metrics[f"baseline_{name}"]["auc"],
                    f"{self.split}/{gain_key}": gain["value"],
                    f"{self.split}/{gain_key}_95ci_low": gain["low"],
                    f"{self.split}/{gain_key}_95ci_high": gain["high"],
                }
            )
        if "auc_running_stats" in detector:
            engine.state.metrics[f"{self.split}/auc_running_stats"] = detector["auc_running_stats"]
        baselines = ", ".join(
            f"{name} baseline {self.metrics[f'baseline_{name}']['auc']:.4f}"
            for name in _BASELINES
            if f"baseline_{name}" in self.metrics
        )
        logger.info(
            "%s: %s AUC %.4f (%s) on %d images; report in %s",
            self.split,
            self.family,
            flat["auc"],
            baselines,
            len(self.rows),
            self.output_dir,
        )

    def _write_csv(self) -> None:
        extra = [c for c in EXTRA_COLUMNS if c in self.rows[0].extra]
        with ScoreWriter(self.output_dir, images=False, extra_columns=extra) as writer:
            writer.write_all(self.rows)

    def _report(self, flat: dict, labels: np.ndarray, scores: np.ndarray) -> dict:
        def section(prefix: str) -> dict:
            return {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(prefix + "/")}

        detector = {
            "auc": flat["auc"],
            "at_validation_threshold": section("at_val_threshold"),
            "at_normal_threshold": section("at_normal_threshold"),
            _OPTIMISTIC: {
                "note": f"threshold maximising {self.best_criterion} on this very set: optimistic, "
                "for comparison with the paper only",
                **section("best_on_set"),
            },
        }
        detector["auc_95ci"] = _interval(bootstrap_auc(labels, scores))
        kinds = [r.extra.get("anomaly", "") for r in self.rows]
        by_type = auc_by_anomaly(
            labels, scores, kinds
        )  # DigitAnatomy only: {} without anomaly types
        if by_type:
            detector["auc_by_anomaly"] = by_type
        if len(self._running) == len(self.rows):
            detector["auc_running_stats"] = roc_auc(labels, self._running)
        report = {
            "split": self.split,
            "model": self.model_path,
            "n": flat["n"],
            "n_normal": flat["n_normal"],
            "n_abnormal": flat["n_abnormal"],
            "calibration": {"mean": float(self.scorer.mean), "std": float(self.scorer.std)},
            "domain": _domain_section(self.rows, self.scorer),
            DETECTOR: detector,
        }
        for name, note in _BASELINES.items():
            if f"{name}_score" not in self.rows[0].extra:
                continue
            base = np.array([r.extra[f"{name}_score"] for r in self.rows])
            report[f"baseline_{name}"] = {
                "auc": roc_auc(labels, base),
                "auc_95ci": _interval(bootstrap_auc(labels, base)),
                **({"auc_by_anomaly": auc_by_anomaly(labels, base, kinds)} if by_type else {}),
                "note": note,
            }
            report[GAIN_KEYS[name]] = {
                **bootstrap_auc(labels, scores, reference=base),
                "note": "paired stratified bootstrap over these images; an interval above 0 is a gain "
                "over the baseline that the sample size supports",
            }
        return report


def _domain_section(rows: list[ScoreRecord], scorer) -> dict[str, Any]:
    """The domain guard over the evaluated images (:mod:`.scoring.domain`): how many it
    flagged, the model's limit, the largest distance, and the warning when there is one."""
    out = sum(r.out_of_domain for r in rows)
    unknown = sum(r.domain == NOT_RECORDED for r in rows)
    distances = [r.domain_distance for r in rows if r.domain_distance is not None]
    limit = float(scorer.domain_limit)
    section = {
        "out_of_domain": out,
        "not_recorded": unknown,
        "limit": limit if limit > 0 else None,
        "max_distance": max(distances) if distances else None,
    }
    warning = domain_warning(len(rows), out, unknown)
    if warning:
        logger.warning("domain guard: %s", warning)
    return section if warning is None else {**section, "warning": warning}


def _interval(result: dict) -> list[float]:
    """``[low, high]`` of a :func:`~squid_monai.metrics.bootstrap_auc` result."""
    return [result["low"], result["high"]]


def _image_names(batch: Any, n: int, split: str, offset: int) -> list[str]:
    """File names of a batch from the image's MONAI metadata; generated images (no file)
    are named ``<split>#<running index>``."""
    image = batch.get("image") if isinstance(batch, dict) else None
    meta = getattr(image, "meta", None) or {}
    names = meta.get("filename_or_obj")
    if isinstance(names, str):
        names = [names]
    names = list(names) if names is not None else []
    return [
        str(names[i])
        if i < len(names) and not str(names[i]).startswith("<")
        else f"{split}#{offset + i}"
        for i in range(n)
    ]
