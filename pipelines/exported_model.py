"""Load the exported model (TorchScript, any family) and the facts it needs to be used correctly.

The exported model is the TorchScript of a family's scorer (``squid_monai.scoring.CalibratedScorer``): ``forward(image)``
takes ``(B, 1, H, W)`` float32 in [0, 1] and returns a dict with ``score`` (B,), ``logit`` (B,)
and ``reconstruction`` (B, 1, H, W). The calibration (mean, std) is already inside the scorer;
the *model card* (:class:`squid_monai.artifact.ModelCard`) carries what the deployment needs
besides the weights: the input size the preprocessing must produce, the decision threshold,
and the name and version that go into the DICOM SR. It is read from two places, so that the
same ``.ts`` works both as a single file and beside a reviewable JSON:

1. the TorchScript extra file ``squid.json`` (``squid_monai.artifact.CARD_FILE``, written by
   ``python -m squid_monai.export``), and
2. a sidecar ``<model stem>.json`` next to the model file, whose keys win.

Keys missing from both are an error naming the model file and the keys.

On a CPU, an export of the same weights beside the TorchScript file (``model.xml``,
``model.onnx``: ``python -m squid_monai.export --format ...``) scores instead, the fastest
first, when its runtime is installed and its card says it meets the parity contract
(:func:`squid_monai.loading.export_problem`, the rule the bundle and the MLflow model
follow too). ``ExportedModel.format`` says which one runs.

The preprocessing is the bundle's, as MONAI Deploy's bundle convention has it: the
``preprocessing`` of the ``inference.json`` that ``ckpt_export`` embeds, at the card's image
size; a model without it (e.g. traced by hand) gets the same function,
``squid_monai.transforms.inference_transforms``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from squid_monai.artifact import CARD_FILE, ModelCard
from squid_monai.transforms import inference_transforms

__all__ = [
    "MODEL_CARD_KEYS",
    "EXTRA_FILE_NAME",
    "ModelCard",
    "ModelLoadError",
    "ExportedModel",
    "find_model_file",
    "load_exported_model",
]

MODEL_CARD_KEYS = ModelCard.REQUIRED
EXTRA_FILE_NAME = CARD_FILE
BUNDLE_CONFIG_FILE = "inference.json"  # the bundle config ckpt_export embeds
_MODEL_SUFFIXES = (".ts", ".pt")
_WARM_UP_CALLS = (
    2  # optimised: the profiling executor's profiling run, then its first optimised run
)


class ModelLoadError(ValueError):
    """The exported model or its card is missing or malformed; the message names the file."""


@dataclass
class ExportedModel:
    """A loaded TorchScript scorer, its card and its preprocessing (a dictionary transform of
    ``{"image": path | pydicom.Dataset | array}``); ``path`` is the ``.ts``/``.pt`` file."""

    module: torch.jit.ScriptModule
    card: ModelCard
    path: Path
    device: torch.device
    preprocessing: Callable[[dict], dict] | None = None
    preprocessing_source: str = ""
    #: the faster export that scores instead of ``module`` (``(B, 1, H, W)`` array -> outputs)
    runtime: Callable[[Any], list] | None = None
    format: str = "torchscript"

    @property
    def domain_limit(self) -> float | None:
        """The domain guard's limit (:mod:`squid_monai.scoring.domain`) from the TorchScript
        scorer's buffer; None for a model exported before the guard (domain not recorded)."""
        limit = getattr(self.module, "domain_limit", None)
        return None if limit is None else float(limit)

    @property
    def optimised(self) -> bool:
        """Whether TorchScript optimises the graph: not on the CPU, where it has no fuser, so that
        its optimised plan runs the same operators (bitwise the same outputs) and only adds two
        slow first calls (profiling, then compiling) to start-up."""
        return self.device.type != "cpu"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score a ``(B, 1, H, W)`` batch in [0, 1]; returns CPU tensors."""
        if self.runtime is not None:
            from squid_monai.scoring.runtimes import OUTPUTS

            outputs = self.runtime(images.detach().to("cpu", torch.float32).contiguous().numpy())
            return {
                key: torch.from_numpy(value)
                for key, value in zip(OUTPUTS, outputs)
                if key != "residual" and value is not None
            }
        with torch.jit.optimized_execution(
            self.optimised
        ):  # a per-thread switch: set on every call
            out = self.module(images.to(self.device, torch.float32))
        return {key: value.detach().float().cpu() for key, value in out.items()}


def find_model_file(path: str | Path) -> Path:
    """Resolve ``path`` to one TorchScript file: the file itself, or the only one in a folder.

    A MAP mounts models as a folder (``/opt/holoscan/models/<name>/``), a local run usually names
    the file: both are accepted.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model path does not exist")
    candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _MODEL_SUFFIXES)
    if len(candidates) != 1:
        found = ", ".join(str(p.relative_to(path)) for p in candidates) or "none"
        raise ModelLoadError(
            f"{path}: expected exactly one TorchScript model ({'/'.join(_MODEL_SUFFIXES)}) in the folder, found {found}"
        )
    return candidates[0]


