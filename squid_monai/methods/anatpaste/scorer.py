"""The AnatPaste scorer: image -> the classifier's trunk embedding, L2-normalised -> its
Mahalanobis distance to a Gaussian fitted on the embeddings of normal training images (the
authors' density: the mean, and the Ledoit-Wolf shrunk covariance's inverse); normality is the
negated distance, calibrated by :class:`CalibratedScorer`.

The Gaussian is fitted by :meth:`AnatPasteScorer.fit_normals` in the same pass over the normal
calibration images that fits the calibration (:func:`~squid_monai.scoring.scorer.calibrate`),
and stored in the buffers ``density_mean`` (D,) and ``density_precision`` (D, D), fixed in size
by the network, so that the scorer saves and loads with ``weights_only=True`` and exports to
TorchScript. Before the first fit they are 0 and the identity (the distance is the embedding's
norm, always 1: an unfitted scorer cannot tell images apart, and says nothing it did not learn).

Outputs ``score``, ``logit`` (= the normality, ``-distance``), ``distance``, ``embedding``
(B, D), ``paste_probability`` (the classifier's probability of "pasted", reported, not scored,
as in the authors' evaluation) and ``reconstruction``, which is the input itself: AnatPaste
reconstructs nothing, the writer's difference image is then zero, and the evaluator's residual
AUC is not reported for this family (no ``residual`` output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf

from ...scoring.scorer import CalibratedScorer
from .networks import AnatPasteNet

__all__ = ["AnatPasteScorer", "mahalanobis"]


def mahalanobis(
    embedding: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """``sqrt((x - mean)^T P (x - mean))`` per row of ``embedding`` (B, D), in fp32 (clamped at
    0 under the root against rounding)."""
    centred = embedding.float() - mean.float()
    return torch.einsum("bi,ij,bj->b", centred, precision.float(), centred).clamp_min(0).sqrt()


class AnatPasteScorer(CalibratedScorer):
    """See the module docstring; ``network`` is the trained :class:`AnatPasteNet`."""

    def __init__(
        self, network: AnatPasteNet, mean: float = 0.0, std: float = 1.0, threshold: float = 0.5
    ):
        super().__init__(mean, std, threshold)
        self.network = network
        size = network.embedding_size
        self.register_buffer("density_mean", torch.zeros(size))
        self.register_buffer("density_precision", torch.eye(size))
        self._follow_networks()

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.network(image)
        embedding = F.normalize(out["embedding"].float(), p=2, dim=1)
        return {
            "embedding": embedding,
            "distance": mahalanobis(embedding, self.density_mean, self.density_precision),
            "paste_probability": out["logits"].float().softmax(1)[:, 1],
            "reconstruction": image,
        }

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        # from the embedding, not out["distance"]: calibration refits the density first
        return -mahalanobis(out["embedding"], self.density_mean, self.density_precision)

    def fit_normals(self, out: dict[str, torch.Tensor]) -> None:
        """The Gaussian of the normal images' embeddings: their mean and the inverse of the
        Ledoit-Wolf covariance (the authors' shrinkage, computed in float64)."""
        embedding = out["embedding"].detach().double().cpu()
        if embedding.shape[0] < 2:
            raise ValueError("the AnatPaste density needs at least 2 normal images")
        precision = LedoitWolf().fit(embedding.numpy()).precision_
        self.density_mean.copy_(embedding.mean(0))
        self.density_precision.copy_(torch.from_numpy(precision))
