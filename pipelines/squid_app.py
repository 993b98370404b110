"""SQUID chest radiograph anomaly scoring as a MONAI Deploy application.

    python -m pipelines.squid_app -i <input folder> -o <output folder> -m <model .ts or folder>

(``-i/-o/-m`` may also come from ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` /
``HOLOSCAN_MODEL_PATH``, as inside a MAP.) The graph, for DICOM input::

    CheckedDICOMDataLoaderOperator --dicom_study_list--> RadiographSeriesSelectorOperator
        |  |                                                   | study_selected_series_list
        |  +--dicom_study_list, unreadable_cases------------> PreprocessOperator
        |                                                      | cases
    ScoringOperator -> HeatmapSCWriterOperator -> TextSRWriterOperator -> ResultWriterOperator

PNG/JPEG files in the input folder go through ``ImageFileLoaderOperator`` into the same
scorer and result writer (no SR). The exit status is an ``ExitCode`` (see pipelines/README.md).
"""

from __future__ import annotations

if (
    __name__ == "__main__"
):  # the app as a program: import as in the MAP image (pipelines/startup.py)
    from pipelines.startup import start_like_the_map

    start_like_the_map()

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, init_app_context

from pipelines.cases import ExitCode
from pipelines.exported_model import ExportedModel, ModelLoadError, load_exported_model
from pipelines.operators import (
    IMAGE_SUFFIXES,
    SUMMARY_FILE,
    CheckedDICOMDataLoaderOperator,
    HeatmapSCWriterOperator,
    ImageFileLoaderOperator,
    PreprocessOperator,
    RadiographSeriesSelectorOperator,
    ResultWriterOperator,
    ScoringOperator,
    TextSRWriterOperator,
)

__all__ = ["ChestXRayApp", "main"]

logger = logging.getLogger(__name__)


