"""The auto-encoder's training iteration: fit ``x_hat = network(x)`` to normal images, one
optimiser step on the family's objective (:mod:`.losses`) per batch.

MemAE and Patch-MemAE train with this iteration and their own objective
(:class:`~squid_monai.methods.memae.MemAETrainer` swaps :attr:`AutoEncoderTrainer.objective`).
A network that holds ``num_models`` independent models on equal parts of the image
(Patch-MemAE: one MemAE per tile position) is trained on the *sum* of their objectives:
their parameters are disjoint, so each model gets exactly the gradient of its own objective,
and one Adam step over all of them is one step of each model trained alone (the paper trains
them separately, App. B.2).

The non-finite guard, the AMP step and ``run`` are
:class:`~squid_monai.engines.base.GuardedTrainer`'s, as for every family: MONAI's iteration
events fire in order, ``engine.state.output`` holds floats ``loss`` and ``loss_<term>`` for
each term of the objective; a non-finite loss skips the step and restores the normalisation
statistics the forward pass wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from ...engines.base import GuardedTrainer
from ...engines.utils import average_running_stats, norm_buffers, unwrap
from .losses import AutoEncoderLossWeights, autoencoder_losses

__all__ = ["AutoEncoderTrainer"]


class AutoEncoderTrainer(GuardedTrainer):
    """Trains one reconstruction network (its ``forward(image)`` returns a dict with
    ``reconstruction``, and whatever else :attr:`objective` reads).

    Args:
        device, max_epochs, train_data_loader, amp, max_nonfinite: as in
            :class:`~squid_monai.engines.base.GuardedTrainer`.
        network: the network (optionally DDP-wrapped); its ``num_models`` (default 1) is
            the number of independent models it holds (module docstring).
        optimizer: its optimiser.
        loss_weights: a :attr:`weights_type` or a dict of its fields.
        scaler: ``torch.amp.GradScaler`` (default: enabled with AMP); pass it to
            save it in checkpoints.
        engine_args: ``image_key`` and MONAI's engine arguments, see
            :class:`~squid_monai.engines.base.GuardedTrainer`.
    """

    #: the loss weights' dataclass and the objective ``(out, image, weights, num_models) ->
    #: {term: loss, "total": loss}`` (:mod:`.losses`): what a subclass family changes
    weights_type: type = AutoEncoderLossWeights
    objective = staticmethod(autoencoder_losses)

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_weights: Any = None,
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
        self.loss_weights = self._loss_weights(loss_weights, self.weights_type)
        self.scaler = self.grad_scaler(scaler)

    def _iteration(self, engine: AutoEncoderTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        net = self.network
        net.train()
        saved = norm_buffers(net)  # restored if the loss turns out non-finite
        with self._autocast():
            out = net(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = self.objective(out, image, self.loss_weights, getattr(unwrap(net), "num_models", 1))
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
