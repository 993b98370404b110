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

The non-finite guard, the AMP step and ``run`` are :class:`~squid_monai.engines.base.GuardedTrainer`'s,
as for :class:`~squid_monai.methods.squid.trainer.SQUIDTrainer`: MONAI's iteration events fire in
order, ``engine.state.output`` holds floats ``loss``, ``loss_reconstruction`` and (memory
networks) ``loss_entropy``; a non-finite loss skips the step and restores the
normalisation statistics the forward pass wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from .base import GuardedTrainer
from .utils import average_running_stats, norm_buffers, unwrap

__all__ = [
    "ReconstructionLossWeights",
    "ReconstructionTrainer",
    "addressing_entropy",
    "reconstruction_losses",
]

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


def reconstruction_losses(
    out: dict[str, torch.Tensor],
    image: torch.Tensor,
    weights: ReconstructionLossWeights,
    num_models: int = 1,
) -> dict[str, torch.Tensor]:
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


class ReconstructionTrainer(GuardedTrainer):
    """Trains one reconstruction network (its ``forward(image)`` returns a dict with
    ``reconstruction`` and, for memory networks, the addressing ``weights``).

    Args:
        device, max_epochs, train_data_loader, amp, max_nonfinite: as in
            :class:`~squid_monai.engines.base.GuardedTrainer`.
        network: the network (optionally DDP-wrapped); its ``num_models`` (default 1) is
            the number of independent models it holds (module docstring).
        optimizer: its optimiser.
        loss_weights: :class:`ReconstructionLossWeights` or a dict of its fields.
        scaler: ``torch.amp.GradScaler`` (default: enabled with AMP); pass it to
            save it in checkpoints.
        engine_args: ``image_key`` and MONAI's engine arguments, see :class:`~.base.GuardedTrainer`.
    """

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
        self.network = network
        self.loss_weights = self._loss_weights(loss_weights, ReconstructionLossWeights)
        self.scaler = self.grad_scaler(scaler)

    def _iteration(
        self, engine: ReconstructionTrainer, batchdata: dict[str, Any]
    ) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        net = self.network
        net.train()
        saved = norm_buffers(net)  # restored if the loss turns out non-finite
        with self._autocast():
            out = net(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = reconstruction_losses(
            out, image, self.loss_weights, getattr(unwrap(net), "num_models", 1)
        )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        ok = self._guarded_step(
            engine, "reconstruction", terms["total"], self.optimizer, self.scaler, saved
        )
        if ok:
            self._nonfinite_run = 0
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        average_running_stats(net)
        engine.state.output = {
            "loss": float(terms["total"].detach()),
            **{f"loss_{k}": float(v.detach()) for k, v in terms.items() if k != "total"},
            "updated": ok,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
