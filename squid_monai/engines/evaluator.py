"""Validation and evaluation of every family as a MONAI :class:`~monai.engines.Evaluator`.

Every image is scored by the family's scorer (a
:class:`~squid_monai.scoring.scorer.CalibratedScorer`: the one scoring path, no autograd
graph). For a scorer whose discriminator has a per-image normalisation switch (SQUID's), the
running-statistics logit of the same reconstruction is computed alongside (it costs one
small discriminator pass), so that both scoring modes of SQUID.md section 5 are reported
in every validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents

from ..scoring.scorer import CalibratedScorer, calibrated_score, feature_distance
from .utils import plain_tensor

__all__ = ["AnomalyEvaluator", "feature_residual"]


@torch.no_grad()
def feature_residual(
    discriminator: torch.nn.Module, image: torch.Tensor, reconstruction: torch.Tensor
) -> torch.Tensor:
    """Per image, the mean squared difference of the discriminator's last convolutional
    features of ``x`` and ``x_hat`` (f-AnoGAN's kappa term, DAAD's alignment error L), with
    per-image normalisation, so that no image's score depends on its batch. (The pixel
    residual, DAAD's R, is the scorer's own ``residual`` output.)"""
    was_training = discriminator.training
    discriminator.eval()
    try:
        with torch.autocast(device_type=image.device.type, enabled=False):
            return feature_distance(
                discriminator.features(image.float()),
                discriminator.features(reconstruction.float()),
            )
    finally:
        discriminator.train(was_training)


class AnomalyEvaluator(Evaluator):
    """Scores a labelled data set; ``engine.state.output`` holds batch tensors ``image``,
    ``label``, ``score``, ``logit``, ``reconstruction`` and ``score_running`` (the score
    from running-statistics normalisation; only its ranking, hence its AUC, is meaningful
    because the calibration is that of the per-image mode).

    Args:
        device: device to score on.
        val_data_loader: yields dicts with ``image`` and ``label`` (0 normal, 1 abnormal).
        scorer: the family's scorer sharing the trained networks.
        key_val_metric, additional_metrics, val_handlers, epoch_length, non_blocking:
            as in :class:`monai.engines.SupervisedEvaluator`.
        amp: accepted for MONAI's signature; the scores are fp32 regardless: the decision
            threshold stored with the model is chosen on them and applied to fp32 scores at
            inference, and an fp16 overflow would turn them into NaN.
        running_stats: also compute ``score_running`` (scorers whose discriminator has a
            ``per_image_norm`` switch, i.e. SQUID's; other families skip it).
        residual_scores: also output the source documents' other scores of the same
            reconstruction: ``score_residual`` (the scorer's pixel residual),
            ``score_logit`` (the negated discriminator logit, the paper's score) and
            ``score_feature`` (:func:`feature_residual`; scorers with a discriminator).
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        scorer: CalibratedScorer,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        amp: bool = False,
        running_stats: bool = True,
        residual_scores: bool = True,
        image_key: str = "image",
        label_key: str = "label",
    ):
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.scorer, self.running_stats, self.residual_scores = (
            scorer,
            running_stats,
            residual_scores,
        )
        self.image_key, self.label_key = image_key, label_key
        #: AUC of every validation run by this process, by (trainer) epoch: the metric
        #: ``val_auc`` when there is one (the key metric may be its smoothed version)
        self.auc_history: dict[int, float] = {}
        #: the key metric (what selects the checkpoint) of every validation, by epoch
        self.key_metric_history: dict[int, float] = {}
        self.add_event_handler(Events.EPOCH_COMPLETED, self._record_key_metric)

    def _record_key_metric(self, engine: AnomalyEvaluator) -> None:
        name, metrics, epoch = (
            engine.state.key_metric_name,
            engine.state.metrics,
            int(engine.state.epoch),
        )
        if name is not None and name in metrics:
            self.key_metric_history[epoch] = float(metrics[name])
        auc = "val_auc" if "val_auc" in metrics else name
        if auc is not None and auc in metrics:
            self.auc_history[epoch] = float(metrics[auc])

    def _iteration(
        self, engine: AnomalyEvaluator, batchdata: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = (
            plain_tensor(batchdata[self.image_key])
            .to(engine.state.device, non_blocking=engine.non_blocking)
            .float()
        )
        label = plain_tensor(batchdata[self.label_key]).reshape(-1).to(engine.state.device)
        out = self.scorer(image)  # fp32 (the threshold is chosen on these scores), also under AMP
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        output = {"image": image, "label": label, **{k: v.float() for k, v in out.items()}}
        if self.running_stats and hasattr(
            getattr(self.scorer, "discriminator", None), "per_image_norm"
        ):
            disc = self.scorer.discriminator
            previous, disc.per_image_norm = disc.per_image_norm, False
            try:
                with torch.no_grad():
                    logit = disc.eval()(output["reconstruction"]).reshape(-1)
            finally:
                disc.per_image_norm = previous
            output["logit_running"] = logit
            output["score_running"] = calibrated_score(logit, self.scorer.mean, self.scorer.std)
        if self.residual_scores and "residual" in output:
            output["score_residual"] = output["residual"]
        if self.residual_scores and "logit" in output:
            output["score_logit"] = -output[
                "logit"
            ]  # the paper's score, whatever score_source ranks by
        if self.residual_scores and hasattr(
            getattr(self.scorer, "discriminator", None), "features"
        ):
            output["score_feature"] = (
                output["feature"]
                if "feature" in output  # the combined source computed it
                else feature_residual(self.scorer.discriminator, image, output["reconstruction"])
            )
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output
