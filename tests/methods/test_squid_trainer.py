import math

import pytest
import torch
from monai.engines.utils import IterationEvents

from squid_monai.methods.squid.presets import build
from squid_monai.methods.squid.trainer import LOSS_KEYS, SQUIDTrainer


def _trainer(n_critic=1, batches=4, lr=1e-4, **kw):
    gen, disc = build("tiny")
    data = [{"image": torch.rand(4, 1, 32, 32)} for _ in range(batches)]
    g_opt = torch.optim.Adam(gen.parameters(), lr)
    d_opt = torch.optim.Adam(disc.parameters(), lr)
    return SQUIDTrainer("cpu", 1, data, gen, disc, g_opt, d_opt, n_critic=n_critic, **kw)


def test_events_fire_in_order_and_output_holds_every_loss_term():
    trainer = _trainer(batches=1)
    fired = []
    for event in (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    assert fired == [
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ]
    out = trainer.state.output
    assert set(LOSS_KEYS) <= set(out) and all(math.isfinite(out[k]) for k in LOSS_KEYS)
    assert out["loss"] == pytest.approx(out["loss_generator"] + out["loss_discriminator"])


def test_generator_every_n_critic_iterations_discriminator_every_one():
    trainer = _trainer(n_critic=2, batches=4)
    g_before = [p.detach().clone() for p in trainer.generator.parameters()]
    d_steps, g_updates, queue_sizes = [], [], []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED,
        lambda e: (
            g_updates.append(e.state.output["generator_updated"]),
            queue_sizes.append(e.generator.inpainting.memory.size.item()),
            d_steps.append(
                e.d_optimizer.state[next(iter(e.discriminator.parameters()))]["step"].item()
            ),
        ),
    )
    trainer.run()
    assert g_updates == [False, True, False, True]
    assert d_steps == [1, 2, 3, 4]
    assert queue_sizes == [0, 4, 4, 8]  # the queue is written after each generator step only
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.generator.parameters()))


def test_non_finite_loss_is_skipped_and_weights_untouched():
    trainer = _trainer(batches=2)
    trainer.data_loader = [{"image": torch.full((4, 1, 32, 32), float("nan"))}] * 2
    g_before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    trainer.run()
    assert trainer.state.skipped_steps == 4  # D and G, two iterations
    # weights and normalisation statistics (what eval-mode scoring uses) are untouched
    for before, net in ((g_before, trainer.generator), (d_before, trainer.discriminator)):
        changed = [k for k, v in net.state_dict().items() if not torch.equal(before[k], v)]
        assert not changed, changed[:5]
    assert trainer.generator.inpainting.memory.size.item() == 0  # NaN tokens never enter the queue


def test_diverging_run_stops_with_a_clear_error():
    trainer = _trainer(batches=3, max_nonfinite=2)
    trainer.data_loader = [{"image": torch.full((4, 1, 32, 32), float("inf"))}] * 3
    with pytest.raises(RuntimeError, match="consecutive non-finite losses"):
        trainer.run()
