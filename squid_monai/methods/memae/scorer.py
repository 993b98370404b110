"""MemAE's score is the auto-encoder's, the reconstruction error: the memory changes what is
reconstructed, not how it is scored (SQUID paper Table 1 scores both this way)."""

from __future__ import annotations

from ..autoencoder import ReconstructionScorer

__all__ = ["ReconstructionScorer"]
