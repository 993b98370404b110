"""The AnatPaste training iteration as a MONAI :class:`~monai.engines.Trainer`.

One iteration, as the authors' training step: each normal image of the batch is jittered in
brightness and contrast (their whole-image ``ColorJitter(0.1)``), a copy of it is pasted
(:class:`~squid_monai.transforms.anatomy.AnatPaste`: inside the lung field, or anywhere for the
CutPaste variant), and the classifier takes ``cat([normal, pasted])`` with labels 0 and 1 and
one optimiser step on the cross-entropy.

The paste is applied here, to the batch the shared data pipeline delivers, rather than in the
pipeline: the pipeline is the same for every family (one ``train.json``), and the step needs
the clean image and its pasted copy side by side. It runs on the CPU (NumPy / scikit-image,
a few milliseconds an image at 64 px) and its result moves to the training device. Its draws
are seeded from NumPy's global generator at each step and the jitter's come from torch's, both
seeded by the bundle (``squid_monai.determinism``) and saved by its checkpoints: runs are
repeatable and resume exactly.

``engine.state.output``: ``loss`` and ``loss_classification`` (floats) and ``accuracy`` on the
batch (both halves). As every family's trainer (:class:`~squid_monai.engines.base.GuardedTrainer`):
a non-finite loss is never back-propagated, AMP is float16 on CUDA with a ``GradScaler`` and
bfloat16 on the CPU, and under ``torch.distributed`` the decisions are taken by all ranks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from ...engines.base import GuardedTrainer
from ...engines.utils import average_running_stats, norm_buffers
from ...transforms.anatomy import paste_batch, paste_transform
from .losses import AnatPasteLossWeights, classification_loss, paste_labels

__all__ = ["AnatPasteTrainer", "jitter_batch"]


def jitter_batch(image: torch.Tensor, strength: float) -> torch.Tensor:
    """Each image's brightness then contrast scaled by U(1 - strength, 1 + strength) (contrast
    about its mean), clipped to [0, 1]; ``strength`` 0 returns the batch unchanged. The factors
    are drawn on the CPU from torch's global generator (saved by the checkpoints)."""
    if strength <= 0:
        return image
    shape = (image.shape[0], 1, 1, 1)
    brightness, contrast = (1 + strength * (2 * torch.rand(2, *shape) - 1)).to(image)
    image = (image * brightness).clamp(0, 1)
    mean = image.mean((1, 2, 3), keepdim=True)
    return (contrast * image + (1 - contrast) * mean).clamp(0, 1)


class AnatPasteTrainer(GuardedTrainer):
    """Self-supervised training of the normal-vs-pasted classifier (see the module docstring).

    Args:
        device, max_epochs, train_data_loader: as in :class:`monai.engines.Trainer`; batches
            are dicts with ``image_key`` (B, 1, H, W) in [0, 1].
        network: the :class:`~.networks.AnatPasteNet` (optionally DDP-wrapped).
        optimizer: its optimiser (the recipes': SGD with momentum).
        paste: ``"anatpaste"`` (the paper) or ``"cutpaste"`` (the variant pasting anywhere).
        image_jitter: the whole-image brightness / contrast jitter (the authors' 0.1; 0 = off).
        loss_weights: :class:`AnatPasteLossWeights` or a dict of its fields.
        amp, max_nonfinite, scaler: as in :class:`~squid_monai.engines.base.GuardedTrainer`.
        engine_args: ``image_key`` and MONAI's engine arguments.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        paste: str = "anatpaste",
        image_jitter: float = 0.1,
        loss_weights: AnatPasteLossWeights | dict | None = None,
        amp: bool = False,
        max_nonfinite: int = 20,
        scaler: torch.amp.GradScaler | None = None,
        **engine_args,
    ):
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            amp=amp,
            max_nonfinite=max_nonfinite,
            optimizer=optimizer,
            **engine_args,
        )
        self.network, self.paste = network, paste_transform(paste)  # checks the switch
        self.image_jitter = float(image_jitter)
        self.loss_weights = self._loss_weights(loss_weights, AnatPasteLossWeights)
        self.scaler = self.grad_scaler(scaler)

    def _iteration(self, engine: AnatPasteTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        normal = jitter_batch(image, self.image_jitter)
        pasted, _ = paste_batch(self.paste, normal)
        inputs = torch.cat([normal, pasted])
        labels = paste_labels(image.shape[0], inputs.device)
        net = self.network
        net.train()
        saved = norm_buffers(net)
        with self._autocast():
            logits = net(inputs)["logits"]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = self.loss_weights.classification * classification_loss(logits, labels)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if self._guarded_step(engine, "classification", loss, self.optimizer, self.scaler, saved):
            self._nonfinite_run = 0
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        average_running_stats(net)
        value = float(loss.detach())
        engine.state.output = {
            "loss": value,
            "loss_classification": value,
            "accuracy": float((logits.detach().argmax(1) == labels).float().mean()),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
