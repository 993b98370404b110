"""MLflow as a team runs it: complete pip requirements of the logged model, the promotion
gate of the champion alias, and the dataset lineage of a run (SQLite store)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from squid_monai.data.lineage import run_datasets  # noqa: E402
from squid_monai.handlers.mlflow import ResilientMLFlowHandler, tracking_uri  # noqa: E402
from squid_monai.mlflow_model import register_model, save_pyfunc  # noqa: E402
from squid_monai.workflow import DatalistSource, DigitAnatomySource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

#: run in a fresh process: load the MLflow model, score a PNG, import every family (a served
#: model may be any of them), then list the third-party distributions that the loaded
#: squid_monai modules import at module level (imports inside functions are optional runtimes)
_PROBE = r"""
import ast, base64, io, json, sys
from importlib.metadata import packages_distributions
import mlflow, numpy as np, pandas as pd
from PIL import Image
model = mlflow.pyfunc.load_model(sys.argv[1])
buffer = io.BytesIO()
Image.fromarray(np.arange(1600, dtype=np.uint8).reshape(40, 40)).save(buffer, format="PNG")
out = model.predict(pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()]}))
assert out["error"].isna().all(), out
from squid_monai.methods import family_names, get_family
for name in family_names():
    get_family(name)
owners, found = packages_distributions(), {}
for name, module in list(sys.modules.items()):
    if name.split(".")[0] != "squid_monai" or not getattr(module, "__file__", None):
        continue
    for node in ast.parse(open(module.__file__).read()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for top in {n.split(".")[0] for n in names} - {"squid_monai"}:
            if top in owners:  # not the standard library
                found[top] = sorted(owners[top])
print(json.dumps(found))
"""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pip_requirements_cover_every_module_level_import(model_dir, tmp_path):
    saved = save_pyfunc(tmp_path / "pyfunc", model_dir)
    required = {
        _normalise(re.split(r"[=<>!~ ]", line, maxsplit=1)[0])
        for line in (saved / "requirements.txt").read_text().splitlines()
        if line.strip()
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # top-level module -> the distributions providing it (mlflow: mlflow, mlflow-skinny, ...)
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert imported.get("ignite") == ["pytorch-ignite"]  # rebuilding a scorer imports the engines
    missing = {
        top: owners
        for top, owners in imported.items()
        if not {_normalise(o) for o in owners} & required
    }
    assert not missing, f"imported by the model's code, missing from its requirements: {missing}"
    assert not list(saved.rglob("__pycache__"))  # the shipped code is source only


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(ResilientMLFlowHandler, "_failed", {})
    return tracking_uri(tmp_path)


def test_champion_alias_moves_only_through_the_gate(store, model_dir, monkeypatch):
    first = register_model(model_dir, store, metric=("val_auc", 0.8))
    worse = register_model(model_dir, store, metric=("val_auc", 0.7))
    unmeasured = register_model(model_dir, store)
    tie = register_model(model_dir, store, metric=("val_auc", 0.8))

    assert first.aliases == ["champion"] and "first champion" in first.tags["promotion_reason"]
    assert worse.aliases == ["challenger"] and worse.tags["promotion"] == "challenger"
    client = mlflow.MlflowClient(store)
    reason = client.get_run(worse.run_id).data.tags["promotion_reason"]  # the run says why
    assert reason == "val_auc 0.7 < 0.8 of champion version 1; champion version 1 stays"
    assert (
        unmeasured.tags["promotion"] == "challenger"
        and "no validation metric" in unmeasured.tags["promotion_reason"]
    )
    assert tie.aliases == ["champion"] and tie.tags["promotion_reason"].startswith(
        "val_auc 0.8 >= 0.8"
    )
    assert client.get_model_version_by_alias("squid", "champion").version == tie.version
    assert client.get_model_version_by_alias("squid", "challenger").version == unmeasured.version

    # a logged model (mlflow.pyfunc.log_model), its validation metric attached to it and its run
    logged = client.get_logged_model(worse.source.removeprefix("models:/"))
    assert {m.key: m.value for m in logged.metrics} == {"val_auc": pytest.approx(0.7)}
    assert client.get_run(worse.run_id).data.metrics == {"val_auc": pytest.approx(0.7)}
    assert (
        worse.tags["validation_metric"] == "val_auc"
        and float(worse.tags["validation_metric_value"]) == 0.7
    )
    # MLflow's global URIs are put back: nothing points at this store afterwards
    assert mlflow.get_tracking_uri() != store


def _start(handler: ResilientMLFlowHandler):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: {"loss": 1.0})
    handler.attach(engine)
    engine.run(range(1), max_epochs=1)
    return mlflow.MlflowClient(handler.tracking_uri).get_run(handler.cur_run.info.run_id)


def test_run_logs_its_datalist_splits_as_datasets(store, tmp_path):
    items = {
        split: [{"image": str(tmp_path / f"{split}_{i}.png"), "label": i % 2} for i in range(n)]
        for split, n in (("training", 6), ("validation", 4), ("report", 0), ("test", 2))
    }
    data = DatalistSource(items, origin=str(tmp_path / "datalist.json"))
    handler = ResilientMLFlowHandler(
        store,
        output_transform=lambda out: out,
        experiment_name="squid",
        datasets=run_datasets(data),
    )
    run = _start(handler)

    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {
        "datalist.json:training",
        "datalist.json:validation",
        "datalist.json:test",
    }
    training = inputs["datalist.json:training"]
    tags = {t.key: t.value for t in training.tags}
    assert tags == {"mlflow.data.context": "training", "size": "6"}
    assert json.loads(training.dataset.source) == {"uri": str(tmp_path / "datalist.json")}
    assert json.loads(training.dataset.profile)["num_rows"] == 6
    # the digest follows the items: one image changed, another digest
    changed = copy.deepcopy(items)
    changed["training"][0]["label"] = 1
    assert (
        run_datasets(DatalistSource(changed, origin="x"))["training"][0].digest
        != training.dataset.digest
    )
    # resumed into the same run: the datasets are not listed twice
    again = ResilientMLFlowHandler(store, experiment_name="squid", datasets=run_datasets(data))
    again.cur_run = handler.cur_run
    again._log_datasets()
    assert len(mlflow.MlflowClient(store).get_run(run.info.run_id).inputs.dataset_inputs) == 3


def test_generated_digitanatomy_run_names_its_generator_and_sizes(store):
    handler = ResilientMLFlowHandler(
        store,
        output_transform=lambda out: out,
        experiment_name="squid",
        datasets=run_datasets(DigitAnatomySource(seed=3), training_size=64, val_per_class=10),
    )
    inputs = {i.dataset.name: i for i in _start(handler).inputs.dataset_inputs}
    assert set(inputs) == {"digitanatomy:training", "digitanatomy:validation"}
    validation = inputs["digitanatomy:validation"]
    assert {t.key: t.value for t in validation.tags}["size"] == "20"
    assert json.loads(validation.dataset.source)["tags"]["seed"] == "3"
    other_seed = run_datasets(DigitAnatomySource(seed=4), 64, 10)["validation"][0]
    assert other_seed.digest != validation.dataset.digest
