"""AnatPaste's loss: cross-entropy of the two-way classifier on normal images (class 0) and
their pasted copies (class 1), the batch holding both halves (the authors' training step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AnatPasteLossWeights", "classification_loss", "paste_labels"]


@dataclass
class AnatPasteLossWeights:
    """The one loss term's weight (the authors': 1)."""

    classification: float = 1.0


def paste_labels(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The labels of ``cat([normal, pasted])``: ``batch`` zeros then ``batch`` ones."""
    return torch.arange(2, device=device).repeat_interleave(batch)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, in fp32 (autocast-safe)."""
    return F.cross_entropy(logits.float(), labels)
