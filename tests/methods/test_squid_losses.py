import pytest
import torch

from squid_monai.methods.squid.losses import SQUIDLossWeights, generator_losses
from squid_monai.methods.squid.presets import build


def _teacher_grad_from_distillation(detach_teacher: bool) -> float:
    torch.manual_seed(0)
    gen, _ = build("tiny")
    gen.train()
    image = torch.rand(2, 1, gen.image_size, gen.image_size)
    out = gen(image)
    # the distillation term alone: every other weight is zero
    weights = SQUIDLossWeights(
        teacher=0.0, student=0.0, distillation=1.0, adversarial=0.0, discriminator=0.0
    )
    terms = generator_losses(out, image, torch.zeros(2, 1), weights, detach_teacher=detach_teacher)
    assert terms["distillation"] > 0
    terms["generator"].backward()
    grads = [p.grad for p in gen.teacher.parameters()]
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_distillation_reaches_the_teacher_only_when_not_detached():
    assert _teacher_grad_from_distillation(detach_teacher=False) > 0
    assert _teacher_grad_from_distillation(detach_teacher=True) == 0


def test_detach_teacher_is_the_default_and_does_not_change_the_loss_values():
    torch.manual_seed(0)
    gen, _ = build("tiny")
    image = torch.rand(2, 1, gen.image_size, gen.image_size)
    out = gen(image)
    default = generator_losses(out, image, torch.zeros(2, 1), SQUIDLossWeights())
    attached = generator_losses(
        out, image, torch.zeros(2, 1), SQUIDLossWeights(), detach_teacher=False
    )
    for key in default:
        assert torch.equal(default[key].detach(), attached[key].detach()), key


@pytest.mark.parametrize("detach", [True, False])
def test_trainer_carries_the_distillation_switch(detach):
    from squid_monai.methods.squid.trainer import SQUIDTrainer

    gen, disc = build("tiny")
    data = [{"image": torch.rand(2, 1, gen.image_size, gen.image_size)}]
    opts = [torch.optim.Adam(m.parameters(), 1e-4) for m in (gen, disc)]
    trainer = SQUIDTrainer("cpu", 1, data, gen, disc, *opts, distillation_detach=detach)
    assert trainer.distillation_detach is detach
    trainer.run()
