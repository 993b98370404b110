import math

import pytest
import torch

from squid_monai.engines.schedules import generator_groups, lr_scheduler

LR, EPOCHS = 1e-4, 8


def _optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=LR)


def _sequence(network, schedule, epochs=EPOCHS):
    optimizer = _optimizer()
    scheduler = lr_scheduler(optimizer, network, schedule, epochs, lr_min_ratio=0.2)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, scheduler


@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_paper_schedule_cosine_to_lr_min_ratio_for_both(network):
    lrs, _ = _sequence(network, "paper")
    expected = [
        0.2 * LR + 0.8 * LR * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(EPOCHS)
    ]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert isinstance(
        lr_scheduler(_optimizer(), network, "paper", EPOCHS),
        torch.optim.lr_scheduler.CosineAnnealingLR,
    )


def test_authors_schedule_generator_long_cosine_discriminator_constant():
    g, _ = _sequence("generator", "authors")
    expected = [LR * (1 + math.cos(math.pi * e / (1.5 * EPOCHS))) / 2 for e in range(EPOCHS)]
    assert g == pytest.approx(expected, rel=1e-9)
    # after the run's last epoch the generator is at a quarter of the initial rate
    optimizer = _optimizer()
    scheduler = lr_scheduler(optimizer, "generator", "authors", EPOCHS)
    for _ in range(EPOCHS):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-5, rel=1e-9)
    d, _ = _sequence("discriminator", "authors")
    assert d == [LR] * EPOCHS


@pytest.mark.parametrize("schedule", ["paper", "authors"])
@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_schedules_resume_from_their_state_dict(schedule, network):
    full, _ = _sequence(network, schedule)
    optimizer = _optimizer()
    scheduler = lr_scheduler(optimizer, network, schedule, EPOCHS)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    resumed_optimizer = _optimizer()
    resumed = lr_scheduler(resumed_optimizer, network, schedule, EPOCHS)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    rest = []
    for _ in range(EPOCHS - 3):
        rest.append(resumed_optimizer.param_groups[0]["lr"])
        resumed_optimizer.step()
        resumed.step()
    assert rest == pytest.approx(full[3:], rel=1e-12)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_scheduler(_optimizer(), "generator", "linear", 4)


def _generator():
    from squid_monai.methods.squid.presets import build

    return build("tiny")[0]


def test_generator_groups_default_is_one_rate():
    generator = _generator()
    params = generator_groups(generator, LR)
    assert [id(p) for p in params] == [id(p) for p in generator.parameters()]


def test_generator_groups_give_both_heads_their_own_rate_and_anneal_to_the_common_floor():
    generator = _generator()
    heads = {
        generator.student.head.weight,
        generator.student.head.bias,
        generator.teacher.head.weight,
        generator.teacher.head.bias,
    }
    optimizer = torch.optim.Adam(generator_groups(generator, LR, head_lr_factor=10), lr=LR)
    scheduler = lr_scheduler(optimizer, "generator", "paper", EPOCHS, lr_min_ratio=0.2)
    rest, head = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in heads} and head[
        "lr"
    ] == pytest.approx(10 * LR)
    assert rest["lr"] == LR and len(rest["params"]) + 4 == len(list(generator.parameters()))
    # one Adam step moves every parameter by about its group's rate (Adam's first step is lr * sign)
    before = {id(p): p.detach().clone() for p in generator.parameters()}
    for p in generator.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    moved = {id(p): (p.detach() - before[id(p)]).abs().max().item() for p in generator.parameters()}
    assert all(moved[id(p)] == pytest.approx(10 * LR, rel=1e-3) for p in heads)
    assert all(moved[id(p)] == pytest.approx(LR, rel=1e-3) for p in rest["params"])
    for _ in range(EPOCHS):
        scheduler.step()
    assert head["lr"] == pytest.approx(0.2 * LR) and rest["lr"] == pytest.approx(0.2 * LR)


@pytest.mark.parametrize("factor", [0, -1])
def test_generator_groups_refuse_a_non_positive_factor(factor):
    with pytest.raises(ValueError, match="head_lr_factor"):
        generator_groups(_generator(), LR, factor)


def test_generator_groups_refuse_a_network_without_a_head():
    with pytest.raises(ValueError, match="no module named 'head'"):
        generator_groups(torch.nn.Linear(2, 2), LR, 10)
