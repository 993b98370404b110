"""THE scoring path: preprocessed image -> scorer (reconstruction, logit, calibrated score)
-> decision -> explanation -> one record per image -> one writer.

Everything that scores (the validation evaluator, ``evaluate.json``, ``inference.json``,
the MLflow model, the TorchScript export and the deploy operators) goes through this
package, so they cannot drift apart:

* :mod:`.scorer`: :class:`CalibratedScorer` (every family's scorer base), the calibration
  and :func:`decide`;
* :mod:`.explain`: the ``heatmap``, what drives the reported score;
* :mod:`.record`: :class:`ScoreRecord` and :func:`score_images`, the bad-file policy
  (:func:`read_image`) and the ``difference``;
* :mod:`.domain`: the domain guard, whether an input looks like anything the model was
  calibrated on (every record's ``domain``);
* :mod:`.writer`: the one ``scores.csv`` layout and the image files;
* :mod:`.runtimes`: an export on another runtime, held to :mod:`.parity` (:mod:`.folding` is the
  eager PyTorch fast path).

Loading a scorer from a trained-model folder needs its family, so it lives above the families:
:mod:`squid_monai.loading`.
"""

from .explain import (
    EXPLAINERS,
    DiscriminatorGradCAM,
    ScoreSaliency,
    explainer_for,
    gradcam_heatmap,
    last_conv_layer,
)
from .record import (
    PerImageInferer,
    ScoreRecord,
    ScoringItems,
    difference_map,
    forward,
    read_image,
    score_images,
    source_name,
)
from .scorer import CalibratedScorer, calibrate, calibrated_score, decide, pixel_residual
from .writer import (
    CSV_COLUMNS,
    IMAGE_FILES,
    ScoreWriter,
    ScoreWriterHandler,
    csv_row,
    save_images,
    stem,
    unique_stems,
)

__all__ = [
    "CSV_COLUMNS",
    "EXPLAINERS",
    "IMAGE_FILES",
    "CalibratedScorer",
    "DiscriminatorGradCAM",
    "PerImageInferer",
    "ScoreRecord",
    "ScoreSaliency",
    "ScoreWriter",
    "ScoreWriterHandler",
    "ScoringItems",
    "source_name",
    "stem",
    "calibrate",
    "calibrated_score",
    "csv_row",
    "decide",
    "difference_map",
    "explainer_for",
    "forward",
    "gradcam_heatmap",
    "last_conv_layer",
    "read_image",
    "save_images",
    "pixel_residual",
    "score_images",
    "unique_stems",
]
