"""The MLflow model behind MLflow's own scoring server (``mlflow models serve`` runs this
app with uvicorn): image bytes in, strictly valid JSON out, no reads of the server's files,
request limits and decompression bombs refused, no answer quoting the request, and a load and
fault test: parallel requests, bad rows and refused requests at once (issue 39)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

mlflow = pytest.importorskip("mlflow")
requests = pytest.importorskip("requests")
uvicorn = pytest.importorskip("uvicorn")
from PIL import Image  # noqa: E402

from squid_monai.loading import load_scorer  # noqa: E402
from squid_monai.mlflow_model import save_pyfunc  # noqa: E402
from squid_monai.scoring import score_images  # noqa: E402
from squid_monai.transforms import preprocess  # noqa: E402
from tests.pipelines.factories import chest_pixels, write_dicom  # noqa: E402

SIZE = 32  # the tiny preset
LIMITS = {"max_images": 4, "max_request_bytes": 200_000}
CLIENTS, REQUESTS, DEADLINE_S = 6, 4, 120  # the load test's bounds
JSON = {"Content-Type": "application/json"}


def _refuse_constant(name: str):
    raise ValueError(f"not strict JSON: bare {name}")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One small radiograph per format, and a folder the server may read from."""
    folder = tmp_path_factory.mktemp("images")
    pixels = chest_pixels(48, 40)
    grey = (pixels >> 4).astype(np.uint8)
    Image.fromarray(grey).save(folder / "chest.png")
    Image.fromarray(grey).save(folder / "chest.jpg", quality=90)
    write_dicom(folder / "chest.dcm", pixels)
    root = folder / "allowed"
    root.mkdir()
    Image.fromarray(grey[::-1]).save(root / "inside.png")
    (root / "escape.png").symlink_to(folder / "chest.png")  # inside by name, outside once resolved
    return {
        "png": folder / "chest.png",
        "jpeg": folder / "chest.jpg",
        "dicom": folder / "chest.dcm",
        "root": root,
    }


@pytest.fixture(scope="module")
def saved_model(model_dir, tmp_path_factory) -> Path:
    """The model as ``mlflow models serve -m <folder>`` serves it, saved with small limits."""
    return save_pyfunc(tmp_path_factory.mktemp("served") / "model", model_dir, model_config=LIMITS)


@pytest.fixture(scope="module")
def scorer(model_dir):
    return load_scorer(model_dir / "model.pt")


@contextmanager
def _serve(model_path: Path, **model_config) -> Iterator[str]:
    """MLflow's scoring app of the model (``model_config`` added at load, as the
    ``SERVING_MODEL_CONFIG`` variable does) behind uvicorn on 127.0.0.1, in a thread."""
    model = mlflow.pyfunc.load_model(str(model_path), model_config=model_config or None)
    with serve_model(model) as url:
        yield url


@contextmanager
def serve_model(model) -> Iterator[str]:
    """MLflow's scoring app of a loaded pyfunc model behind uvicorn on 127.0.0.1, in a thread
    (what ``mlflow models serve`` runs); yields the invocations URL."""
    from mlflow.pyfunc import scoring_server

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "false"
        )  # init() sets it; undone on leaving
        app = scoring_server.init(model)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the scoring server did not start"
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/invocations"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


@pytest.fixture
def server(saved_model) -> Iterator[str]:
    """The served model, reading no paths (no ``allowed_root``)."""
    with _serve(saved_model) as url:
        yield url


def _post(url: str, rows: list[dict]) -> tuple[int, object]:
    """POST ``rows`` as ``dataframe_records``; the status and the body parsed as strict JSON."""
    response = requests.post(url, json={"dataframe_records": rows}, timeout=60)
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    return response.status_code, json.loads(response.text, parse_constant=_refuse_constant)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _predictions(url: str, rows: list[dict]) -> list[dict]:
    status, body = _post(url, rows)
    assert status == 200, body
    assert len(body["predictions"]) == len(rows)
    return body["predictions"]


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG that claims ``width`` x ``height`` pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def test_signature_declares_the_request_and_response_columns(saved_model):
    metadata = mlflow.models.Model.load(str(saved_model))
    inputs, outputs = metadata.get_input_schema(), metadata.get_output_schema()
    assert inputs.input_names() == ["image", "path"] and set(inputs.input_types()) == {
        mlflow.types.DataType.string
    }
    assert not inputs.required_input_names()  # either column
    assert outputs.input_names() == [
        "score",
        "logit",
        "decision",
        "error",
        "domain",
        "domain_distance",
    ]
    example = json.loads((saved_model / "serving_input_example.json").read_text())
    assert list(example["dataframe_split"]["columns"]) == ["image"]  # a base64 PNG, shown in the UI


