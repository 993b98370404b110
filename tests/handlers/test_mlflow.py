"""MLflow: resilient tracking, validation figures as artifacts, registry round trip."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

mlflow = pytest.importorskip("mlflow")

from squid_monai.handlers.mlflow import (  # noqa: E402
    RegisterModel,
    ResilientMLFlowHandler,
    ValidationArtifacts,
    artifact_location,
    tracking_uri,
)
from squid_monai.loading import build_scorer  # noqa: E402
from squid_monai.mlflow_model import load_registered, register_model  # noqa: E402

LOGGER = "squid_monai.handlers"  # tracking, figures and registry log under it
SIZE = 32  # image size of the "tiny" preset


@pytest.fixture(scope="module")
def _empty_store(tmp_path_factory) -> Path:
    """An initialised MLflow SQLite database, made once: creating the tables takes seconds."""
    db = tmp_path_factory.mktemp("template") / "mlruns.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, _empty_store, monkeypatch) -> str:
    """A fresh store in ``tmp_path`` (a copy of the template); no tracking URI in the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(ResilientMLFlowHandler, "_failed", {})
    shutil.copy(_empty_store, tmp_path / "mlruns.db")
    return tracking_uri(tmp_path)


def _loss_engine() -> Engine:
    """A stand-in trainer: loss terms per iteration, a validation metric per epoch."""

    def step(engine, batch):
        return {"loss": 1.0 / engine.state.iteration, "loss_generator": 0.5}

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_auc"] = 0.5 + 0.1 * engine.state.epoch

    return engine


def _run(engine: Engine, epochs: int = 2, length: int = 3) -> Engine:
    engine.run(range(length), max_epochs=epochs)
    return engine


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(LOGGER) and r.levelno == logging.WARNING
    ]


