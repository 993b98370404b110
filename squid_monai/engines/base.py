"""The machinery every family's trainer shares, written once: :class:`GuardedTrainer`, and
the two shapes of trainer built on it, :class:`SingleNetworkTrainer` and
:class:`AdversarialTrainer`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer

from .utils import all_ranks, plain_tensor, restore_buffers

__all__ = ["GuardedTrainer", "SingleNetworkTrainer", "AdversarialTrainer"]


class GuardedTrainer(Trainer):
    """A MONAI :class:`~monai.engines.Trainer` whose steps are guarded against non-finite
    losses: the base of every family's trainer, through :class:`SingleNetworkTrainer` (the
    reconstruction families, AnatPaste) or :class:`AdversarialTrainer` (SQUID, GANomaly,
    DAAD, f-AnoGAN), which then holds only its own iteration and arguments.

    It exists because each of them needs the same things around its iteration, and they
    must behave identically for the bundle's handlers, checkpoints and multi-GPU runs:

    * the MONAI engine arguments (``decollate=False``: the iteration returns floats);
    * mixed precision: :meth:`_autocast` is float16 on CUDA and bfloat16 on the CPU (only
      when asked; fp32 is the CPU default), with one ``torch.amp.GradScaler`` per optimiser
      (:meth:`grad_scaler`: enabled with AMP, on the trainer's device type, so the CPU runs
      the scaler path a GPU runs; pass the scalers in to save them in checkpoints). MONAI's
      own single, deprecated scaler is never built (:meth:`run`);
    * the non-finite-loss guard (:meth:`_finite`): a non-finite loss is never
      back-propagated; the step is skipped, counted in ``engine.state.skipped_steps`` and
      logged (on the logger of the subclass's module), and ``max_nonfinite`` in a row stop
      the run with a ``RuntimeError`` instead of silently training on garbage. The
      iteration restores the BatchNorm statistics the skipped pass wrote
      (:func:`~.utils.norm_buffers`, restored by :meth:`_guarded_step`) and sets
      ``self._nonfinite_run`` back to 0 once all its steps went through;
    * under ``torch.distributed`` the guard's decision is taken by all ranks together
      (:func:`~.utils.all_ranks`): a step is skipped on every rank when its loss is
      non-finite on any rank, so that no rank waits in a gradient reduction another skips;
    * ``engine.optimizer``: the optimiser whose learning rate ``StatsHandler`` /
      ``MLFlowHandler`` log.

    Args:
        device: device to train on.
        max_epochs: epochs to train.
        train_data_loader: yields dicts with ``image_key`` (B, 1, H, W) in [0, 1] (or the
            image tensors themselves).
        amp: mixed precision (above).
        max_nonfinite: consecutive non-finite steps tolerated before the run is stopped.
        optimizer: the optimiser ``engine.optimizer`` names.
        image_key: key of the image in the batch.
        epoch_length, non_blocking, train_handlers, key_train_metric, additional_metrics,
        event_names, event_to_attr: as in :class:`monai.engines.SupervisedTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        *,
        amp: bool = False,
        max_nonfinite: int = 20,
        optimizer: torch.optim.Optimizer | None = None,
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
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
        )
        self.optimizer = optimizer
        self.max_nonfinite, self.image_key = int(max_nonfinite), image_key
        self.amp_device = torch.device(device).type
        self.amp_dtype = torch.float16 if self.amp_device == "cuda" else torch.bfloat16
        self.state.skipped_steps = 0
        self._nonfinite_run = 0

    #: the family's loss weights, a dataclass (:class:`SingleNetworkTrainer` and
    #: :class:`AdversarialTrainer` build ``loss_weights`` from it with :meth:`_loss_weights`)
    weights_type: type

    @staticmethod
    def _loss_weights(weights: Any, kind: type) -> Any:
        """``weights`` as a ``kind`` (a dataclass of loss weights): from a dict of its fields,
        or ``kind``'s defaults for None."""
        if isinstance(weights, dict):
            weights = kind(**weights)
        return weights or kind()

    def run(self) -> None:  # MONAI's Trainer.run builds a deprecated single scaler: not used here
        super(Trainer, self).run()

    def grad_scaler(self, scaler: torch.amp.GradScaler | None = None) -> torch.amp.GradScaler:
        """``scaler``, or a new one on the trainer's device type, enabled with AMP."""
        return scaler or torch.amp.GradScaler(self.amp_device, enabled=bool(self.amp))

    def _autocast(self):
        return torch.autocast(device_type=self.amp_device, dtype=self.amp_dtype, enabled=self.amp)

    def _image(
        self, engine: GuardedTrainer, batchdata: dict[str, Any] | torch.Tensor
    ) -> torch.Tensor:
        """The batch's image: a plain float tensor on the engine's device."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = batchdata[self.image_key] if isinstance(batchdata, dict) else batchdata
        return plain_tensor(image).to(engine.state.device, non_blocking=engine.non_blocking).float()

    def _finite(self, engine: GuardedTrainer, what: str, loss: torch.Tensor) -> bool:
        """Whether ``loss`` (the ``what`` loss) is finite on every rank; if not, the step is
        counted as skipped and logged, and a ``RuntimeError`` ends a run of
        ``max_nonfinite`` consecutive ones."""
        if all_ranks(torch.isfinite(loss).all()):
            return True
        engine.state.skipped_steps += 1
        self._nonfinite_run += 1
        logging.getLogger(type(self).__module__).warning(
            "non-finite %s loss at iteration %d: step skipped, weights untouched",
            what,
            engine.state.iteration,
        )
        if self._nonfinite_run >= self.max_nonfinite:
            raise RuntimeError(
                f"{self._nonfinite_run} consecutive non-finite losses (last: {what} at iteration "
                f"{engine.state.iteration}): training diverged; lower the learning rate or disable AMP, "
                "then resume from the latest checkpoint"
            )
        return False

    def _guarded_step(
        self,
        engine: GuardedTrainer,
        what: str,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        saved: list[tuple[torch.Tensor, torch.Tensor]] = (),
    ) -> bool:
        """One :meth:`_step` on ``loss`` if it is finite on every rank (:meth:`_finite`);
        otherwise none, and the BatchNorm statistics in ``saved``
        (:func:`~.utils.norm_buffers`) are restored. Whether the step was taken."""
        if self._finite(engine, what, loss):
            self._step(loss, optimizer, scaler)
            return True
        restore_buffers(saved)
        return False

    @staticmethod
    def _step(
        loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
    ) -> None:
        """One optimiser step on ``loss`` (its gradients cleared first), through ``scaler``."""
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skips the step itself if AMP produced inf/NaN gradients
        scaler.update()


class SingleNetworkTrainer(GuardedTrainer):
    """A :class:`GuardedTrainer` of one network with its optimiser, ``GradScaler`` and loss
    weights: what the one-network families (the reconstruction families, AnatPaste) share, so
    that each adds only its own arguments and iteration.

    Args:
        device, max_epochs, train_data_loader: as in :class:`GuardedTrainer`.
        network: the network (optionally DDP-wrapped).
        optimizer: its optimiser (also ``engine.optimizer``).
        loss_weights: a :attr:`weights_type`, a dict of its fields, or None for its defaults.
        scaler: ``torch.amp.GradScaler`` (default: :meth:`~GuardedTrainer.grad_scaler`); pass
            it to save it in checkpoints.
        engine_args: the other arguments of :class:`GuardedTrainer` (``amp``, ``max_nonfinite``,
            ``image_key``, MONAI's).
    """

    def __init__(
        self,
        device,
        max_epochs,
        train_data_loader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_weights: Any = None,
        *,
        scaler: torch.amp.GradScaler | None = None,
        **engine_args: Any,
    ):
        super().__init__(device, max_epochs, train_data_loader, optimizer=optimizer, **engine_args)
        self.network = network
        self.loss_weights = self._loss_weights(loss_weights, self.weights_type)
        self.scaler = self.grad_scaler(scaler)


class AdversarialTrainer(GuardedTrainer):
    """A :class:`GuardedTrainer` of a generator and a discriminator, each with its optimiser
    and ``GradScaler``, and the loss weights: what the adversarial families (SQUID, GANomaly,
    DAAD, f-AnoGAN) share, so that each adds only its own arguments and iteration.

    Args:
        device, max_epochs, train_data_loader: as in :class:`GuardedTrainer`.
        generator, discriminator: the networks (optionally DDP-wrapped; DAAD's discriminator
            may be None).
        g_optimizer, d_optimizer: their optimisers (``g_optimizer`` is ``engine.optimizer``).
        loss_weights: a :attr:`weights_type`, a dict of its fields, or None for its defaults.
        g_scaler, d_scaler: ``torch.amp.GradScaler`` per optimiser (default:
            :meth:`~GuardedTrainer.grad_scaler`); pass them to save them in checkpoints.
        engine_args: ``amp``, ``max_nonfinite``, ``image_key`` and MONAI's engine arguments,
            see :class:`GuardedTrainer`.
    """

    def __init__(
        self,
        device,
        max_epochs,
        train_data_loader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module | None,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer | None,
        loss_weights: Any = None,
        *,
        g_scaler: torch.amp.GradScaler | None = None,
        d_scaler: torch.amp.GradScaler | None = None,
        **engine_args: Any,
    ):
        super().__init__(
            device, max_epochs, train_data_loader, optimizer=g_optimizer, **engine_args
        )
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.loss_weights = self._loss_weights(loss_weights, self.weights_type)
        self.g_scaler, self.d_scaler = self.grad_scaler(g_scaler), self.grad_scaler(d_scaler)
