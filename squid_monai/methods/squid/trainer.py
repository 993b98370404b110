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

The guard, the mixed precision and the rank-wide decisions are those every family's
trainer shares: :class:`~squid_monai.engines.base.GuardedTrainer`, through
:class:`~squid_monai.engines.base.AdversarialTrainer` (the two networks, optimisers and scalers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import evenly_divisible_all_gather

from ...engines.base import AdversarialTrainer
from ...engines.utils import average_running_stats, is_distributed, norm_buffers, unwrap
from ...transforms.anatomy import paste_transform
from .erasing import check_erasing, check_fraction, erase_random_rectangles, paste_lesions
from .losses import SQUIDLossWeights, discriminator_loss, generator_losses

__all__ = ["SQUIDTrainer", "LOSS_KEYS"]

#: keys of ``engine.state.output`` that hold loss values (floats)
LOSS_KEYS = (
    "loss",
    "loss_generator",
    "loss_discriminator",
    "loss_teacher",
    "loss_student",
    "loss_distillation",
    "loss_adversarial",
)


class SQUIDTrainer(AdversarialTrainer):
    """Adversarial + knowledge-distillation training of SQUID.

    Args:
        args, kwargs: ``device``, ``max_epochs``, ``train_data_loader`` (dicts with
            ``image_key`` (B, 1, H, W) in [0, 1]), ``generator``, ``discriminator``,
            ``g_optimizer``, ``d_optimizer``, ``loss_weights`` (:class:`SQUIDLossWeights` or a
            dict of its fields), ``g_scaler``, ``d_scaler``, ``amp`` (one ``GradScaler`` per
            optimiser; float16 on CUDA, bfloat16 on the CPU only when asked), ``max_nonfinite``,
            ``image_key`` and MONAI's engine arguments: see
            :class:`~squid_monai.engines.base.AdversarialTrainer`.
        distillation_detach: detach the teacher side of the distillation loss (default:
            the term trains the student only); ``False``: the teacher learns from it too, as
            in the authors' code (SQUID.md section 7, U3).
        n_critic: the generator is updated every ``n_critic``-th iteration (paper: 2 on
            chest X-rays, 1 on DigitAnatomy); the discriminator every iteration.
        input_erasing: share of each batch whose generator input gets a random rectangle
            erased while the loss targets and the discriminator's real images stay clean
            (beyond the paper; 0, the default, is the paper's training;
            :mod:`~squid_monai.methods.squid.erasing`). Only clean images' tokens enter the queues.
        erasing_size: (min, max) side of the erased rectangle, as a fraction of the image side.
        synthetic_anomaly: ``"none"`` (the default, the paper's training), ``"anatpaste"`` or
            ``"cutpaste"``: a share of each batch's generator inputs gets a patch of itself
            pasted into its lung field (or anywhere), while the loss targets and the
            discriminator's real images stay clean, so the generator learns to in-paint
            lesions away (:func:`~squid_monai.methods.squid.erasing.paste_lesions`). Only
            unchanged images' tokens enter the queues.
        synthetic_fraction: that share (default 0.5; at least one image per batch stays clean).
    """

    weights_type = SQUIDLossWeights

    def __init__(
        self,
        *args: Any,
        distillation_detach: bool = True,
        n_critic: int = 1,
        input_erasing: float = 0.0,
        erasing_size: Sequence[float] = (0.125, 0.333),
        synthetic_anomaly: str = "none",
        synthetic_fraction: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.distillation_detach = bool(distillation_detach)
        self.n_critic = n_critic
        self.input_erasing, self.erasing_size = (
            float(input_erasing),
            check_erasing(input_erasing, erasing_size),
        )
        self.synthetic_fraction = check_fraction(synthetic_fraction, "synthetic_fraction")
        self.paste = None if synthetic_anomaly == "none" else paste_transform(synthetic_anomaly)

    def _iteration(self, engine: SQUIDTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        image = self._image(engine, batchdata)
        update_g = engine.state.iteration % self.n_critic == 0
        gen, disc = self.generator, self.discriminator
        gen.train()
        disc.train()
        # norm-layer statistics, restored if a pass turns out non-finite (it wrote them anyway)
        g_norm, d_norm = norm_buffers(gen), norm_buffers(disc)

        inputs, clean = image, None
        if self.input_erasing > 0:
            inputs, clean = erase_random_rectangles(image, self.input_erasing, self.erasing_size)
        if self.paste is not None:
            inputs, unpasted = paste_lesions(inputs, self.synthetic_fraction, self.paste)
            clean = unpasted if clean is None else clean & unpasted
        with self._autocast(), torch.set_grad_enabled(update_g):
            out = gen(inputs)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # discriminator: real images vs the detached student reconstruction
        with self._autocast():
            real_logit = disc(image)
            fake_logit = disc(out["student"].detach())
            d_loss = discriminator_loss(real_logit, fake_logit, self.loss_weights)
        d_ok = self._guarded_step(
            engine, "discriminator", d_loss, self.d_optimizer, self.d_scaler, d_norm
        )
        if d_ok:
            d_norm = norm_buffers(disc)

        if update_g:
            # against the updated discriminator; through the plain module: this gradient is the
            # generator's, DDP must not reduce it into the discriminator
            with self._autocast():
                terms = generator_losses(
                    out,
                    image,
                    unwrap(disc)(out["student"]),
                    self.loss_weights,
                    detach_teacher=self.distillation_detach,
                )
        else:
            # logged only: reuse the discriminator step's logits (no extra pass through its norm layers)
            with torch.no_grad():
                terms = generator_losses(
                    out,
                    image,
                    fake_logit.detach(),
                    self.loss_weights,
                    detach_teacher=self.distillation_detach,
                )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        g_ok = update_g and self._guarded_step(
            engine,
            "generator",
            terms["generator"],
            self.g_optimizer,
            self.g_scaler,
            g_norm + d_norm,
        )
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if d_ok and (g_ok or not update_g):
            self._nonfinite_run = 0
        if g_ok and ("tokens" in out or "decoder_tokens" in out):
            # identical on every rank, and so is the decision; erased or pasted images' tokens stay out
            def normal(t: torch.Tensor) -> torch.Tensor:
                return self._gather(t if clean is None else t[clean])

            tokens = normal(out["tokens"]) if "tokens" in out else None
            decoder = [normal(t) for t in out.get("decoder_tokens", [])]
            if all(torch.isfinite(t).all() for t in [tokens, *decoder] if t is not None):
                unwrap(gen).enqueue(tokens, decoder)
        average_running_stats(gen, disc)

        engine.state.output = {
            "loss": float(terms["generator"].detach()) + float(d_loss.detach()),
            "loss_generator": float(terms["generator"].detach()),
            "loss_discriminator": float(d_loss.detach()),
            **{
                f"loss_{k}": float(terms[k].detach())
                for k in ("teacher", "student", "distillation", "adversarial")
            },
            "generator_updated": g_ok,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    @staticmethod
    def _gather(tokens: torch.Tensor) -> torch.Tensor:
        """The global batch's tokens in rank order (identical on every replica)."""
        if is_distributed():
            return evenly_divisible_all_gather(tokens.contiguous(), concat=True)
        return tokens
