"""The parity contract of an exported scorer against the PyTorch one, measured on labelled
images (the validation split).

* An fp32 export must give every image's score within :data:`FP32_TOLERANCE` of PyTorch's.
* A quantised one may be used by default only if its AUC stays within
  :data:`AUC_MARGIN` of PyTorch's and the Spearman correlation of the scores is at least
  :data:`MIN_SPEARMAN`; otherwise it stays an opt-in, its measured loss on its card.
* Both must keep batch independence: an image scored inside a batch of others scores as it
  does alone (to :data:`FP32_TOLERANCE`), which also means the discriminator still
  normalises each image by its own statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from ..metrics import roc_auc
from .record import forward

__all__ = ["FP32_TOLERANCE", "AUC_MARGIN", "MIN_SPEARMAN", "measure_parity"]

FP32_TOLERANCE = 1e-4
AUC_MARGIN = 0.005  # 0.5 AUC points
MIN_SPEARMAN = 0.999


def _scores(scorer: Callable, images: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    alone = forward(scorer, images, per_image=True)["score"]
    batched = torch.cat([scorer(images[i:i + batch_size])["score"] for i in range(0, len(images), batch_size)])
    return alone.double().numpy(), batched.double().numpy()


@torch.no_grad()
def measure_parity(reference: Callable, candidate: Callable, images: torch.Tensor, labels: np.ndarray | None,
                   quantised: bool, batch_size: int = 16) -> dict:
    """Scores of ``candidate`` against ``reference`` (both scorers) on ``images`` (N, 1, H, W):
    the largest score difference, batch independence (alone against in batches of
    ``batch_size``), AUC of both (when ``labels`` hold both classes), Spearman, and
    ``default``: whether the contract above is met."""
    images = torch.as_tensor(images).float().cpu()
    expected, _ = _scores(reference, images, batch_size)
    got, got_batched = _scores(candidate, images, batch_size)
    result = {"images": int(len(images)), "quantised": bool(quantised),
              "max_abs_score_diff": float(np.abs(got - expected).max()),
              "batch_max_abs_score_diff": float(np.abs(got_batched - got).max()),
              "spearman": float(spearmanr(got, expected).statistic) if len(images) > 1 else 1.0}
    if labels is not None and len(set(np.asarray(labels).tolist())) == 2:
        result.update(auc=roc_auc(labels, got), auc_reference=roc_auc(labels, expected))
    independent = result["batch_max_abs_score_diff"] <= FP32_TOLERANCE
    if quantised:
        auc_kept = "auc" in result and abs(result["auc"] - result["auc_reference"]) <= AUC_MARGIN
        result["default"] = bool(independent and auc_kept and result["spearman"] >= MIN_SPEARMAN)
    else:
        result["default"] = bool(independent and result["max_abs_score_diff"] <= FP32_TOLERANCE)
    return result