class ChestXRayApp(Application):
    """Scores every study (DICOM) and image (PNG/JPEG) of a folder with an exported model (any family).

    After ``run()``, ``exit_code`` is the run's ``ExitCode`` and ``summary`` the content of
    ``run_summary.json``.
    """

    def __init__(
        self, input_folder: str | Path, output_folder: str | Path, model: ExportedModel, argv=None
    ):
        self.input_folder = Path(input_folder)
        self.output_folder = Path(output_folder)
        self.model = model
        self._result_writer: ResultWriterOperator | None = None
        # holoscan parses its own flags from argv; pass ours explicitly so a host process's argv is not read
        super().__init__(list(argv) if argv else [sys.executable, __file__])

    @property
    def exit_code(self) -> ExitCode | None:
        return self._result_writer.exit_code if self._result_writer else None

    @property
    def summary(self) -> dict:
        return self._result_writer.summary if self._result_writer else {}

    def compose(self):
        image_size = self.model.card.image_size
        has_images, has_others = _input_kinds(self.input_folder)
        scorer = ScoringOperator(self, model=self.model, name="squid_scorer")
        writer = ResultWriterOperator(
            self, output_folder=self.output_folder, name="squid_result_writer"
        )
        self._result_writer = writer
        if has_others or not has_images:
            loader = CheckedDICOMDataLoaderOperator(
                self, CountCondition(self, 1), input_folder=self.input_folder, name="dicom_loader"
            )
            selector = RadiographSeriesSelectorOperator(self, name="series_selector")
            preprocess = PreprocessOperator(
                self,
                image_size=image_size,
                preprocessing=self.model.preprocessing,
                name="squid_preprocess",
            )
            sc_writer = HeatmapSCWriterOperator(
                self, output_folder=self.output_folder, name="heatmap_sc_writer"
            )
            sr_writer = TextSRWriterOperator(
                self, output_folder=self.output_folder, name="squid_sr_writer"
            )
            self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(
                selector, preprocess, {("study_selected_series_list", "study_selected_series_list")}
            )
            self.add_flow(
                loader,
                preprocess,
                {
                    ("dicom_study_list", "dicom_study_list"),
                    ("unreadable_cases", "unreadable_cases"),
                },
            )
            upstream = preprocess
            if has_images:  # mixed folder: the image cases join the DICOM ones before scoring
                images = ImageFileLoaderOperator(
                    self,
                    input_folder=self.input_folder,
                    image_size=image_size,
                    receives_cases=True,
                    preprocessing=self.model.preprocessing,
                    name="image_loader",
                )
                self.add_flow(preprocess, images, {("cases", "cases")})
                upstream = images
            self.add_flow(upstream, scorer, {("cases", "cases")})
            self.add_flow(scorer, sc_writer, {("cases", "cases")})
            self.add_flow(sc_writer, sr_writer, {("cases", "cases")})
            self.add_flow(sr_writer, writer, {("cases", "cases")})
        else:
            images = ImageFileLoaderOperator(
                self,
                CountCondition(self, 1),
                input_folder=self.input_folder,
                image_size=image_size,
                preprocessing=self.model.preprocessing,
                name="image_loader",
            )
            self.add_flow(images, scorer, {("cases", "cases")})
            self.add_flow(scorer, writer, {("cases", "cases")})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app with SDK-style arguments (``argv[0]`` is the program); return the exit status."""
    argv = list(sys.argv if argv is None else argv)
    try:
        context = init_app_context(
            argv
        )  # -i/-o/-m/-l, or the HOLOSCAN_*_PATH variables; sets up logging
    except SystemExit as exc:  # argparse: message already printed
        return int(ExitCode.USAGE) if exc.code else 0
    _keep_datasets_out_of_logs()
    input_folder, output_folder = Path(context.input_path), Path(context.output_path)
    if not input_folder.is_dir():
        logger.error(
            "Input %s is not a folder: give the folder holding the DICOM or PNG/JPEG files",
            input_folder,
        )
        return int(ExitCode.USAGE)
    start = time.perf_counter()
    try:
        model = load_exported_model(context.model_path)
    except ModelLoadError as exc:
        logger.error("Unusable model: %s", exc)
        return int(ExitCode.USAGE)
    card = model.card
    logger.info(
        "Model %s version %s (image size %d, threshold %.4f, card from %s, preprocessing from %s) on %s, "
        "scored with %s",
        card.model_name,
        card.model_version,
        card.image_size,
        card.threshold,
        card.source,
        model.preprocessing_source,
        model.device,
        model.format,
    )
    loaded, loaded_cpu = time.perf_counter(), time.process_time()
    app = ChestXRayApp(input_folder, output_folder, model)
    try:
        app.run()
    except Exception:
        logger.exception("app failed")
        return int(ExitCode.FAILED)
    finished, finished_cpu = time.perf_counter(), time.process_time()
    if app.exit_code is None:
        logger.error("app finished without writing results")
        return int(ExitCode.FAILED)
    _add_timing(
        output_folder / SUMMARY_FILE,
        app.summary,
        model_load_s=loaded - start,
        graph_s=finished - loaded,
        graph_cpu_s=finished_cpu - loaded_cpu,
    )
    return int(app.exit_code)


class _NoDatasetDumps(logging.Filter):
    """Drop the SDK's DEBUG dumps of whole DICOM datasets (they hold the patient module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and record.module in _DATASET_DUMPING_MODULES)


_DATASET_DUMPING_MODULES = ("dicom_utils",)


def _keep_datasets_out_of_logs() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoDatasetDumps) for f in handler.filters):
            handler.addFilter(_NoDatasetDumps())


def _input_kinds(folder: Path) -> tuple[bool, bool]:
    """(any PNG/JPEG file, any other file) under ``folder``."""
    has_images = has_others = False
    for path in folder.rglob("*"):
        if path.is_file():
            if path.name.lower().endswith(IMAGE_SUFFIXES):
                has_images = True
            else:
                has_others = True
    return has_images, has_others


def _add_timing(
    summary_file: Path, summary: dict, model_load_s: float, graph_s: float, graph_cpu_s: float
) -> None:
    """Record where the time went: model loading (with warm-up), then the graph, wall-clock and
    CPU seconds of this process (imports and start-up before them are not counted: BENCHMARKS.md)."""
    cases = len(summary.get("cases", []))
    summary["timing"] = {
        "model_load_s": round(model_load_s, 3),
        "graph_s": round(graph_s, 3),
        "graph_cpu_s": round(graph_cpu_s, 3),
        "graph_s_per_case": round(graph_s / cases, 3) if cases else None,
    }
    summary_file.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
