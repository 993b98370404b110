"""A shared MLflow tracking server backed by PostgreSQL, end to end on 127.0.0.1: a toy
training tracked with ``MLFLOW_TRACKING_URI=http://...``, its model registered through the
promotion gate, loaded by alias and scored. :mod:`tests.tracking_server` starts and stops
PostgreSQL and ``mlflow server``; the gate's comparisons are tested on SQLite
(test_mlflow_registry.py)."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

mlflow = pytest.importorskip("mlflow")

from squid_monai.handlers.mlflow import RegisterModel, ResilientMLFlowHandler  # noqa: E402
from squid_monai.loading import build_scorer, load_scorer, save_network_config  # noqa: E402
from squid_monai.scoring import calibrate  # noqa: E402
from squid_monai.transforms import preprocess  # noqa: E402
from tests.tracking_server import (  # noqa: E402
    missing_requirements,
    mlflow_server,
    postgres_cluster,
)

SIZE = 32  # the tiny preset
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if (why := missing_requirements()) is not None:
        pytest.skip(why)
    with (
        postgres_cluster() as backend,
        mlflow_server(backend, tmp_path_factory.mktemp("server") / "artifacts", timeout=180) as url,
    ):
        yield url


def _images(n: int, seed: int, smooth: bool) -> torch.Tensor:
    x = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2) if smooth else x


def _train(folder, metric: float, tracking: ResilientMLFlowHandler) -> RegisterModel:
    """A few discriminator steps of the tiny SQUID (smooth images real, noise fake), then
    calibration and the bundle's model files; ``metric`` plays the validation metric."""
    scorer = build_scorer("tiny")
    net = scorer.discriminator.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(engine, batch):
        real, fake = (
            _images(4, engine.state.iteration, True),
            _images(4, -engine.state.iteration, False),
        )
        logits = net(torch.cat([real, fake])).reshape(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.tensor([1.0] * 4 + [0.0] * 4)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return {"loss": loss.item()}

    trainer = Engine(step)
    evaluator = Engine(lambda e, b: None)  # the validation metric the gate compares
    (
        evaluator.state.key_metric_name,
        evaluator.state.best_metric,
        evaluator.state.best_metric_epoch,
    ) = ("val_auc", metric, 1)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _save(engine):
        calibrate(scorer, [_images(8, 100, True)])
        torch.save(scorer.state_dict(), folder / "model.pt")
        save_network_config(folder / "network.json", "tiny")

    tracking.attach(trainer)
    register = RegisterModel(folder, tracking, name="xray", evaluator=evaluator)
    register.attach(trainer)
    trainer.run(range(3), max_epochs=1)
    return register


def test_shared_postgres_server_tracks_registers_gates_and_serves(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setattr(ResilientMLFlowHandler, "_failed", {})
    first = tmp_path / "first"
    first.mkdir()
    handler = ResilientMLFlowHandler(
        output_transform=lambda out: out, experiment_name="xray", close_on_complete=True
    )
    assert handler.tracking_uri == server  # from the variable, as a team member sets it
    champion = _train(first, 0.8, handler).version
    assert champion is not None, "registration failed: see the warnings"

    client = mlflow.MlflowClient(server)
    run = client.get_run(champion.run_id)
    assert (
        len(client.get_metric_history(run.info.run_id, "loss")) == 3
    )  # tracked through the server
    assert client.get_model_version_by_alias("xray", "champion").version == champion.version
    assert run.data.tags["promotion"] == "champion"  # the gate's decision, in the training run
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))  # the logged model
    assert {m.key: m.value for m in logged.metrics} == {"val_auc": pytest.approx(0.8)}

    model = mlflow.pyfunc.load_model("models:/xray@champion")
    image = tmp_path / "xray.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(image)
    out = model.predict(
        pd.DataFrame({"image": [base64.b64encode(image.read_bytes()).decode("ascii")]})
    )
    expected = load_scorer(first / "model.pt")(preprocess(image, SIZE)[None])["score"].item()
    assert out["error"].isna().all() and out["score"][0] == pytest.approx(expected, abs=1e-6)
