"""The SQUID MONAI Deploy app end to end: DICOM in, SR + PNG + JSON out, bad inputs reported."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

pytest.importorskip(
    "monai.deploy.operators",
    reason="MONAI Deploy App SDK not installed (pip install -e '.[deploy]')",
)

from pipelines.cases import ExitCode  # noqa: E402
from pipelines.exported_model import load_exported_model  # noqa: E402
from pipelines.squid_app import ChestXRayApp, main  # noqa: E402
from squid_monai.transforms import preprocess  # noqa: E402
from tests.pipelines.factories import STANDIN_SIZE, chest_pixels, save_standin, write_dicom  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REAL_DICOM = REPO / ".." / "shared" / "data" / "dicom"
PATIENT_IDENTIFIERS = ("TEST^PATIENT", "SECRET-ID-123")
BITS = 12


def _run(inputs: Path, output: Path, model_path: Path):
    app = ChestXRayApp(inputs, output, load_exported_model(model_path, device="cpu"))
    app.run()
    return app


def _cases(app) -> dict:
    return {case["case_id"]: case for case in app.summary["cases"]}


def _expected_score(model_path: Path, file: Path) -> float:
    """The bundle's path on the same file: its preprocessing, then the same exported scorer."""
    model = load_exported_model(model_path, device="cpu", warm_up=False)
    return float(model(preprocess(file, model.card.image_size)[None])["score"][0])


def _model_input(output: Path, case: dict) -> np.ndarray:
    """The model input the app used, as saved in input.png, in [0, 1] (8-bit quantised)."""
    return np.asarray(Image.open(output / case["outputs"]["input"]), dtype=np.float32) / 255.0


def _assert_bundle_preprocessing(output: Path, case: dict, expected: torch.Tensor) -> None:
    """The app's pixels are the bundle's ``preprocess`` output (up to the PNG's 8-bit rounding)."""
    assert np.abs(_model_input(output, case) - expected[0].numpy()).max() <= 0.5 / 255 + 1e-6, case[
        "case_id"
    ]


@pytest.fixture
def synthetic_inputs(tmp_path) -> Path:
    """One folder, one study per situation the app must handle (study UID = what it holds)."""
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = chest_pixels(bits=BITS)
    mono1 = (2**BITS - 1) - pixels  # same picture, stored the MONOCHROME1 way
    write_dicom(
        folder / "cr_mono1.dcm",
        mono1,
        photometric="MONOCHROME1",
        bits=BITS,
        study_uid="1.2.826.1.1",
        slope=2.0,
        intercept=-100.0,
    )
    write_dicom(
        folder / "cr_mono2.dcm",
        pixels,
        bits=BITS,
        study_uid="1.2.826.1.2",
        slope=2.0,
        intercept=-100.0,
    )
    write_dicom(
        folder / "ct.dcm", pixels, modality="CT", view_position=None, study_uid="1.2.826.1.3"
    )
    write_dicom(folder / "multiframe.dcm", np.stack([pixels, pixels]), study_uid="1.2.826.1.4")
    cut = write_dicom(folder / "cut_pixels.dcm", pixels, study_uid="1.2.826.1.5")
    cut.write_bytes(cut.read_bytes()[:-1000])  # truncated inside the pixel data
    (folder / "garbage.dcm").write_bytes(b"\x00garbage" * 50)
    return folder


