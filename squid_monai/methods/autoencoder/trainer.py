"""The auto-encoder's training iteration: fit ``x_hat = network(x)`` to normal images, one
optimiser step on the family's objective (:mod:`.losses`) per batch.

MemAE and Patch-MemAE train with this iteration and their own objective
(:class:`~squid_monai.methods.memae.MemAETrainer` swaps :attr:`AutoEncoderTrainer.objective`).
A network that holds ``num_models`` independent models on equal parts of the image
(Patch-MemAE: one MemAE per tile position) is trained on the *sum* of their objectives:
their parameters are disjoint, so each model gets exactly the gradient of its own objective,
and one Adam step over all of them is one step of each model trained alone (the paper trains
them separately, App. B.2).

The network, its optimiser and scaler are held by
:class:`~squid_monai.engines.base.SingleNetworkTrainer`; the non-finite guard, the AMP step and
``run`` are :class:`~squid_monai.engines.base.GuardedTrainer`'s, as for every family: MONAI's
iteration events fire in order, ``engine.state.output`` holds floats ``loss`` and
``loss_<term>`` for each term of the objective; a non-finite loss skips the step and restores
the normalisation statistics the forward pass wrote.
"""

from __future__ import annotations

from typing import Any

from monai.engines.utils import IterationEvents

from ...engines.base import SingleNetworkTrainer
from ...engines.utils import average_running_stats, norm_buffers, unwrap
from .losses import AutoEncoderLossWeights, autoencoder_losses

__all__ = ["AutoEncoderTrainer"]


class AutoEncoderTrainer(SingleNetworkTrainer):
    """Trains one reconstruction network (its ``forward(image)`` returns a dict with
    ``reconstruction``, and whatever else :attr:`objective` reads).

    Its arguments are :class:`~squid_monai.engines.base.SingleNetworkTrainer`'s: ``network``
    (optionally DDP-wrapped) may hold ``num_models`` (default 1) independent models (module
    docstring); ``loss_weights`` is a :attr:`weights_type` or a dict of its fields.
    """

    #: the loss weights' dataclass and the objective ``(out, image, weights, num_models) ->
    #: {term: loss, "total": loss}`` (:mod:`.losses`): what a subclass family changes
    weights_type: type = AutoEncoderLossWeights
    objective = staticmethod(autoencoder_losses)

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
