"""SQUID's five weighted loss terms (SQUID.md section 4).

| term | definition |
|---|---|
| ``teacher``       | MSE(teacher reconstruction, image) |
| ``student``       | MSE(student reconstruction, image) |
| ``distillation``  | sum over decoder levels of MSE(student level, teacher level); by default
                      the teacher side is detached: knowledge flows from teacher to student
                      only (``detach_teacher=False``: the authors' code, where the teacher
                      also learns from this term; SQUID.md section 7, U3) |
| ``adversarial``   | BCE-with-logits(D(student), real) |
| ``discriminator`` | BCE(D(image), real) + BCE(D(student detached), fake) |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SQUIDLossWeights", "generator_losses", "discriminator_loss"]


@dataclass
class SQUIDLossWeights:
    """Loss weights; defaults are the paper's chest X-ray values (student 1 on DigitAnatomy)."""

    teacher: float = 0.01
    student: float = 10.0
    distillation: float = 0.001
    adversarial: float = 0.005
    discriminator: float = 0.005


def generator_losses(
    out: dict,
    image: torch.Tensor,
    fake_logit: torch.Tensor,
    weights: SQUIDLossWeights,
    detach_teacher: bool = True,
) -> dict[str, torch.Tensor]:
    """Unweighted terms plus ``generator``, their weighted sum (what is back-propagated).

    A missing teacher (the "no distillation" ablation) gives zero teacher and
    distillation terms. ``detach_teacher``: the distillation target (the teacher's level
    outputs) is detached, so the term trains the student only (default); ``False`` lets
    its gradient reach the teacher as well, as in the authors' code.
    """
    zero = image.new_zeros(())
    terms = {"student": F.mse_loss(out["student"].float(), image.float())}
    if "teacher" in out:
        terms["teacher"] = F.mse_loss(out["teacher"].float(), image.float())
        terms["distillation"] = sum(
            (
                F.mse_loss(s.float(), (t.detach() if detach_teacher else t).float())
                for s, t in zip(out["student_features"], out["teacher_features"])
            ),
            zero,
        )
    else:
        terms["teacher"], terms["distillation"] = zero, zero
    terms["adversarial"] = F.binary_cross_entropy_with_logits(
        fake_logit.float(), torch.ones_like(fake_logit, dtype=torch.float)
    )
    terms["generator"] = sum(
        (
            getattr(weights, k) * terms[k]
            for k in ("teacher", "student", "distillation", "adversarial")
        ),
        zero,
    )
    return terms


def discriminator_loss(
    real_logit: torch.Tensor, fake_logit: torch.Tensor, weights: SQUIDLossWeights
) -> torch.Tensor:
    """Weighted discriminator loss on real images and detached student reconstructions."""
    real = F.binary_cross_entropy_with_logits(
        real_logit.float(), torch.ones_like(real_logit, dtype=torch.float)
    )
    fake = F.binary_cross_entropy_with_logits(
        fake_logit.float(), torch.zeros_like(fake_logit, dtype=torch.float)
    )
    return weights.discriminator * (real + fake)
