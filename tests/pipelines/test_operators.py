"""The SQUID operators as building blocks: series selection rules, loading reports, and a
graph of another shape (the SDK's own loader and selector, a hospital's own sink)."""

import json

import numpy as np
import pytest

pytest.importorskip(
    "monai.deploy.operators",
    reason="MONAI Deploy App SDK not installed (pip install -e '.[deploy]')",
)

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, Fragment, Operator
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from pipelines.cases import Case, CaseStatus, ExitCode, exit_code_for
from pipelines.exported_model import load_exported_model
from pipelines.operators import (
    CheckedDICOMDataLoaderOperator,
    PreprocessOperator,
    RadiographSeriesSelectorOperator,
    ScoringOperator,
    TextSRWriterOperator,
    selection_rules,
)
from pipelines.operators.case_stage import CaseStage
from tests.pipelines.factories import STANDIN_SIZE, chest_pixels, write_dicom


def _select(folder):
    studies = CheckedDICOMDataLoaderOperator(Fragment(), input_folder=folder).load_data_to_studies(
        folder
    )
    selector = RadiographSeriesSelectorOperator(Fragment())
    return studies, selector.filter(json.loads(selection_rules()), studies)


def test_selector_keeps_frontal_chest_radiographs_only(tmp_path):
    pixels = chest_pixels()
    lateral_study = "1.2.3.1"
    write_dicom(tmp_path / "lat.dcm", pixels, view_position="LL", study_uid=lateral_study)
    write_dicom(tmp_path / "pa.dcm", pixels, view_position="PA", study_uid=lateral_study)
    write_dicom(
        tmp_path / "knee.dcm",
        pixels,
        modality="DX",
        body_part="KNEE",
        view_position="AP",
        study_uid="1.2.3.2",
    )
    write_dicom(
        tmp_path / "untagged.dcm",
        pixels,
        modality="DX",
        body_part=None,
        view_position=None,
        study_uid="1.2.3.3",
    )
    write_dicom(tmp_path / "ct.dcm", pixels, modality="CT", view_position=None, study_uid="1.2.3.4")
    write_dicom(tmp_path / "a_cine.dcm", np.stack([pixels] * 2), study_uid="1.2.3.5")
    write_dicom(tmp_path / "b_single.dcm", pixels, study_uid="1.2.3.5")
    studies, selected = _select(tmp_path)
    assert len(studies) == 5
    chosen = {
        str(s.study.StudyInstanceUID): s.selected_series[0]
        .series.get_sop_instances()[0]
        .get_native_sop_instance()
        for s in selected
    }
    assert set(chosen) == {
        lateral_study,
        "1.2.3.3",
        "1.2.3.5",
    }  # knee and CT studies have nothing suitable
    assert (
        chosen[lateral_study].ViewPosition == "PA"
    )  # the lateral series of the same study is passed over
    assert (
        "NumberOfFrames" not in chosen["1.2.3.5"]
    )  # a single-frame image wins over a multi-frame one


def test_loader_reports_unreadable_files_and_keeps_the_rest(tmp_path):
    good = write_dicom(tmp_path / "good.dcm", chest_pixels())
    (tmp_path / "cut.dcm").write_bytes(good.read_bytes()[:300])  # cut inside the header
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "photo.png").write_bytes(b"png files are the image loader's business")
    loader = CheckedDICOMDataLoaderOperator(Fragment(), input_folder=tmp_path)
    studies = loader.load_data_to_studies(tmp_path)
    assert len(studies) == 1
    status = {case.case_id: case.status for case in loader.unreadable}
    assert status == {"cut.dcm": CaseStatus.UNREADABLE, "notes.txt": CaseStatus.IGNORED}
    assert all(case.message for case in loader.unreadable)


def test_exit_codes():
    scored = Case("a", "dicom", status=CaseStatus.SCORED)
    skipped = Case("b", "dicom", status=CaseStatus.NO_SUITABLE_SERIES)
    assert exit_code_for([scored]) is ExitCode.OK
    assert exit_code_for([scored, skipped]) is ExitCode.PARTIAL
    assert exit_code_for([skipped]) is ExitCode.NOTHING_SCORED
    assert exit_code_for([]) is ExitCode.NOTHING_SCORED
    flawed = Case("c", "dicom", status=CaseStatus.SCORED, problems=["SR not written"])
    assert exit_code_for([flawed]) is ExitCode.PARTIAL
    manifest = Case("MANIFEST.csv", "file", status=CaseStatus.IGNORED)
    assert exit_code_for([scored, manifest]) is ExitCode.OK