def test_tracking_uri_defaults_to_sqlite_under_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path / "out")
    assert uri == f"sqlite:///{(tmp_path / 'out').resolve()}/mlruns.db"
    assert artifact_location(uri) == (tmp_path / "out" / "mlartifacts").resolve().as_uri()
    assert artifact_location("http://tracking:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri(tmp_path / "out") == "http://tracking:5000"


def test_metrics_params_and_artifact_folder_in_sqlite_store(store, tmp_path, monkeypatch):
    # an explicit URI (e.g. --tracking_uri) wins over the environment variable
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere' / 'other.db'}")
    handler = ResilientMLFlowHandler(
        store, output_transform=lambda out: out, experiment_name="squid", close_on_complete=True
    )
    engine = _loss_engine()
    handler.attach(engine)
    _run(engine)
    assert not handler.disabled

    client = mlflow.MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("squid").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == pytest.approx(
        [1.0 / i for i in range(1, 7)]
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [1, 2]
    assert run.data.params["max_epochs"] == "2"
    # artifacts go beside the database, never into the current directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    assert not (tmp_path / "elsewhere" / "other.db").exists()


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:9", "file:///nonexistent/mlruns"],
    ids=["unreachable-server", "file-store-uri"],
)
def test_tracking_failure_is_one_warning_and_training_goes_on(uri, store, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    engine = _loss_engine()
    handler = ResilientMLFlowHandler(uri, output_transform=lambda out: out, close_on_complete=True)
    handler.attach(engine)
    # a second handler of the same URI (the validation one) must not warn again
    late = ResilientMLFlowHandler(uri)
    late.attach(engine)
    _run(engine)

    assert engine.state.iteration == 6 and engine.state.epoch == 2
    assert handler.disabled and late.disabled and handler.run_id is None
    messages = _warnings(caplog)
    assert len(messages) == 1, messages
    assert uri in messages[0] and "training goes on" in messages[0]


def test_backend_error_mid_run_is_one_warning_and_keeps_what_was_logged(store, monkeypatch, caplog):
    from mlflow.exceptions import MlflowException

    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = ResilientMLFlowHandler(
        store, output_transform=lambda out: out, close_on_complete=True
    )
    engine = _loss_engine()
    handler.attach(engine)
    log_batch = handler.client.log_batch

    def flaky_log_batch(*args, **kwargs):
        if engine.state.iteration >= 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(handler.client, "log_batch", flaky_log_batch)
    _run(engine)

    assert engine.state.iteration == 6 and handler.disabled
    messages = _warnings(caplog)
    assert len(messages) == 1 and "database is locked" in messages[0] and store in messages[0]
    assert handler.run_id is None  # disabled: nothing more goes to the run
    history = mlflow.MlflowClient(store).get_metric_history(handler.cur_run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]


def _scoring_loader(n_batches: int = 2, batch: int = 4):
    gen = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.rand(batch, 1, SIZE, SIZE, generator=gen),
            "label": torch.tensor([0, 1] * (batch // 2)),
        }
        for _ in range(n_batches)
    ]


def test_validation_artifacts_per_trainer_epoch_logged_to_run(store, tmp_path):
    from monai.handlers import ValidationHandler

    from squid_monai.engines import AnomalyEvaluator

    handler = ResilientMLFlowHandler(store, iteration_log=False, experiment_name="squid")
    evaluator = AnomalyEvaluator(
        "cpu", _scoring_loader(), build_scorer("tiny"), running_stats=False
    )
    ValidationArtifacts(handler, tmp_path / "eval", max_images=6).attach(evaluator)
    handler.attach(evaluator)
    trainer = Engine(lambda engine, batch: None)
    ValidationHandler(interval=1, validator=evaluator).attach(trainer)
    trainer.run(range(1), max_epochs=2)

    for epoch in (1, 2):  # the evaluator's epoch is the trainer's
        assert (tmp_path / "eval" / f"epoch_{epoch}" / "roc.png").stat().st_size > 0
        assert (tmp_path / "eval" / f"epoch_{epoch}" / "reconstructions.png").stat().st_size > 0
    client = mlflow.MlflowClient(store)
    logged = {
        Path(a.path).name for a in client.list_artifacts(handler.run_id, "validation/epoch_2")
    }
    assert logged == {"roc.png", "reconstructions.png"}


def test_validation_artifacts_without_tracking_or_second_class(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    engine = Engine(
        lambda e, b: {
            "score": torch.rand(4),
            "label": torch.zeros(4),
            "image": torch.rand(4, 1, 8, 8),
            "reconstruction": torch.rand(4, 1, 8, 8),
        }
    )
    ValidationArtifacts(None, tmp_path).attach(engine)
    engine.run(range(2), max_epochs=2)
    assert (tmp_path / "epoch_2" / "reconstructions.png").is_file()
    assert not (tmp_path / "epoch_2" / "roc.png").exists()  # one class only: no ROC, no crash
    assert sum("ROC" in m for m in _warnings(caplog)) == 1


def test_registry_round_trip_by_alias(store, model_dir, monkeypatch):
    version = register_model(
        model_dir, store, name="squid", alias="champion", metadata={"val_auc": 0.75}
    )
    assert version.aliases == ["champion"]
    scorer = build_scorer("tiny")
    scorer.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    assert float(version.tags["calibration_mean"]) == pytest.approx(scorer.mean.item(), rel=1e-6)
    assert float(version.tags["threshold"]) == pytest.approx(0.5)
    assert version.tags["val_auc"] == "0.75"

    x = torch.rand(5, 1, SIZE, SIZE)
    expected = scorer(x)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what a consumer does: the plain models:/ URI
    model = mlflow.pyfunc.load_model("models:/squid@champion")
    # preprocessed arrays: the in-process route beside the request signature
    out = model.unwrap_python_model().predict_array(x.numpy())
    np.testing.assert_allclose(out["score"].astype(float), expected["score"].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["logit"].astype(float), expected["logit"].numpy(), atol=1e-6)
    assert out["decision"].tolist() == scorer.decide(expected["score"]).tolist()
    assert out["error"].isna().all()
    # smaller batches: same logits up to float rounding (the untrained net's tiny calibration
    # std magnifies that rounding in the score, so compare logits here)
    small = model.unwrap_python_model().predict_array(x.numpy(), batch_size=2)
    np.testing.assert_allclose(small["logit"].astype(float), expected["logit"].numpy(), atol=1e-5)

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    again = (
        load_registered("squid", "champion", store).unwrap_python_model().predict_array(x.numpy())
    )
    np.testing.assert_allclose(again["score"].astype(float), expected["score"].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        model.unwrap_python_model().predict_array(np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(
        mlflow.exceptions.MlflowException, match="schema"
    ):  # the signature takes file columns
        model.predict(x.numpy())


def test_registered_model_scores_files_and_reports_bad_ones(store, model_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    Image = pytest.importorskip("PIL.Image")
    from squid_monai.transforms import preprocess

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"xray_{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(paths[-1])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    paths.insert(1, corrupt)

    register_model(model_dir, store)
    out = load_registered("squid", "champion", store).predict(
        pd.DataFrame({"path": [str(p) for p in paths]})
    )

    assert out["error"].notna().tolist() == [False, True, False, False]
    assert out["error"][1].startswith("row 1: cannot decode")  # the row and the reason
    assert out["score"][1] is None and out["decision"][1] is None
    good = [0, 2, 3]
    scorer = build_scorer("tiny")
    scorer.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    expected = scorer(torch.stack([preprocess(paths[i], SIZE) for i in good]))["score"]
    np.testing.assert_allclose(out["score"][good].astype(float), expected.numpy(), atol=1e-6)
    assert set(out["decision"][good]) <= {0, 1}


def test_register_model_handler_logs_into_the_training_run(store, model_dir, tmp_path, caplog):
    handler = ResilientMLFlowHandler(
        store, output_transform=lambda out: out, close_on_complete=True
    )
    engine = _loss_engine()
    handler.attach(engine)
    register = RegisterModel(model_dir, handler, name="squid-test", alias="best", enabled=True)
    register.attach(engine)
    RegisterModel(tmp_path / "missing", handler, name="never", enabled=True).attach(engine)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _run(engine, epochs=1)

    client = mlflow.MlflowClient(store)
    version = client.get_model_version_by_alias("squid-test", "best")
    assert version.run_id == register.version.run_id
    assert client.get_run(version.run_id).data.metrics["loss"] == pytest.approx(
        1 / 3
    )  # the training run
    assert [m for m in _warnings(caplog) if "not registered" in m and "missing" in m]


def test_tracking_switched_off_attaches_nothing_and_registration_opens_its_own_run(
    store, model_dir, tmp_path
):
    handler = ResilientMLFlowHandler(store, enabled=False)
    engine = _loss_engine()
    handler.attach(engine)
    assert not engine.has_event_handler(handler.iteration_completed, Events.ITERATION_COMPLETED)
    register = RegisterModel(model_dir, handler, enabled=True)
    register.attach(engine)
    _run(engine, epochs=1)

    run = mlflow.MlflowClient(store).get_run(register.version.run_id)
    assert (
        run.data.metrics == {} and run.info.status == "FINISHED"
    )  # a registration run, not a training run
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())


def test_register_model_disabled_is_a_no_op(store, model_dir):
    engine = _loss_engine()
    RegisterModel(model_dir, store, enabled=False).attach(engine)
    _run(engine, epochs=1)
    assert mlflow.MlflowClient(store).search_registered_models() == []


def test_pyfunc_model_preprocesses_with_the_trained_intensity_rule(model_dir, tmp_path):
    import pandas as pd
    from PIL import Image

    from squid_monai.artifact import save_preprocessing
    from squid_monai.mlflow_model import save_pyfunc
    from squid_monai.transforms import preprocess

    folder = tmp_path / "raw_model"
    shutil.copytree(model_dir, folder)
    save_preprocessing(folder, intensity="raw")
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(40, 90, (48, 40), dtype=np.uint8)).save(image)
    model = mlflow.pyfunc.load_model(str(save_pyfunc(tmp_path / "pyfunc", folder)))
    out = model.predict(pd.DataFrame({"path": [str(image)]}))
    scorer = build_scorer("tiny")
    scorer.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    expected = scorer(preprocess(image, SIZE, intensity="raw")[None])["score"].item()
    assert out["score"][0] == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(
        scorer(preprocess(image, SIZE)[None])["score"].item(), abs=1e-6
    )
