"""Checkpoint handlers: atomic, and a resumed run never replaces the best model with a worse one."""

import torch
from ignite.engine import Engine

from squid_monai.handlers import AtomicCheckpointSaver


def _engine(epoch, auc, best_epoch):
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.iteration = epoch, epoch
    engine.state.metrics = {"val_auc": auc}
    engine.state.key_metric_name = "val_auc"
    engine.state.best_metric, engine.state.best_metric_epoch = auc, best_epoch
    return engine


def test_resumed_run_keeps_the_best_model_until_a_better_one(tmp_path):
    net = torch.nn.Linear(2, 1)
    # a fresh saver, as after a resume: the best (0.9 at epoch 1) is restored in the engine state only
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    torch.save(
        {"weight": torch.zeros(1, 2), "bias": torch.zeros(1)}, tmp_path / "model.pt"
    )  # the best so far
    net.weight.data.fill_(1.0)
    saver.metrics_completed(_engine(epoch=3, auc=0.6, best_epoch=1))  # worse: not saved
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0).all()
    saver.metrics_completed(_engine(epoch=4, auc=0.95, best_epoch=4))  # new best: saved
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(1).all()
    assert not list(tmp_path.glob("tmp*"))  # atomic writes leave no temporary file behind
