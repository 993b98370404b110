"""SQUID operators for MONAI Deploy graphs: building blocks a hospital app can embed.

Every SQUID operator passes a ``List[Case]`` on its ``cases`` port (see
``pipelines.cases``), so they chain in any order that makes sense and each study is reported
whatever happens to the others. See ``pipelines/README.md`` for an embedding example.
"""

from pipelines.operators.dicom_loading import CheckedDICOMDataLoaderOperator
from pipelines.operators.heatmap_writing import HeatmapSCWriterOperator
from pipelines.operators.preprocessing import (
    IMAGE_SUFFIXES,
    ImageFileLoaderOperator,
    PreprocessOperator,
)
from pipelines.operators.result_writing import (
    RESULT_FILE,
    SUMMARY_FILE,
    ResultWriterOperator,
    TextSRWriterOperator,
    model_info_for,
    report_text,
)
from pipelines.operators.scoring import ScoringOperator
from pipelines.operators.series_selection import RadiographSeriesSelectorOperator, selection_rules

__all__ = [
    "CheckedDICOMDataLoaderOperator",
    "HeatmapSCWriterOperator",
    "IMAGE_SUFFIXES",
    "ImageFileLoaderOperator",
    "RESULT_FILE",
    "RadiographSeriesSelectorOperator",
    "PreprocessOperator",
    "ResultWriterOperator",
    "ScoringOperator",
    "TextSRWriterOperator",
    "SUMMARY_FILE",
    "model_info_for",
    "report_text",
    "selection_rules",
]
