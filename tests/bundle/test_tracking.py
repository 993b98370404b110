"""MLflow tracking and registry of the user's training command (a real SQLite store)."""

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from squid_monai.handlers.mlflow import tracking_uri
from squid_monai.loading import load_scorer
from squid_monai.mlflow_model import load_registered


def _run(out):
    client = MlflowClient(tracking_uri(out))
    experiment = client.get_experiment_by_name("squid")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if not r.data.tags.get("mlflow.runName", "").startswith("evaluate")
    ]  # evaluate.json logs its own run
    assert len(runs) == 1  # the trainer and its validation evaluator log into one run
    return client, runs[0]


def test_run_is_in_the_sqlite_store_with_params_metrics_and_artifacts(trained_bundle):
    out, _ = trained_bundle
    assert (out / "mlruns.db").is_file()
    client, run = _run(out)
    assert run.data.params["preset"] == "tiny" and run.data.params["epochs"] == "2"
    # every loss term, per iteration (2 epochs x 2 iterations)
    for key in (
        "loss",
        "loss_teacher",
        "loss_student",
        "loss_distillation",
        "loss_adversarial",
        "loss_discriminator",
    ):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    # validation metrics, per epoch
    auc = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in auc] == [1, 2] and all(0 <= m.value <= 1 for m in auc)
    assert client.get_metric_history(run.info.run_id, "val_auc_running_stats")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "validation/epoch_2")}
    assert {"validation/epoch_2/roc.png", "validation/epoch_2/reconstructions.png"} <= artifacts
    assert (out / "eval" / "validation" / "epoch_2" / "roc.png").is_file()


def test_registered_model_loads_by_alias_and_scores_like_the_bundle(trained_bundle):
    out, _ = trained_bundle
    model = load_registered("squid", "champion", tracking_uri=tracking_uri(out))
    scorer = load_scorer(out / "models" / "model.pt")
    images = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    predicted = model.unwrap_python_model().predict_array(images)
    expected = scorer(torch.from_numpy(images))
    np.testing.assert_allclose(
        predicted["score"].astype(float), expected["score"].numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        predicted["logit"].astype(float), expected["logit"].numpy(), atol=1e-5
    )
    version = MlflowClient(tracking_uri(out)).get_model_version_by_alias("squid", "champion")
    assert float(version.tags["threshold"]) == pytest.approx(scorer.threshold.item(), rel=1e-6)


def test_training_run_records_its_data_and_the_promotion(trained_bundle):
    out, _ = trained_bundle
    client, run = _run(out)
    inputs = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    # DigitAnatomy, generated: the generator is the source; the toy run's split sizes (TINY)
    context = "mlflow.data.context"
    assert inputs == {
        "digitanatomy:training": {context: "training", "size": "32"},
        "digitanatomy:validation": {context: "validation", "size": "40"},
    }
    version = client.get_model_version_by_alias("squid", "champion")
    assert run.data.tags["promotion"] == "champion"
    assert version.tags["validation_metric"] == "val_auc_smoothed"
    assert float(version.tags["validation_metric_value"]) == pytest.approx(
        float(version.tags["validation_best_metric"])
    )
