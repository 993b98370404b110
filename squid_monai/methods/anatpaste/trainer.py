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

from typing import Any

import torch
from monai.engines.utils import IterationEvents

from ...engines.base import SingleNetworkTrainer
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


class AnatPasteTrainer(SingleNetworkTrainer):
    """Self-supervised training of the normal-vs-pasted classifier (see the module docstring).

    Args:
        args, kwargs: ``device``, ``max_epochs``, ``train_data_loader`` (dicts with ``image_key``
            (B, 1, H, W) in [0, 1]), ``network`` (the :class:`~.networks.AnatPasteNet`, optionally
            DDP-wrapped), ``optimizer`` (the recipes': SGD with momentum), ``loss_weights``
            (:class:`AnatPasteLossWeights` or a dict of its fields), ``scaler`` and the engine
            arguments of :class:`~squid_monai.engines.base.SingleNetworkTrainer`.
        paste: ``"anatpaste"`` (the paper) or ``"cutpaste"`` (the variant pasting anywhere).
        image_jitter: the whole-image brightness / contrast jitter (the authors' 0.1; 0 = off).
    """

    weights_type = AnatPasteLossWeights

    def __init__(
        self, *args: Any, paste: str = "anatpaste", image_jitter: float = 0.1, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.paste = paste_transform(paste)  # checks the switch
        self.image_jitter = float(image_jitter)

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