def test_app_scores_reports_and_skips(synthetic_inputs, tmp_path, standin_model):
    output = tmp_path / "out"
    app = _run(synthetic_inputs, output, standin_model)
    assert app.exit_code is ExitCode.PARTIAL
    cases = _cases(app)
    status = {case_id: case["status"] for case_id, case in cases.items()}
    assert status == {
        "1.2.826.1.1": "scored",
        "1.2.826.1.2": "scored",
        "1.2.826.1.3": "no_suitable_series",
        "1.2.826.1.4": "multi_frame",
        "cut_pixels.dcm": "unreadable",  # truncated: found when loaded, never offered for selection
        "garbage.dcm": "unreadable",
    }
    assert "CT" in cases["1.2.826.1.3"]["message"]
    assert cases["cut_pixels.dcm"]["message"].startswith("truncated pixel data")
    assert cases["cut_pixels.dcm"]["source"]["StudyInstanceUID"] == "1.2.826.1.5"
    # MONOCHROME1 with slope/intercept gives the picture of its MONOCHROME2 twin, hence its score
    mono1, mono2 = cases["1.2.826.1.1"], cases["1.2.826.1.2"]
    assert np.array_equal(_model_input(output, mono1), _model_input(output, mono2))
    assert _model_input(output, mono1).std() > 0.1  # a picture, not a blank
    assert mono1["score"] == pytest.approx(mono2["score"], abs=1e-5)
    _assert_bundle_preprocessing(
        output, mono1, preprocess(synthetic_inputs / "cr_mono1.dcm", STANDIN_SIZE)
    )
    assert cases["1.2.826.1.1"]["score"] == pytest.approx(
        _expected_score(standin_model, synthetic_inputs / "cr_mono1.dcm"), abs=1e-6
    )
    for study in ("1.2.826.1.1", "1.2.826.1.2"):
        case = cases[study]
        sr = pydicom.dcmread(output / case["outputs"]["sr"])
        assert sr.Modality == "SR" and sr.StudyInstanceUID == study
        text = sr.ContentSequence[0].TextValue
        assert f"{case['score']:.6f}" in text and "threshold: 0.500000" in text
        # a stand-in without a domain guard: said so, never an all-clear
        assert case["domain"] == "domain not recorded" and "Domain check: domain not" in text
        assert sr.ContributingEquipmentSequence[0].ManufacturerModelName == "squid-standin"
        assert sr.ContributingEquipmentSequence[0].SoftwareVersions == "0.0.1"
        assert case["decision"] == ("anomalous" if case["score"] > 0.5 else "normal")
        assert case["model"]["heatmap"] == "score gradient"  # the export is differentiated
        for name in ("input", "reconstruction", "difference", "heatmap"):
            assert Image.open(output / case["outputs"][name]).size == (STANDIN_SIZE, STANDIN_SIZE)
        assert (
            json.loads((output / case["outputs"]["result"]).read_text())["score"] == case["score"]
        )
    assert not list((output / "1.2.826.1.3").glob("*.dcm"))  # nothing scored, no SR
    written = (output / "run_summary.json").read_text() + "".join(
        p.read_text() for p in output.rglob("*.json")
    )
    assert not any(identifier in written for identifier in PATIENT_IDENTIFIERS)


def _content_images(sr) -> dict[str, object]:
    """The SR's IMAGE items, read back with highdicom, by concept meaning."""
    import highdicom as hd

    items = [
        hd.sr.ImageContentItem.from_dataset(item)
        for item in sr.ContentSequence
        if item.ValueType == "IMAGE"
    ]
    return {item.name.meaning: item for item in items}


