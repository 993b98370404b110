"""Files that share a SOP Instance UID, and truncated files, in the deploy app (issue 39,
findings 2 and 4): every file is its own case or an explicit "duplicate of" entry in
``run_summary.json``, an intact copy is always the one scored whatever the file names, a
modified copy is flagged, never scored in place of the original in silence, and a truncated
file is called truncated (not "install a plugin", not "no UIDs")."""

from pathlib import Path

import pydicom
import pytest

pytest.importorskip(
    "monai.deploy.operators",
    reason="MONAI Deploy App SDK not installed (pip install -e '.[deploy]')",
)

from monai.deploy.core import Fragment  # noqa: E402

from pipelines.cases import CaseStatus, ExitCode  # noqa: E402
from pipelines.exported_model import load_exported_model  # noqa: E402
from pipelines.operators import CheckedDICOMDataLoaderOperator  # noqa: E402
from pipelines.squid_app import ChestXRayApp  # noqa: E402
from tests.pipelines.factories import chest_pixels, write_dicom  # noqa: E402

REAL_JPEG = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "dicom"
    / "siim_cr_chest_pa_mono2_jpeg8.dcm"
)


def _modified(source: Path, target: Path) -> Path:
    """A copy with the same UIDs and other pixels."""
    ds = pydicom.dcmread(source)
    ds.PixelData = chest_pixels(int(ds.Rows), int(ds.Columns), seed=7).tobytes()
    ds.save_as(target)
    return target


def _truncated(source: Path, target: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


@pytest.fixture
def pairs(tmp_path) -> Path:
    """Three studies, each one instance written twice: a truncated copy first in name order, an
    identical copy, a modified copy first in name order; one truncated file alone, an empty one."""
    folder = tmp_path / "in"
    folder.mkdir()
    intact = write_dicom(folder / "b_intact.dcm", chest_pixels(seed=1), study_uid="1.2.826.1.1")
    _truncated(intact, folder / "a_truncated.dcm")
    twin = write_dicom(folder / "c_original.dcm", chest_pixels(seed=2), study_uid="1.2.826.1.2")
    (folder / "d_copy.dcm").write_bytes(twin.read_bytes())
    original = write_dicom(folder / "f_original.dcm", chest_pixels(seed=3), study_uid="1.2.826.1.3")
    _modified(original, folder / "e_modified.dcm")
    _truncated(
        write_dicom(tmp_path / "alone.dcm", chest_pixels(seed=4)), folder / "g_alone_truncated.dcm"
    )
    (folder / "h_empty.dcm").write_bytes(b"")
    return folder


def test_the_loader_keeps_one_intact_file_per_instance_and_reports_every_other(pairs):
    loader = CheckedDICOMDataLoaderOperator(Fragment(), input_folder=pairs)
    studies = loader.load_data_to_studies(pairs)
    loaded = {
        s.StudyInstanceUID: [
            i.get_native_sop_instance().filename
            for se in s.get_all_series()
            for i in se.get_sop_instances()
        ]
        for s in studies
    }
    assert {uid: [Path(f).name for f in files] for uid, files in loaded.items()} == {
        "1.2.826.1.1": ["b_intact.dcm"],
        "1.2.826.1.2": ["c_original.dcm"],
        "1.2.826.1.3": ["e_modified.dcm"],
    }
    cases = {case.case_id: case for case in loader.unreadable}
    assert {name: case.status for name, case in cases.items()} == {
        "a_truncated.dcm": CaseStatus.DUPLICATE,
        "d_copy.dcm": CaseStatus.DUPLICATE,
        "f_original.dcm": CaseStatus.CONFLICT,
        "g_alone_truncated.dcm": CaseStatus.UNREADABLE,
        "h_empty.dcm": CaseStatus.UNREADABLE,
    }
    assert cases["h_empty.dcm"].message == "empty file (0 bytes)"
    assert cases["a_truncated.dcm"].message.startswith("duplicate of b_intact.dcm")
    assert "truncated pixel data" in cases["a_truncated.dcm"].message
    assert cases["d_copy.dcm"].message.startswith("duplicate of c_original.dcm")
    assert (
        "e_modified.dcm" in cases["f_original.dcm"].message
        and "different content" in cases["f_original.dcm"].message
    )
    assert cases["g_alone_truncated.dcm"].message.startswith("truncated pixel data")
    assert (
        cases["a_truncated.dcm"].source["SOPInstanceUID"]
        == pydicom.dcmread(pairs / "b_intact.dcm").SOPInstanceUID
    )


def test_a_truncated_compressed_file_is_called_truncated_with_the_uids_it_carries(tmp_path):
    if not REAL_JPEG.is_file():
        pytest.skip(
            f"real data folder {REAL_JPEG.parent} is absent (it sits beside the repository on dev "
            "machines)"
        )
    folder = tmp_path / "in"
    folder.mkdir()
    _truncated(REAL_JPEG, folder / "cut_jpeg.dcm", keep=0.9)
    loader = CheckedDICOMDataLoaderOperator(Fragment(), input_folder=folder)
    assert loader.load_data_to_studies(folder) == []
    (case,) = loader.unreadable
    assert case.status is CaseStatus.UNREADABLE
    assert case.message.startswith("truncated pixel data") and "without" not in case.message
    assert case.source["SOPInstanceUID"] == str(
        pydicom.dcmread(REAL_JPEG, stop_before_pixels=True).SOPInstanceUID
    )


def test_the_app_accounts_for_every_file_and_scores_the_intact_copy(pairs, tmp_path, standin_model):
    app = ChestXRayApp(pairs, tmp_path / "out", load_exported_model(standin_model, device="cpu"))
    app.run()
    cases = {case["case_id"]: case for case in app.summary["cases"]}
    files = sorted(p.name for p in pairs.iterdir())
    accounted = {c["source"].get("file") or c["case_id"] for c in cases.values()}
    scored = {c["source"]["StudyInstanceUID"]: c for c in cases.values() if c["status"] == "scored"}
    assert set(scored) == {"1.2.826.1.1", "1.2.826.1.2", "1.2.826.1.3"}
    uid = {
        name: str(pydicom.dcmread(pairs / name, stop_before_pixels=True).SOPInstanceUID)
        for name in ("b_intact.dcm", "c_original.dcm", "e_modified.dcm")
    }
    assert [scored[f"1.2.826.1.{n}"]["source"]["SOPInstanceUID"] for n in (1, 2, 3)] == list(
        uid.values()
    )
    assert accounted >= set(files) - {"b_intact.dcm", "c_original.dcm", "e_modified.dcm"}
    assert len(cases) == 3 + 5  # the three studies, and one entry per other file
    assert (
        cases["a_truncated.dcm"]["status"] == "duplicate"
        and cases["f_original.dcm"]["status"] == "conflict"
    )
    assert (
        app.exit_code is ExitCode.PARTIAL
    )  # the conflict and the lone truncated file are not scored
