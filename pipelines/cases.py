"""The records that flow between the SQUID operators, and the exit codes they add up to.

One ``Case`` per study (DICOM) or per file (PNG/JPEG, unreadable files). Every operator
passes every case on, the ones it cannot handle included, with a ``status`` saying why: so the
last operator can report each study, and a failure in one study never hides the others.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from squid_monai.scoring import ScoreRecord

__all__ = ["CaseStatus", "ExitCode", "Case", "exit_code_for"]

_UNSAFE = re.compile(r"[^0-9A-Za-z._-]")


class CaseStatus(str, enum.Enum):
    """What happened to one study or file."""

    PENDING = "pending"  # preprocessed, waiting for the scorer
    SCORED = "scored"
    NO_SUITABLE_SERIES = (
        "no_suitable_series"  # no CR/DX/DR frontal chest series (e.g. CT, MR, lateral)
    )
    MULTI_FRAME = "multi_frame"  # the selected radiograph has several frames
    UNREADABLE = (
        "unreadable"  # a DICOM (by name or marker) or image file that is truncated or undecodable
    )
    IGNORED = "ignored"  # neither DICOM nor PNG/JPEG by name and content (e.g. a manifest .csv): listed only
    # another file with the same SOPInstanceUID was scored: an identical copy, or a truncated
    # copy of an intact one; listed with the file it duplicates ("duplicate of ...")
    DUPLICATE = "duplicate"
    # same SOPInstanceUID as a file scored, but other content: not scored, the run is partial
    CONFLICT = "conflict"
    ERROR = "error"  # anything else (the message says what)


class ExitCode(enum.IntEnum):
    """Process exit status of the app, for the calling pipeline (documented in pipelines/README.md)."""

    OK = 0  # every study/file found was scored and all outputs written
    FAILED = 1  # the app itself failed (unexpected exception): no trustworthy output
    USAGE = 2  # bad arguments or unusable model (nothing was processed)
    PARTIAL = 3  # some studies scored, others reported as not scored (see run_summary.json)
    NOTHING_SCORED = 4  # input read, but no study/file could be scored (or none found)


@dataclass
class Case:
    """One study (DICOM) or one image file on its way through the graph.

    ``case_id`` names the output folder: the StudyInstanceUID for DICOM (the SR carries it anyway),
    the file stem for PNG/JPEG. Nothing here identifies the patient.
    """

    case_id: str
    kind: str  # "dicom" or "image"
    status: CaseStatus = CaseStatus.PENDING
    message: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # UIDs / file name of what was scored
    image: torch.Tensor | None = None  # (1, H, W) float32 in [0, 1], the model input
    dicom_series: Any = None  # monai.deploy DICOMSeries the SR copies study tags from
    score: float | None = None
    logit: float | None = None
    threshold: float | None = None
    anomalous: bool | None = None
    #: the domain guard's verdict (squid_monai.scoring.domain): "OUT OF DOMAIN: ..." = the
    #: score means nothing
    domain: str | None = None
    record: ScoreRecord | None = None  # the scoring result (reconstruction, difference, ...)
    model: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(
        default_factory=dict
    )  # name -> file written, relative to the output folder
    problems: list[str] = field(default_factory=list)  # output steps that failed for a scored case
    #: UIDs of DICOM objects of the case, by name: the scored image (``source``) and those the
    #: app wrote (``heatmap_sc``), for the SR's references
    references: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """``case_id`` as a safe folder name (UIDs and file stems come from the input: never trust them)."""
        name = _UNSAFE.sub("_", self.case_id)
        return name if name.strip(".") else "_" + name

    @property
    def complete(self) -> bool:
        """Scored and every output written."""
        return self.status is CaseStatus.SCORED and not self.problems

    def fail(self, status: CaseStatus, message: str) -> Case:
        """Mark the case as not scorable, dropping pixel data it no longer needs."""
        self.status, self.message = status, message
        self.image = self.record = None
        return self

    def summary(self) -> dict[str, Any]:
        """JSON-ready record: no pixels, no patient identifiers."""
        return {
            "case_id": self.case_id,
            "kind": self.kind,
            "status": self.status.value,
            "message": self.message,
            "source": self.source,
            "score": self.score,
            "logit": self.logit,
            "threshold": self.threshold,
            "decision": None
            if self.anomalous is None
            else ("anomalous" if self.anomalous else "normal"),
            "domain": self.domain,
            "model": self.model,
            "outputs": self.outputs,
            "problems": self.problems,
        }


def exit_code_for(cases: Iterable[Case]) -> ExitCode:
    """Exit status of a run from its cases (ignored files and duplicates of a scored file do not
    count): OK, PARTIAL or NOTHING_SCORED."""
    uncounted = (CaseStatus.IGNORED, CaseStatus.DUPLICATE)
    cases = [case for case in cases if case.status not in uncounted]
    scored = sum(case.status is CaseStatus.SCORED for case in cases)
    if cases and all(case.complete for case in cases):
        return ExitCode.OK
    return ExitCode.PARTIAL if scored else ExitCode.NOTHING_SCORED