def test_sr_references_the_heatmap_secondary_capture_in_the_source_study(
    synthetic_inputs, tmp_path, standin_model
):
    import highdicom as hd

    output = tmp_path / "out"
    cases = _cases(_run(synthetic_inputs, output, standin_model))
    for study, file in (("1.2.826.1.1", "cr_mono1.dcm"), ("1.2.826.1.2", "cr_mono2.dcm")):
        case, source = cases[study], pydicom.dcmread(synthetic_inputs / file)
        sr = pydicom.dcmread(output / case["outputs"]["sr"])
        sc = hd.imread(output / case["outputs"]["heatmap_sc"])
        assert Path(case["outputs"]["heatmap_sc"]).parent == Path(case["outputs"]["sr"]).parent
        # the SC: a Secondary Capture in the source study, of the heat map over the input
        assert sc.SOPClassUID == SecondaryCaptureImageStorage
        assert sc.StudyInstanceUID == study == source.StudyInstanceUID
        assert sc.PatientID == source.PatientID
        assert sc.SeriesInstanceUID not in (source.SeriesInstanceUID, sr.SeriesInstanceUID)
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        pixels = sc.get_frame(1).astype(int)
        assert pixels.shape[-1] == 3 and pixels.shape[0] >= 256
        assert np.abs(pixels[..., 0] - pixels[..., 2]).max() > 50  # coloured, not the grey input
        assert "score gradient" in sc.SeriesDescription
        assert "not for diagnostic use" in sc.SeriesDescription
        # the SR: IMAGE items for the scored image and the SC, both listed as evidence
        images = _content_images(sr)
        assert images["Illustration of ROI"].referenced_sop_instance_uid == sc.SOPInstanceUID
        assert images["Illustration of ROI"].referenced_sop_class_uid == sc.SOPClassUID
        assert images["Source image"].referenced_sop_instance_uid == source.SOPInstanceUID
        (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
        assert evidence.StudyInstanceUID == study
        listed = {
            (s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
            for s in evidence.ReferencedSeriesSequence
            for i in s.ReferencedSOPSequence
        }
        assert listed == {
            (source.SeriesInstanceUID, source.SOPInstanceUID),
            (sc.SeriesInstanceUID, sc.SOPInstanceUID),
        }
        assert sc.SOPInstanceUID in sr.ContentSequence[0].TextValue
    assert not list((output / "1.2.826.1.3").glob("*.dcm"))  # nothing scored: no SR, no SC


def test_png_and_jpeg_input_without_dicom_output(tmp_path, standin_model):
    folder = tmp_path / "in"
    folder.mkdir()
    picture = (chest_pixels(bits=8)).astype(np.uint8)
    Image.fromarray(picture).save(folder / "chest.png")
    Image.fromarray(picture).convert("RGB").save(folder / "chest_rgb.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    app = _run(folder, tmp_path / "out", standin_model)
    status = {case_id: case["status"] for case_id, case in _cases(app).items()}
    assert status == {"chest": "scored", "chest_rgb": "scored", "broken": "unreadable"}
    assert app.exit_code is ExitCode.PARTIAL
    assert not list((tmp_path / "out").rglob("*.dcm"))
    expected = _expected_score(standin_model, folder / "chest.png")
    assert _cases(app)["chest"]["score"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_command_line_exit_codes_and_log(tmp_path, standin_model):
    """The documented command on a mixed folder (DICOM + PNG): exit 0, no patient identifier
    logged even at DEBUG level."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom(folder / "cr.dcm", chest_pixels(), study_uid="1.2.826.2.1")
    Image.fromarray(chest_pixels(bits=8).astype(np.uint8)).save(folder / "extra.png")
    output = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.squid_app",
            "-i",
            str(folder),
            "-o",
            str(output),
            "-m",
            str(standin_model),
            "-l",
            "DEBUG",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == ExitCode.OK, log[-3000:]
    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["counts"] == {"scored": 2} and summary["exit_status"] == "OK"
    assert "graph_s" in summary["timing"]
    assert len(list(output.rglob("*.dcm"))) == 2  # the DICOM study's SR and heat-map SC only
    assert not any(identifier in log for identifier in PATIENT_IDENTIFIERS)


@pytest.fixture
def _restore_logging():
    """``main`` configures logging the SDK way; put the test process's configuration back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_usage_errors_exit_2(tmp_path, _restore_logging):
    bad_model = tmp_path / "bad.ts"
    bad_model.write_bytes(b"not torchscript")
    (tmp_path / "in").mkdir()
    args = ["squid_app", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert main(args + ["-m", str(bad_model)]) == ExitCode.USAGE
    assert (
        main(args + ["-m", str(tmp_path / "missing.ts")]) == ExitCode.USAGE
    )  # argparse: no such path


def test_empty_folder_is_nothing_scored(tmp_path, standin_model):
    (tmp_path / "in").mkdir()
    app = _run(tmp_path / "in", tmp_path / "out", standin_model)
    assert app.exit_code is ExitCode.NOTHING_SCORED and app.summary["cases"] == []


@pytest.fixture(scope="module")
def real_dicom() -> Path:
    if not REAL_DICOM.is_dir():
        pytest.skip(
            f"real DICOM folder {REAL_DICOM.resolve()} is absent (it sits beside the repository)"
        )
    return REAL_DICOM


@pytest.fixture(scope="module")
def tiny_squid_model(tmp_path_factory):
    """A real (untrained) tiny SQUIDScorer, eager and exported as TorchScript with its card; its
    domain guard fitted on DigitAnatomy normals (a DigitAnatomy model's guard: the scores do not
    depend on it)."""
    from squid_monai.loading import build_scorer
    from squid_monai.methods.squid.presets import get_config
    from squid_monai.scoring.domain import thumbnails
    from squid_monai.workflow import DigitAnatomySource

    torch.manual_seed(0)
    size = get_config("tiny")["image_size"]
    scorer = build_scorer("tiny")
    scorer.set_calibration(mean=0.0, std=1.0, threshold=0.5)
    digits = DigitAnatomySource().calibration(size, max_images=16, cache=False)
    scorer.fit_domain(thumbnails(torch.stack([torch.as_tensor(d["image"]) for d in digits])))
    traced = torch.jit.trace(scorer, torch.rand(1, 1, size, size), strict=False, check_trace=False)
    card = {
        "image_size": size,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
        "model_name": "squid-tiny",
        "model_version": "test",
    }
    path = tmp_path_factory.mktemp("tiny") / "squid_tiny.ts"
    torch.jit.save(traced, str(path), _extra_files={"squid.json": json.dumps(card)})
    return path, scorer, size


@pytest.mark.slow
def test_real_dicoms_sr_per_study_and_bundle_scores(real_dicom, tmp_path, tiny_squid_model):
    """The shared real radiographs: every study scored, an SR each, the bundle's pixels and score
    (eager SQUIDScorer on ``preprocess(file)``)."""
    model_path, scorer, size = tiny_squid_model
    files = sorted(real_dicom.glob("*.dcm"))
    fake_mono1 = [f for f in files if "FAKE_mono1" in f.name]
    assert fake_mono1, "the MONOCHROME1 copy listed in the data README is missing"
    # the SIIM image and its MONOCHROME1 copy share their UIDs (one study): run the copy on its own
    main_in, mono1_in = tmp_path / "in", tmp_path / "in_mono1"
    main_in.mkdir()
    mono1_in.mkdir()
    for f in files:
        (mono1_in if f in fake_mono1 else main_in).joinpath(f.name).symlink_to(f.resolve())
    output = tmp_path / "out"
    app = _run(main_in, output, model_path)
    assert app.exit_code is ExitCode.OK
    cases = app.summary["cases"]
    by_study = {
        str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID): f
        for f in main_in.iterdir()
    }
    assert sorted(case["case_id"] for case in cases) == sorted(by_study)
    for case in cases:
        source = by_study[case["case_id"]]
        sr = pydicom.dcmread(output / case["outputs"]["sr"])
        assert sr.StudyInstanceUID == case["case_id"]
        assert f"{case['score']:.6f}" in sr.ContentSequence[0].TextValue
        # the traced SQUID is differentiated: its heat map, as an SC in the study, is the score's
        sc = pydicom.dcmread(output / case["outputs"]["heatmap_sc"])
        assert case["model"]["heatmap"] == "score gradient"
        assert sc.StudyInstanceUID == case["case_id"]
        illustration = _content_images(sr)["Illustration of ROI"]
        assert illustration.referenced_sop_instance_uid == sc.SOPInstanceUID
        bundle_input = preprocess(source, size)
        _assert_bundle_preprocessing(output, case, bundle_input)
        bundle_score = float(scorer(bundle_input[None])["score"][0])
        assert case["score"] == pytest.approx(bundle_score, abs=1e-5), source.name
        # a DigitAnatomy model on real radiographs: the domain guard says so, first thing
        assert case["domain"].startswith("OUT OF DOMAIN"), case["domain"]
        assert sr.ContentSequence[0].TextValue.startswith("WARNING: this image is outside")
    assert sorted(app.summary["out_of_domain"]) == sorted(by_study)

    (mono1_case,) = _run(mono1_in, tmp_path / "out_mono1", model_path).summary["cases"]
    mono2_case = next(c for c in cases if c["case_id"] == mono1_case["case_id"])
    assert (
        mono1_case["source"]["PhotometricInterpretation"],
        mono2_case["source"]["PhotometricInterpretation"],
    ) == ("MONOCHROME1", "MONOCHROME2")
    # The copy stores the very same pixel values under a MONOCHROME1 header, so the standard's
    # display rule makes it the *inverted* picture (bone dark): the app must show exactly that.
    mono1_input = _model_input(tmp_path / "out_mono1", mono1_case)
    assert np.abs(mono1_input + _model_input(output, mono2_case) - 1.0).max() <= 1.5 / 255
    _assert_bundle_preprocessing(
        tmp_path / "out_mono1", mono1_case, preprocess(fake_mono1[0], size)
    )


def test_the_app_warns_when_a_digitanatomy_model_scores_radiographs(
    synthetic_inputs, tmp_path, tiny_squid_model
):
    """The domain guard in the deploy report: the case, the SR's first line, the run summary."""
    app = _run(synthetic_inputs, tmp_path / "out", tiny_squid_model[0])
    scored = [case for case in app.summary["cases"] if case["status"] == "scored"]
    assert scored and sorted(app.summary["out_of_domain"]) == sorted(c["case_id"] for c in scored)
    for case in scored:
        assert case["domain"].startswith("OUT OF DOMAIN"), case["domain"]
        text = pydicom.dcmread(tmp_path / "out" / case["outputs"]["sr"]).ContentSequence[0]
        assert text.TextValue.startswith("WARNING: this image is outside the model's domain")
        assert "Domain check: OUT OF DOMAIN" in text.TextValue


def test_sidecar_card_drives_the_app(tmp_path):
    """A model whose card is only the sidecar JSON (no extra file) runs the same way."""
    model = save_standin(
        tmp_path / "m.ts",
        embed_card=False,
        sidecar={
            "image_size": 16,
            "mean": -2.0,
            "std": 0.5,
            "threshold": 0.99,
            "model_name": "sidecar-model",
            "model_version": "7",
        },
    )
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom(folder / "cr.dcm", chest_pixels(), study_uid="1.2.826.3.1")
    app = _run(folder, tmp_path / "out", model)
    (case,) = app.summary["cases"]
    assert case["model"]["model_name"] == "sidecar-model" and case["threshold"] == 0.99
    assert Image.open(tmp_path / "out" / case["outputs"]["input"]).size == (16, 16)
