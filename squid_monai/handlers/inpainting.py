"""The in-painting check of every DigitAnatomy validation (SQUID Figure 6).

SQUID's claim is that the student reconstruction replaces an anomalous region with its
normal counterpart assembled from memory. The AUC alone cannot tell in-painting from
luck, so every validation also reconstructs a fixed set of anomalous images whose
normal counterpart is known (:func:`squid_monai.data.digitanatomy.inpainting_set`),
writes the fraction of affected cells that were in-painted per anomaly type
(:func:`squid_monai.metrics.inpainting_rates`) into the evaluator's metrics (so they are
logged and tracked with the AUC), and saves a Figure-6-like picture: two inputs of each
anomaly type and a blank image, with their reconstructions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..data.digitanatomy import GRID, inpainting_set
from ..distributed import is_main_process
from ..metrics import inpainting_rates
from ..transforms.spatial import ResizeRadiograph
from ..visualize import image_grid

__all__ = ["InpaintingReport", "figure6"]

logger = logging.getLogger(__name__)


def figure6(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    kinds: list[str],
    path: str | Path,
) -> Path:
    """Two inputs of each anomaly type and a blank image (top) with their reconstructions
    (bottom); only the blank image is reconstructed here, by ``reconstruct`` (a batch of
    images -> their reconstructions, e.g. a SQUID generator's ``reconstruct``)."""
    picks = [
        kinds.index(k) + j for k in dict.fromkeys(kinds) for j in range(2) if kinds.count(k) > j
    ]
    blank = torch.zeros(1, *images.shape[1:], device=images.device)
    shown = torch.cat([images[picks], blank])
    recon = torch.cat([reconstructions[picks], reconstruct(blank)])
    return image_grid(
        [shown.cpu(), recon.cpu()],
        ["input", "reconstruction"],
        path,
        max_images=len(shown),
        value_ranges=[(0, 1), (0, 1)],
    )


class InpaintingReport:
    """Attach to the validation evaluator (before the tracking handler, so that the
    ``inpainted/<type>`` and ``inpainting_margin/<type>`` metrics are logged with the rest).

    Args:
        scorer: the scored model (any family: its ``reconstruction`` output is checked).
        image_size: the side the model takes (the validation images' resizing).
        output_dir: where ``inpainting_epoch=<n>.png`` is written.
        n_per_type: anomalous images per type (fixed-seed validation handwriting).
        enabled: off on data sets without known normal counterparts (real radiographs).
    """

    def __init__(
        self,
        scorer: torch.nn.Module,
        image_size: int,
        output_dir: str | Path,
        n_per_type: int = 16,
        enabled: bool = True,
        seed: int = 0,
    ):
        self.scorer, self.image_size, self.output_dir, self.enabled = (
            scorer,
            int(image_size),
            Path(output_dir),
            bool(enabled),
        )
        self.n_per_type, self.seed = n_per_type, seed
        self._items: list[dict] | None = None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        return self.scorer(image)["reconstruction"]

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        if self._items is None:
            self._items = inpainting_set(self.n_per_type, seed=self.seed, split="validation")
        device = next(self.scorer.parameters()).device
        resize = ResizeRadiograph(self.image_size)  # the validation images' resizing
        image = torch.stack([resize(torch.as_tensor(it["image"])) for it in self._items]).to(device)
        normal = torch.stack([resize(torch.as_tensor(it["normal"])) for it in self._items])
        kinds = [it["anomaly"] for it in self._items]
        recon = self.reconstruct(image)
        rates = inpainting_rates(
            recon, normal, image, [it["cells"] for it in self._items], kinds, grid=GRID
        )
        engine.state.metrics.update(rates)
        epoch = int(engine.state.epoch)
        if is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            figure6(
                self.reconstruct,
                image,
                recon,
                kinds,
                self.output_dir / f"inpainting_epoch={epoch}.png",
            )
        logger.info(
            "in-painted cells at epoch %d: %s",
            epoch,
            ", ".join(
                f"{k.split('/')[1]} {v:.2f}" for k, v in rates.items() if k.startswith("inpainted/")
            ),
        )
