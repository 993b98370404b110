"""Series selection for SQUID: a projection radiograph that is, where the tags say so, a frontal chest."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from monai.deploy.core import Fragment
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.operators import DICOMSeriesSelectorOperator

from squid_monai.transforms import RADIOGRAPH_MODALITIES

__all__ = [
    "FRONTAL_VIEW_POSITIONS",
    "CHEST_BODY_PARTS",
    "SELECTED_INSTANCE_KEY",
    "RadiographSeriesSelectorOperator",
    "selection_rules",
    "sorted_image_instances",
]

logger = logging.getLogger(__name__)

FRONTAL_VIEW_POSITIONS = ("PA", "AP")
CHEST_BODY_PARTS = ("CHEST",)
#: key in ``SelectedSeries.metadata()`` holding the index (in ``sorted_image_instances``) of the image to score
SELECTED_INSTANCE_KEY = "squid_instance_index"
SELECTION_NAME = "frontal chest radiograph"


def selection_rules(modalities: Iterable[str] = RADIOGRAPH_MODALITIES) -> str:
    """The SDK selector's JSON rules: any series of one of ``modalities``."""
    pattern = "^(" + "|".join(m.upper() for m in modalities) + ")$"
    return json.dumps(
        {"selections": [{"name": SELECTION_NAME, "conditions": {"Modality": pattern}}]}
    )


class RadiographSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """The SDK's ``DICOMSeriesSelectorOperator`` with SQUID's rules, picking one image per study.

    The SDK rules select series by modality (CR, DX, DR, RG by default: the modalities the
    bundle's reader accepts). The rules cannot say "if the tag is present" (a missing tag fails a
    condition, and many radiographs carry no ``ViewPosition``), so the frontal-chest check is done
    here per instance: an instance is rejected only when ``ViewPosition`` is present and not PA/AP,
    or ``BodyPartExamined`` is present and not CHEST. The first matching series of each study is
    kept, with the first such instance (by InstanceNumber) recorded in the selection's metadata.

    Named input:
        dicom_study_list: ``List[DICOMStudy]``.
    Named output:
        study_selected_series_list: ``List[StudySelectedSeries]``, one selected series per study
            that has a suitable image; studies without one are absent (``PreprocessOperator``
            reports them when it also receives the study list).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        modalities: Iterable[str] = RADIOGRAPH_MODALITIES,
        view_positions: Iterable[str] = FRONTAL_VIEW_POSITIONS,
        body_parts: Iterable[str] = CHEST_BODY_PARTS,
        **kwargs,
    ):
        self.view_positions = tuple(v.upper() for v in view_positions)
        self.body_parts = tuple(b.upper() for b in body_parts)
        super().__init__(
            fragment, *args, rules=selection_rules(modalities), all_matched=True, **kwargs
        )

    def filter(
        self, selection_rules, dicom_study_list, all_matched=False, sort_by_sop_instance_count=False
    ):
        """SDK modality matching (all matches), then per study the first frontal chest image,
        single-frame images first (a multi-frame one is kept only when there is nothing else,
        so that the study is reported as multi-frame rather than as having no radiograph)."""
        candidates = super().filter(selection_rules, dicom_study_list, True, False)
        selected = []
        for study_selection in candidates:
            choices = [
                (choice, self.frontal_instance_index(choice.series, single_frame))
                for single_frame in (True, False)
                for choice in study_selection.selected_series
            ]
            found = next(((choice, index) for choice, index in choices if index is not None), None)
            if found is None:
                continue
            choice, index = found
            kept = StudySelectedSeries(study_selection.study)
            kept.add_selected_series(
                SelectedSeries(
                    choice.selection_name, choice.series, None, {SELECTED_INSTANCE_KEY: index}
                )
            )
            selected.append(kept)
        return selected

    def frontal_instance_index(self, series: DICOMSeries, single_frame: bool = False) -> int | None:
        """Index in ``sorted_image_instances(series)`` of the first frontal chest image
        (only single-frame ones if ``single_frame``), or None."""
        for index, instance in enumerate(sorted_image_instances(series)):
            ds = instance.get_native_sop_instance()
            if single_frame and int(ds.get("NumberOfFrames", 1) or 1) > 1:
                continue
            if _allowed(ds, "ViewPosition", self.view_positions) and _allowed(
                ds, "BodyPartExamined", self.body_parts
            ):
                return index
        return None


def sorted_image_instances(series: DICOMSeries) -> list[Any]:
    """The series' SOP instances that carry pixel data, in InstanceNumber order."""
    images = [s for s in series.get_sop_instances() if "PixelData" in s.get_native_sop_instance()]
    return sorted(images, key=lambda s: _instance_number(s.get_native_sop_instance()))


def _instance_number(ds) -> float:
    try:
        return float(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return float("inf")


def _allowed(ds, keyword: str, allowed: tuple[str, ...]) -> bool:
    """True when the tag is absent or empty (nothing says otherwise) or one of ``allowed``."""
    value = str(ds.get(keyword, "") or "").strip().upper()
    return not value or value in allowed
