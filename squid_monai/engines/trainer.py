"""The SQUID training iteration as a MONAI :class:`~monai.engines.Trainer`.

One iteration (SQUID.md section 4):

1. one generator forward on the batch (with an autograd graph only when the generator
   is updated this iteration);
2. a discriminator step on the real images and the *detached* student reconstruction
   (every iteration);
3. every ``n_critic``-th iteration, a generator step with the weighted sum of the teacher,
   student, distillation and adversarial losses, then the batch's tokens are written into
   the memory queue (all-gathered first under data parallelism, so that every replica
   holds the same queue).

MONAI's iteration events fire in order (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``,
``BACKWARD_COMPLETED``, ``MODEL_COMPLETED``) and ``engine.state.output`` holds ``loss`` and
every loss term as floats, so the standard handlers (``StatsHandler``, ``MLFlowHandler``,
``--tracking mlflow``) work unchanged. A non-finite loss is never back-propagated: the
step is skipped, the normalisation statistics it touched are restored, the step is
counted in ``engine.state.skipped_steps`` and logged; too many in a row
stop the run with a clear error instead of silently training on garbage.

Under ``torch.distributed`` (networks wrapped in ``DistributedDataParallel``) every
decision that gates a collective is taken by all ranks together: a step is skipped on
every rank when its loss is non-finite on any rank, and the queue is written from the
gathered global batch. BatchNorm running statistics, which DDP does not reduce, are
averaged over the ranks after each iteration, so the replicas stay identical.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import evenly_divisible_all_gather

from ..losses import SQUIDLossWeights, discriminator_loss, generator_losses

__all__ = ["SQUIDTrainer", "LOSS_KEYS", "loss_terms", "plain_tensor", "unwrap"]

logger = logging.getLogger(__name__)

#: keys of ``engine.state.output`` that hold loss values (floats)
LOSS_KEYS = ("loss", "loss_generator", "loss_discriminator", "loss_teacher", "loss_student",
             "loss_distillation", "loss_adversarial")


def _norm_buffers(*modules: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of every BatchNorm running statistic: a few KB, cheap to keep."""
    return [(b, b.clone()) for m in modules for layer in m.modules() if isinstance(layer, _BatchNorm)
            for b in (layer.running_mean, layer.running_var, layer.num_batches_tracked) if b is not None]


def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for buffer, value in saved:
        buffer.copy_(value)