def load_exported_model(
    path: str | Path, device: str | torch.device | None = None, warm_up: bool = True
) -> ExportedModel:
    """Load the TorchScript scorer and its card from ``path`` (file or folder).

    ``device`` defaults to CUDA when available, else CPU. ``warm_up`` runs the model on a dummy
    batch first (a check of the card's image size, and first-call costs that belong to start-up,
    not to the first study): twice where TorchScript optimises, whose profiling executor makes the
    first two calls several times slower, once on the CPU (:attr:`ExportedModel.optimised`).
    """
    model_file = find_model_file(path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    extra_files = {EXTRA_FILE_NAME: "", BUNDLE_CONFIG_FILE: ""}
    try:
        with (
            warnings.catch_warnings()
        ):  # TorchScript is the agreed deploy format; torch >= 2.10 flags it as legacy
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.load.*", category=DeprecationWarning
            )
            module = torch.jit.load(str(model_file), map_location=device, _extra_files=extra_files)
    except Exception as exc:  # torch raises RuntimeError/ValueError for anything not TorchScript
        raise ModelLoadError(f"{model_file}: not a loadable TorchScript model ({exc})") from exc
    module.eval()
    card = _read_card(model_file, extra_files[EXTRA_FILE_NAME])
    preprocessing, source = _preprocessing(
        model_file,
        extra_files[BUNDLE_CONFIG_FILE],
        card.image_size,
        str(card.extra.get("intensity", "percentile")),
    )
    model = ExportedModel(
        module=module,
        card=card,
        path=model_file,
        device=device,
        preprocessing=preprocessing,
        preprocessing_source=source,
    )
    if device.type == "cpu":
        model.runtime, model.format = _faster_export(model_file, card, module)
    if warm_up:
        _warm_up(model)
    return model


def _faster_export(model_file: Path, card: ModelCard, module) -> tuple[Callable | None, str]:
    """The runtime of the first export beside ``model_file`` (fastest first) that may stand in
    for ``module`` (its TorchScript scorer), here too, and its format; ``(None, "torchscript")``
    when there is none."""
    from squid_monai.artifact import EXPORT_FILES
    from squid_monai.loading import AUTO_ORDER, OPT_IN, export_problem, problem_here

    for fmt in AUTO_ORDER:
        path = model_file.with_name(EXPORT_FILES[fmt])
        problem = export_problem(path, fmt, (card.mean, card.std, card.threshold))
        if problem is None:
            from squid_monai.scoring.runtimes import open_runtime, outputs_of

            runtime = open_runtime(path)
            problem = problem_here(module, outputs_of(runtime), path, fmt)
            if problem is None:
                return runtime, fmt
        if path.is_file() and problem != OPT_IN:
            warnings.warn(f"{path}: {problem}; scoring with the TorchScript model", stacklevel=3)
    return None, "torchscript"


def _warm_up(model: ExportedModel) -> None:
    size = model.card.image_size
    dummy = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    try:
        for _ in range(_WARM_UP_CALLS if model.optimised else 1):
            model(dummy)
    except Exception as exc:
        raise ModelLoadError(
            f"{model.path}: the model fails on a (1, 1, {size}, {size}) image, the size its card gives ({exc})"
        ) from exc


def _preprocessing(
    model_file: Path, config: str | bytes, image_size: int, intensity: str = "percentile"
) -> tuple[Callable[[dict], dict], str]:
    """The embedded bundle config's ``preprocessing`` at ``image_size``, or ``inference_transforms``."""
    content = (
        _parse_json(config, f"{model_file} (extra file {BUNDLE_CONFIG_FILE})") if config else {}
    )
    if "preprocessing" not in content:
        return inference_transforms(
            image_size, intensity=intensity
        ), "squid_monai.transforms.inference_transforms"
    from monai.bundle import ConfigParser

    parser = ConfigParser(content)
    # the card's facts: the bundle derives them from files the export does not carry
    parser["image_size"] = image_size
    if "intensity" in content:
        parser["intensity"] = intensity
    try:
        return parser.get_parsed_content("preprocessing"), f"extra file {BUNDLE_CONFIG_FILE}"
    except Exception as exc:
        raise ModelLoadError(
            f"{model_file}: the bundle's preprocessing cannot be built ({exc})"
        ) from exc


def _read_card(model_file: Path, embedded: str | bytes) -> ModelCard:
    values: dict[str, Any] = {}
    sources = []
    if embedded:
        values.update(_parse_json(embedded, f"{model_file} (extra file {EXTRA_FILE_NAME})"))
        sources.append(f"extra file {EXTRA_FILE_NAME}")
    sidecar = model_file.with_suffix(".json")
    if sidecar.is_file():
        values.update(_parse_json(sidecar.read_bytes(), str(sidecar)))
        sources.append(sidecar.name)
    try:
        return ModelCard.from_dict(values, source=" + ".join(sources))
    except ValueError as exc:
        hint = (
            f"; put them in the TorchScript extra file '{EXTRA_FILE_NAME}' or in the sidecar {sidecar.name}"
            if "missing" in str(exc)
            else ""
        )
        raise ModelLoadError(f"{model_file}: {exc}{hint}") from exc


def _parse_json(raw: str | bytes, where: str) -> dict[str, Any]:
    try:
        return ModelCard.parse(raw)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from exc
