"""The one training iteration of the reconstruction families (auto-encoder, MemAE,
Patch-MemAE): fit ``x_hat = network(x)`` to normal images, with MemAE's entropy loss on
the memory addressing weights where the network has a memory.

Objective of one network, on a batch of normal images (review deck, MemAE [2/3]; the
auto-encoder's L2 distance, lecture "Loss Function in AutoEncoder")::

    L = w_rec * mean((x - x_hat)^2) + w_ent * mean_q( sum_i -w_hat_qi * log(w_hat_qi) )

the second term over every addressing vector ``w_hat_q`` (one per query: a pixel of the
encoding) of the network's memory. The reconstruction term is the per-pixel mean (the
lecture's L2 is a sum over pixels: a constant factor, i.e. a rescaled learning rate). A
network that holds ``num_models`` independent models on equal parts of the image
(Patch-MemAE: one MemAE per tile position) is trained on the *sum* of their objectives,
``num_models * L`` over the whole image: their parameters are disjoint, so each model gets
exactly the gradient of its own objective, and one Adam step over all of them is one
step of each model trained alone (the paper trains them separately, App. B.2).

The iteration follows :class:`~squid_monai.engines.trainer.SQUIDTrainer` (its non-finite
guard, AMP step and ``run`` are reused, not copied): MONAI's iteration events fire in
order, ``engine.state.output`` holds floats ``loss``, ``loss_reconstruction`` and (memory
networks) ``loss_entropy``; a non-finite loss skips the step and restores the
normalisation statistics the forward pass wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents

from .trainer import SQUIDTrainer, _average_running_stats, _norm_buffers, _restore, plain_tensor, unwrap

__all__ = ["ReconstructionLossWeights", "ReconstructionTrainer", "addressing_entropy", "reconstruction_losses"]

#: inside the logarithm of the entropy: keeps ``0 * log 0`` at 0 with a finite gradient
ENTROPY_EPS = 1e-12


@dataclass
class ReconstructionLossWeights:
    """Weights of the reconstruction objective. ``entropy``: MemAE's alpha (the MemAE
    paper's 0.0002 is the memory families' recipe; the documents give no value); 0 for
    networks without a memory."""

    reconstruction: float = 1.0
    entropy: float = 0.0


def addressing_entropy(weights: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over addressing vectors of ``sum_i -w_i log w_i`` (MemAE's entropy loss), the
    items along ``dim`` of ``weights`` (e.g. (B, N, h, w): one vector per encoding pixel).
    Low when each query reads few items: it pushes the addressing to be sparse."""
    weights = weights.float()
    return -(weights * torch.log(weights + ENTROPY_EPS)).sum(dim).mean()


def reconstruction_losses(out: dict[str, torch.Tensor], image: torch.Tensor,
                          weights: ReconstructionLossWeights, num_models: int = 1) -> dict[str, torch.Tensor]:
    """The objective's terms (module docstring): ``reconstruction`` (mean squared error),
    ``entropy`` (when ``out`` has addressing ``weights``) and ``total`` (their weighted sum,
    times ``num_models``: what is back-propagated), all in fp32."""
    terms = {"reconstruction": (out["reconstruction"].float() - image.float()).pow(2).mean()}
    total = weights.reconstruction * terms["reconstruction"]
    if "weights" in out:
        terms["entropy"] = addressing_entropy(out["weights"])
        total = total + weights.entropy * terms["entropy"]
    elif weights.entropy:
        raise ValueError(f"an entropy weight ({weights.entropy}) for a network without a memory")
    terms["total"] = num_models * total
    return terms


class ReconstructionTrainer(Trainer):
    """Trains one reconstruction network (its ``forward(image)`` returns a dict with
    ``reconstruction`` and, for memory networks, the addressing ``weights``).

    Args:
        device, max_epochs, train_data_loader, train_handlers, amp, max_nonfinite,
        image_key, epoch_length, non_blocking, key_train_metric, additional_metrics,
        event_names, event_to_attr: as in :class:`~squid_monai.engines.SQUIDTrainer`.
        network: the network (optionally DDP-wrapped); its ``num_models`` (default 1) is
            the number of independent models it holds (module docstring).
        optimizer: its optimiser.
        loss_weights: :class:`ReconstructionLossWeights` or a dict of its fields.
        scaler: ``torch.amp.GradScaler`` (default: enabled for AMP on CUDA); pass it to
            save it in checkpoints.
    """

    # the SQUID trainer's guard and step, shared rather than rewritten
    run = SQUIDTrainer.run
    _autocast = SQUIDTrainer._autocast
    _finite = SQUIDTrainer._finite
    _step = SQUIDTrainer._step

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_weights: ReconstructionLossWeights | dict | None = None,
        amp: bool = False,
        max_nonfinite: int = 20,
        scaler: torch.amp.GradScaler | None = None,
        image_key: str = "image",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
    ):
        super().__init__(
            device=device, max_epochs=max_epochs, data_loader=train_data_loader, epoch_length=epoch_length,
            non_blocking=non_blocking, key_metric=key_train_metric, additional_metrics=additional_metrics,
            handlers=train_handlers, amp=amp, event_names=event_names, event_to_attr=event_to_attr, decollate=False,
        )
        self.network, self.optimizer = network, optimizer  # `optimizer`: the rate MLflow / StatsHandler log
        if isinstance(loss_weights, dict):
            loss_weights = ReconstructionLossWeights(**loss_weights)
        self.loss_weights = loss_weights or ReconstructionLossWeights()
        self.max_nonfinite, self.image_key = max_nonfinite, image_key
        self.amp_device = torch.device(device).type
        self.amp_dtype = torch.float16 if self.amp_device == "cuda" else torch.bfloat16
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=amp and self.amp_device == "cuda")
        self.state.skipped_steps = 0
        self._nonfinite_run = 0

    def _iteration(self, engine: ReconstructionTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = batchdata[self.image_key] if isinstance(batchdata, dict) else batchdata
        image = plain_tensor(image).to(engine.state.device, non_blocking=engine.non_blocking).float()
        net = self.network
        net.train()
        saved = _norm_buffers(net)  # restored if the loss turns out non-finite
        with self._autocast():
            out = net(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = reconstruction_losses(out, image, self.loss_weights, getattr(unwrap(net), "num_models", 1))
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        ok = self._finite(engine, "reconstruction", terms["total"])
        if ok:
            self.optimizer.zero_grad(set_to_none=True)
            self._step(terms["total"], self.optimizer, self.scaler)
            self._nonfinite_run = 0
        else:
            _restore(saved)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        _average_running_stats(net)
        engine.state.output = {
            "loss": float(terms["total"].detach()),
            **{f"loss_{k}": float(v.detach()) for k, v in terms.items() if k != "total"},
            "updated": ok,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