def test_base64_png_jpeg_and_dicom_score_as_the_preprocessing_does(server, files, scorer):
    formats = ("png", "jpeg", "dicom")
    out = _predictions(server, [{"image": _b64(files[f].read_bytes())} for f in formats])
    images = torch.stack([preprocess(files[f], SIZE) for f in formats])
    expected = scorer(images)
    records = score_images(scorer, images, pixels=False)  # the domain guard's verdict in-process
    for row, score, logit, decision, record in zip(
        out, expected["score"], expected["logit"], scorer.decide(expected["score"]), records
    ):
        assert row["error"] is None and row["decision"] == int(decision)
        assert row["score"] == pytest.approx(float(score), abs=1e-6)
        assert row["logit"] == pytest.approx(float(logit), abs=1e-5)
        assert row["domain"] == record.domain and record.domain != "domain not recorded"
        assert row["domain_distance"] == pytest.approx(record.domain_distance, abs=1e-6)


def test_bad_files_among_good_ones_are_row_errors_with_null_scores(server, files):
    good = _b64(files["png"].read_bytes())
    rows = [
        {"image": good},
        {"image": _b64(b"\x89PNG\r\n\x1a\n not really a png")},
        {"image": "not base64!"},
        {"image": _b64(b"%PDF-1.4 a document")},
    ]
    out = _predictions(server, rows)
    assert out[0]["error"] is None and isinstance(out[0]["score"], float)
    for n, problem in (
        (1, "cannot decode image"),
        (2, "not valid base64"),
        (3, "not a PNG, JPEG or DICOM"),
    ):
        assert out[n]["error"].startswith(f"row {n}: ") and problem in out[n]["error"], out[n]
        assert out[n]["score"] is None and out[n]["logit"] is None and out[n]["decision"] is None
    status, body = _post(server, [{"image": good, "path": "x.png"}, {"other": "ignored"}])
    assert status == 200
    assert (
        "not both" in body["predictions"][0]["error"] and "empty" in body["predictions"][1]["error"]
    )


def test_paths_are_refused_when_served_without_a_root_alike_for_files_that_exist_or_not(
    server, files
):
    rows = [
        {"path": str(files["png"])},
        {"path": str(files["png"].with_name("missing.png"))},
        {"path": "/etc/passwd"},
    ]
    out = _predictions(server, rows)
    reasons = {row["error"].split(": ", 1)[1] for row in out}
    assert (
        len(reasons) == 1 and "does not read file paths" in reasons.pop()
    )  # nothing tells them apart
    assert all(row["score"] is None for row in out)
    assert not any(str(files["png"].parent) in row["error"] for row in out)


def test_paths_inside_the_allowed_root_are_read_and_nothing_outside(saved_model, files, scorer):
    root = files["root"]
    with _serve(saved_model, allowed_root=str(root)) as url:
        out = _predictions(url, [{"path": "inside.png"}, {"path": str(root / "inside.png")}])
        out += _predictions(
            url,
            [
                {"path": "../chest.png"},
                {"path": "escape.png"},
                {"path": "../missing.png"},
                {"path": "bad\u0000name"},
            ],
        )
        assert _predictions(url, [{"path": "missing.png"}])[0]["error"].startswith(
            "row 0: path not found"
        )
    # logits: the tiny calibration std magnifies the float rounding of a batch of 2 in the score
    expected = scorer(preprocess(root / "inside.png", SIZE)[None])["logit"].item()
    assert [row["logit"] for row in out[:2]] == pytest.approx([expected] * 2, abs=1e-5)
    refused = [
        row["error"] for row in out[2:]
    ]  # outside, a symlink out, outside and missing: the same answer
    assert refused == [
        f"row {n}: path refused: outside the folder this model may read" for n in (0, 1, 2, 3)
    ]
    assert not any(str(root) in row["error"] for row in out[2:])