def plain_tensor(data) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor would route every network op through its
    ``__torch_function__`` (several times slower on small CPU convolutions)."""
    return data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(module, "module", module)


class SQUIDTrainer(Trainer):
    """Adversarial + knowledge-distillation training of SQUID.

    Args:
        device: device to train on.
        max_epochs: epochs to train.
        train_data_loader: yields dicts with ``image_key`` (B, 1, H, W) in [0, 1].
        generator, discriminator: the networks (optionally DDP-wrapped).
        g_optimizer, d_optimizer: their optimisers.
        loss_weights: :class:`SQUIDLossWeights` or a dict of its fields.
        distillation_detach: detach the teacher side of the distillation loss (default:
            the term trains the student only); ``False``: the teacher learns from it too, as
            in the authors' code (SQUID.md section 7, U3).
        n_critic: the generator is updated every ``n_critic``-th iteration (paper: 2 on
            chest X-rays, 1 on DigitAnatomy); the discriminator every iteration.
        amp: mixed precision; on CUDA float16 with one ``GradScaler`` per optimiser, on
            the CPU bfloat16 autocast (only when asked; fp32 is the CPU default).
        max_nonfinite: consecutive non-finite steps tolerated before the run is stopped.
        g_scaler, d_scaler: ``torch.amp.GradScaler`` per optimiser (default: enabled for
            AMP on CUDA); pass them to save them in checkpoints.
        image_key: key of the image in the batch.
        epoch_length, train_handlers, key_train_metric, additional_metrics, event_names,
        event_to_attr, non_blocking: as in :class:`monai.engines.SupervisedTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        loss_weights: SQUIDLossWeights | dict | None = None,
        distillation_detach: bool = True,
        n_critic: int = 1,
        amp: bool = False,
        max_nonfinite: int = 20,
        g_scaler: torch.amp.GradScaler | None = None,
        d_scaler: torch.amp.GradScaler | None = None,
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
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        # MLFlowHandler / StatsHandler log the learning rate of `engine.optimizer`
        self.optimizer = g_optimizer
        if isinstance(loss_weights, dict):
            loss_weights = SQUIDLossWeights(**loss_weights)
        self.loss_weights = loss_weights or SQUIDLossWeights()
        self.distillation_detach = bool(distillation_detach)
        self.n_critic, self.max_nonfinite, self.image_key = n_critic, max_nonfinite, image_key
        self.amp_device = torch.device(device).type
        self.amp_dtype = torch.float16 if self.amp_device == "cuda" else torch.bfloat16
        use_scaler = amp and self.amp_device == "cuda"
        self.g_scaler = g_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.d_scaler = d_scaler or torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.state.skipped_steps = 0
        self._nonfinite_run = 0

    def run(self) -> None:  # MONAI's Trainer.run builds a deprecated single scaler: not used here
        super(Trainer, self).run()

    def _autocast(self):
        return torch.autocast(device_type=self.amp_device, dtype=self.amp_dtype, enabled=self.amp)

    def _finite(self, engine: SQUIDTrainer, what: str, loss: torch.Tensor) -> bool:
        if _all_ranks(torch.isfinite(loss).all()):
            return True
        engine.state.skipped_steps += 1
        self._nonfinite_run += 1
        logger.warning("non-finite %s loss at iteration %d: step skipped, weights untouched",
                       what, engine.state.iteration)
        if self._nonfinite_run >= self.max_nonfinite:
            raise RuntimeError(
                f"{self._nonfinite_run} consecutive non-finite losses (last: {what} at iteration "
                f"{engine.state.iteration}): training diverged; lower the learning rate or disable AMP, "
                "then resume from the latest checkpoint"
            )
        return False

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skips the step itself if AMP produced inf/NaN gradients
        scaler.update()

    def _iteration(self, engine: SQUIDTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = batchdata[self.image_key] if isinstance(batchdata, dict) else batchdata
        image = plain_tensor(image).to(engine.state.device, non_blocking=engine.non_blocking).float()
        update_g = engine.state.iteration % self.n_critic == 0
        gen, disc = self.generator, self.discriminator
        gen.train()
        disc.train()
        # norm-layer statistics, restored if a pass turns out non-finite (it wrote them anyway)
        g_norm, d_norm = _norm_buffers(gen), _norm_buffers(disc)

        with self._autocast(), torch.set_grad_enabled(update_g):
            out = gen(image)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # discriminator: real images vs the detached student reconstruction
        self.d_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            real_logit = disc(image)
            fake_logit = disc(out["student"].detach())
            d_loss = discriminator_loss(real_logit, fake_logit, self.loss_weights)
        d_ok = self._finite(engine, "discriminator", d_loss)
        if d_ok:
            self._step(d_loss, self.d_optimizer, self.d_scaler)
            d_norm = _norm_buffers(disc)
        else:
            _restore(d_norm)

        if update_g:
            # against the updated discriminator; through the plain module: this gradient is the
            # generator's, DDP must not reduce it into the discriminator
            with self._autocast():
                terms = generator_losses(out, image, unwrap(disc)(out["student"]), self.loss_weights,
                                         detach_teacher=self.distillation_detach)
        else:
            # logged only: reuse the discriminator step's logits (no extra pass through its norm layers)
            with torch.no_grad():
                terms = generator_losses(out, image, fake_logit.detach(), self.loss_weights,
                                         detach_teacher=self.distillation_detach)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = update_g and self._finite(engine, "generator", terms["generator"])
        if g_ok:
            self.g_optimizer.zero_grad(set_to_none=True)
            self._step(terms["generator"], self.g_optimizer, self.g_scaler)
        elif update_g:
            _restore(g_norm + d_norm)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if d_ok and (g_ok or not update_g):
            self._nonfinite_run = 0
        if g_ok and ("tokens" in out or "decoder_tokens" in out):
            # identical on every rank, and so is the decision
            tokens = self._gather(out["tokens"]) if "tokens" in out else None
            decoder = [self._gather(t) for t in out.get("decoder_tokens", [])]
            if all(torch.isfinite(t).all() for t in [tokens, *decoder] if t is not None):
                unwrap(gen).enqueue(tokens, decoder)
        _average_running_stats(gen, disc)

        engine.state.output = {
            "loss": float(terms["generator"].detach()) + float(d_loss.detach()),
            "loss_generator": float(terms["generator"].detach()),
            "loss_discriminator": float(d_loss.detach()),
            **{f"loss_{k}": float(terms[k].detach()) for k in ("teacher", "student", "distillation", "adversarial")},
            "generator_updated": g_ok,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    @staticmethod
    def _gather(tokens: torch.Tensor) -> torch.Tensor:
        """The global batch's tokens in rank order (identical on every replica)."""
        if _distributed():
            return evenly_divisible_all_gather(tokens.contiguous(), concat=True)
        return tokens


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_ranks(flag: torch.Tensor) -> bool:
    """``flag`` (a boolean tensor) is true on every rank: one decision for all replicas,
    so that none waits in a collective (DDP's gradient reduction) that another skips."""
    if not _distributed():
        return bool(flag)
    flag = flag.to(torch.int32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _average_running_stats(*modules: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over the ranks (one all-reduce). DDP reduces
    gradients, not buffers: without this each replica keeps the statistics of its own
    shard and the replicas (and the scores computed with running statistics) drift
    apart. With equal per-rank batches the mean of the running means is the running mean
    of the global batch; the averaged variances leave out the spread between the ranks'
    batch means (what SyncBatchNorm would include)."""
    if not _distributed():
        return
    stats = [buf for module in modules for m in unwrap(module).modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for buf in (m.running_mean, m.running_var) if buf is not None]
    if not stats:
        return
    flat = torch.cat([buf.reshape(-1).float() for buf in stats])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for buf in stats:
        buf.copy_(flat[offset: offset + buf.numel()].view_as(buf))
        offset += buf.numel()


def loss_terms(output: dict) -> dict[str, float]:
    """``output_transform`` for StatsHandler / MLFlowHandler that logs every loss term: the
    float entries whose key starts with ``loss`` (SQUID's are :data:`LOSS_KEYS`; every
    family's trainer follows the same naming)."""
    return {k: v for k, v in output.items() if k.startswith("loss") and isinstance(v, (int, float))}

