"""MemAE's memory module (review deck, "MemAE [2/3]", eq. 3-7; Gong et al., ICCV 2019).

For a query ``z`` (one pixel of the encoding: the memory "models the features on one
pixel of the encoding", deck Figure 2) and the learnt items ``m_1 .. m_N``:

* eq. 5: ``d(z, m_i) = z m_i^T / (||z|| ||m_i||)``, the cosine similarity;
* eq. 4: ``w_i = exp(d(z, m_i)) / sum_j exp(d(z, m_j))``, the soft addressing;
* eq. 7: ``w_hat_i = max(w_i - l, 0) * w_i / (|w_i - l| + eps)``, the continuous form of
  the hard shrinkage of eq. 6 (``w_i`` if ``w_i > l``, else 0) that back-propagates;
* then ``w_hat <- w_hat / ||w_hat||_1`` ("w_hat is normalized after the hard shrinkage
  operation", deck Figure 2);
* eq. 3: ``z_hat = w_hat M = sum_i w_hat_i m_i``, what the decoder receives.

Chosen where the documents are silent (as in the MemAE authors' code): ``eps`` = 1e-12,
the items initialised uniformly in ``+-1/sqrt(C)``, the threshold ``l`` = 1/N by default
(the MemAE paper's range is [1/N, 3/N]); the module runs in fp32 under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MemoryUnit", "hard_shrink", "SHRINK_EPS"]

SHRINK_EPS = 1e-12


def hard_shrink(
    weights: torch.Tensor, threshold: float, eps: float = SHRINK_EPS, dim: int = -1
) -> torch.Tensor:
    """Eq. 7 then the L1 re-normalisation along ``dim``: weights at or below ``threshold``
    become 0, the others keep their value (up to ``eps``) and are rescaled to sum to 1
    (a vector with no weight above the threshold stays all zero)."""
    shrunk = F.relu(weights - threshold) * weights / ((weights - threshold).abs() + eps)
    return F.normalize(shrunk, p=1, dim=dim)


class MemoryUnit(nn.Module):
    """``forward(z)`` with ``z`` (B, C, h, w) -> ``(z_hat (B, C, h, w), w_hat (B, N, h, w))``.

    Args:
        items: N, the number of memory items.
        channels: C, the width of an item (the encoding's channels).
        shrink_threshold: ``l`` of eq. 7 (default 1/N).
    """

    def __init__(self, items: int, channels: int, shrink_threshold: float | None = None):
        super().__init__()
        if items < 1:
            raise ValueError(f"memory items must be >= 1, got {items}")
        self.items, self.channels = int(items), int(channels)
        self.shrink_threshold = 1.0 / items if shrink_threshold is None else float(shrink_threshold)
        bound = 1.0 / math.sqrt(channels)
        self.memory = nn.Parameter(torch.empty(items, channels).uniform_(-bound, bound))

    def address(self, query: torch.Tensor) -> torch.Tensor:
        """Queries (Q, C) -> shrunk, re-normalised addressing weights (Q, N) (eq. 4-7)."""
        similarity = F.normalize(query, dim=1) @ F.normalize(self.memory, dim=1).t()  # eq. 5
        return hard_shrink(
            torch.softmax(similarity, dim=1), self.shrink_threshold, dim=1
        )  # eq. 4, 7

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            query = z.float().permute(0, 2, 3, 1).reshape(-1, c)
            weights = self.address(query)
            read = weights @ self.memory  # eq. 3
        z_hat = read.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return z_hat, weights.reshape(b, h, w, self.items).permute(0, 3, 1, 2)