def test_oversized_requests_are_400_errors_naming_the_limit(server, files):
    good = _b64(files["png"].read_bytes())
    status, body = _post(server, [{"image": good}] * (LIMITS["max_images"] + 1))
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "at most 4 per request (model_config max_images)" in body["message"]
    big = _b64(b"\x89PNG\r\n\x1a\n" + bytes(LIMITS["max_request_bytes"]))
    status, body = _post(server, [{"image": big}])
    assert status == 400 and "model_config max_request_bytes" in body["message"]


def test_decompression_bombs_are_refused_before_decoding(server, files, tmp_path):
    png_bomb = _png_header(50_000, 50_000)
    dicom = write_dicom(tmp_path / "bomb.dcm", chest_pixels(8, 8))
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(dicom)
    ds.Rows = ds.Columns = 50_000  # the header claims 2.5 gigapixels
    ds.save_as(tmp_path / "bomb.dcm")
    deflated = pydicom.dcmread(write_dicom(tmp_path / "deflated.dcm", chest_pixels(16, 16)))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm")
    rows = [
        {"image": _b64(png_bomb)},
        {"image": _b64((tmp_path / "bomb.dcm").read_bytes())},
        {"image": _b64((tmp_path / "deflated.dcm").read_bytes())},
        {"image": _b64(files["jpeg"].read_bytes())},
    ]
    start = time.monotonic()
    out = _predictions(server, rows)
    assert time.monotonic() - start < 20
    assert (
        "refused before decoding" in out[0]["error"]
        and "refused before decoding" in out[1]["error"]
    )
    assert "50000 x 50000" in out[1]["error"] and "deflated DICOM" in out[2]["error"]
    assert out[3]["error"] is None and isinstance(out[3]["score"], float)


def test_a_smaller_pixel_limit_refuses_a_real_image_before_decoding(saved_model, files):
    with _serve(saved_model, max_pixels=100) as url:
        out = _predictions(url, [{"image": _b64(files["jpeg"].read_bytes())}])
    assert out[0]["error"] == (
        "row 0: image of 48 x 40 pixels is larger than the limit of 100 pixels; refused "
        "before decoding (max_pixels sets the limit)"
    )


def test_bad_model_config_fails_when_saved_or_loaded(model_dir, saved_model, tmp_path):
    with pytest.raises(ValueError, match=r"unknown model_config key\(s\) \['max_image'\]"):
        save_pyfunc(tmp_path / "typo", model_dir, model_config={"max_image": 3})
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        save_pyfunc(tmp_path / "zero", model_dir, model_config={"max_images": 0})
    with pytest.raises(ValueError, match="allowed_root .*: not a folder"):
        mlflow.pyfunc.load_model(
            str(saved_model), model_config={"allowed_root": str(tmp_path / "absent")}
        )


def test_shared_real_dicoms_score_the_same_as_bytes_and_as_paths(saved_model, shared_data):
    dicoms = sorted((shared_data / "dicom").glob("*.dcm"))[: LIMITS["max_images"]]
    assert dicoms
    big = max(p.stat().st_size for p in dicoms)
    with _serve(
        saved_model, max_request_bytes=max(LIMITS["max_request_bytes"], 2 * big * len(dicoms))
    ) as url:
        served = _predictions(url, [{"image": _b64(p.read_bytes())} for p in dicoms])
    import pandas as pd

    local = mlflow.pyfunc.load_model(
        str(saved_model), model_config={"max_request_bytes": 2 * big * len(dicoms)}
    )
    in_process = local.predict(pd.DataFrame({"path": [str(p) for p in dicoms]}))
    assert [row["error"] for row in served] == [None] * len(dicoms) and in_process[
        "error"
    ].isna().all()
    np.testing.assert_allclose(
        [row["score"] for row in served], in_process["score"].astype(float), atol=1e-6
    )
    assert (
        os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT") is None
    )  # the serving flag did not leak