def test_case_folders_stay_inside_the_output_folder():
    for hostile in ("..", ".", "../../etc/cron.d", "a/b\\c"):
        folder = Case(hostile, "image").folder
        assert "/" not in folder and "\\" not in folder and folder.strip(".")
    assert Case("1.2.840.113619.2", "dicom").folder == "1.2.840.113619.2"


class _HospitalSink(Operator):
    """Stands for a hospital app's own downstream operator (e.g. a worklist notifier)."""

    def __init__(self, fragment, *args, **kwargs):
        self.received = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("cases")

    def compute(self, op_input, op_output, context):
        self.received = op_input.receive("cases")


class _HospitalAudit(CaseStage, Operator):
    """A hospital step of its own in the middle of the stream: logs every scored case."""

    def __init__(self, fragment, *args, **kwargs):
        self.audited = []
        super().__init__(fragment, *args, **kwargs)

    def wants(self, case):
        return case.status is CaseStatus.SCORED

    def handle(self, case):
        self.audited.append((case.case_id, case.score))


class _HospitalApp(Application):
    """The SDK's plain loader and selector (the hospital's own rules), SQUID in the middle,
    the SR writer feeding the hospital's own operator: a different graph from ours."""

    def __init__(self, folder, output, model):
        self.folder, self.output, self.model = folder, output, model
        super().__init__(["python", "hospital_app"])

    def compose(self):
        rules = json.dumps({"selections": [{"name": "CR", "conditions": {"Modality": "CR"}}]})
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=self.folder, name="loader"
        )
        selector = DICOMSeriesSelectorOperator(self, rules=rules, name="selector")
        preprocess = PreprocessOperator(
            self, image_size=self.model.card.image_size, name="squid_preprocess"
        )
        scorer = ScoringOperator(self, model=self.model, name="squid_scorer")
        sr_writer = TextSRWriterOperator(self, output_folder=self.output, name="squid_sr")
        self.audit = _HospitalAudit(self, name="hospital_audit")
        self.sink = _HospitalSink(self, name="hospital_sink")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(
            selector, preprocess, {("study_selected_series_list", "study_selected_series_list")}
        )
        self.add_flow(preprocess, scorer, {("cases", "cases")})
        self.add_flow(scorer, sr_writer, {("cases", "cases")})
        self.add_flow(sr_writer, self.audit, {("cases", "cases")})
        self.add_flow(self.audit, self.sink, {("cases", "cases")})


def test_operators_compose_into_a_hospital_graph(tmp_path, standin_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_dicom(inputs / "cr.dcm", chest_pixels(), study_uid="1.2.3.9")
    app = _HospitalApp(inputs, tmp_path / "out", load_exported_model(standin_model, device="cpu"))
    app.run()
    (case,) = app.sink.received
    assert case.status is CaseStatus.SCORED and case.case_id == "1.2.3.9"
    assert case.image.shape == (1, STANDIN_SIZE, STANDIN_SIZE)
    assert (tmp_path / "out" / case.outputs["sr"]).is_file()
    assert app.audit.audited == [
        ("1.2.3.9", case.score)
    ]  # a CaseStage of the hospital's, passing the case on


def test_multi_frame_is_reported_not_scored(tmp_path):
    write_dicom(tmp_path / "mf.dcm", np.stack([chest_pixels()] * 3))
    _, selected = _select(tmp_path)
    (case,) = [PreprocessOperator(Fragment(), image_size=STANDIN_SIZE).prepare(s) for s in selected]
    assert (
        case.status is CaseStatus.MULTI_FRAME and "3 frames" in case.message and case.image is None
    )


def test_preprocessing_is_the_bundles_on_the_in_memory_dataset_without_temporary_files(
    tmp_path, monkeypatch
):
    import tempfile

    from squid_monai.transforms import preprocess

    write_dicom(tmp_path / "cr.dcm", chest_pixels())
    _, selected = _select(tmp_path)
    (tmp_path / "cr.dcm").unlink()  # only the loaded dataset is left: nothing may read a file

    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was written")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    (case,) = [PreprocessOperator(Fragment(), image_size=STANDIN_SIZE).prepare(s) for s in selected]
    assert case.status is CaseStatus.PENDING, case.message
    ds = selected[0].selected_series[0].series.get_sop_instances()[0].get_native_sop_instance()
    assert np.array_equal(case.image.numpy(), preprocess(ds, STANDIN_SIZE).numpy())
