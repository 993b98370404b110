"""The Patch-MemAE ensemble score (SQUID paper App. B.2: the space-specific models are
"evaluated through an ensemble style"): the mean over positions of each position's
MemAE score, i.e. its reconstruction error on its own patch. With equal patches this is
the whole image's mean squared error, and it is calibrated once, like any score."""

from __future__ import annotations

import torch

from ..autoencoder import ReconstructionScorer

__all__ = ["PatchMemAEScorer"]


class PatchMemAEScorer(ReconstructionScorer):
    """``forward(image)`` -> ``{"score", "logit", "residual", "tile_residual" (B, T),
    "reconstruction"}``; ``residual`` is the mean of ``tile_residual``."""

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in self.network(image).items() if k != "weights"}
        with torch.autocast(device_type=image.device.type, enabled=False):
            net = self.network
            diff = net.patches(image.float()) - net.patches(out["reconstruction"].float())
            out["tile_residual"] = diff.pow(2).flatten(2).mean(2)
            out["residual"] = out["tile_residual"].mean(1)
        return out