def test_no_answer_quotes_the_request(server, files):
    """HTTP 400 answers name the problem without repeating the request (images are patient
    data): MLflow's own parsing errors and the model's refusals alike (issue 39)."""
    secret = "SECRETPATIENTDATA"
    good = _b64(files["png"].read_bytes())
    bodies = [
        '{"dataframe_records": [{"image": "' + secret + '"',  # not JSON
        b'{"x": "\xff\xfe' + secret.encode() + b'"}',  # not UTF-8
        json.dumps({"instances": [secret]}),  # no image column
        json.dumps({"dataframe_records": [{"other": secret}]}),
        json.dumps({"dataframe_records": [{"image": good + secret}] * (LIMITS["max_images"] + 1)}),
        json.dumps({"dataframe_records": [{"image": secret}], "params": {"batch_size": secret}}),
    ]
    for body in bodies:
        response = requests.post(server, data=body, headers=JSON, timeout=60)
        assert response.status_code == 400, response.text[:300]
        message = json.loads(response.text)["message"]
        assert message and secret not in response.text, response.text[:300]
        assert good[:16] not in response.text, response.text[:300]
        assert "stack_trace" not in json.loads(response.text)
    assert "at most 4 per request" in _post(server, [{"image": good}] * 5)[1]["message"]


def test_a_one_pixel_image_and_a_truncated_dicom_are_named_so(server, files, tmp_path):
    dot = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(dot, format="PNG")
    whole = write_dicom(tmp_path / "cut.dcm", chest_pixels(48, 40)).read_bytes()
    out = _predictions(server, [{"image": _b64(dot.getvalue())}, {"image": _b64(whole[:-700])}])
    assert "too small" in out[0]["error"] and "constant" not in out[0]["error"]
    assert "truncated pixel data" in out[1]["error"] and "plugin" not in out[1]["error"]


def test_parallel_requests_with_faults_give_identical_answers_and_leave_the_model_unchanged(
    saved_model, files
):
    """MLflow's scoring server on 127.0.0.1 with parallel requests of good rows and a bad row
    among them, requests over the limits and one that is not JSON, all in flight together;
    bounded in count (:data:`CLIENTS` x :data:`REQUESTS`) and time. Every good answer is
    bit-identical, every fault is answered as such, and the weights and buffers are unchanged."""
    model = mlflow.pyfunc.load_model(str(saved_model))
    scorer = model.unwrap_python_model().scorer
    assert not any(m.training for m in scorer.modules())
    before = {key: value.clone() for key, value in scorer.state_dict().items()}
    good = [{"image": _b64(files[f].read_bytes())} for f in ("png", "dicom", "jpeg")]
    bad = {"image": _b64(b"\x89PNG\r\n\x1a\n not really a png")}
    requests_by_kind = {
        "good": {"dataframe_records": [*good[:1], bad, *good[1:]]},
        "too_many": {"dataframe_records": good[:1] * (LIMITS["max_images"] + 1)},
        "too_big": {"dataframe_records": [{"image": _b64(bytes(LIMITS["max_request_bytes"]))}]},
        "not_json": None,
    }
    kinds = ["good", "too_many", "good", "too_big", "good", "not_json"]
    answers: dict[str, list[tuple[int, str]]] = {kind: [] for kind in requests_by_kind}
    failures: list[BaseException] = []
    with serve_model(model) as url:
        start = threading.Barrier(CLIENTS)

        def client(kind: str) -> None:
            try:
                start.wait(timeout=30)
                for _ in range(REQUESTS):
                    body = requests_by_kind[kind]
                    data = '{"dataframe_records": [' if body is None else json.dumps(body)
                    response = requests.post(url, data=data, headers=JSON, timeout=60)
                    answers[kind].append((response.status_code, response.text))
            except BaseException as err:  # noqa: BLE001 - reported by the assertion below
                failures.append(err)

        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(kind,)) for kind in kinds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=DEADLINE_S)
        assert time.monotonic() - began < DEADLINE_S and not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert len(answers["good"]) == 3 * REQUESTS and len({text for _, text in answers["good"]}) == 1
    status, text = answers["good"][0]
    rows = json.loads(text)["predictions"]
    assert status == 200 and [row["error"] is None for row in rows] == [True, False, True, True]
    assert rows[1]["error"].startswith("row 1: ") and rows[1]["score"] is None
    limits = {"too_many": "max_images", "too_big": "max_request_bytes", "not_json": "not valid"}
    for kind, limit in limits.items():
        assert {status for status, _ in answers[kind]} == {400}, kind
        assert all(limit in json.loads(text)["message"] for _, text in answers[kind]), kind
    after = scorer.state_dict()
    assert [key for key, value in after.items() if not torch.equal(value, before[key])] == []
    # and the same answer as the model gives one request at a time, in-process
    alone = model.predict(pd.DataFrame(requests_by_kind["good"]["dataframe_records"]))
    assert [row["score"] for row in rows] == [None if pd.isna(v) else v for v in alone["score"]]
