"""The scorer on other inference runtimes: ONNX Runtime and OpenVINO (fp32), and
OpenVINO INT8 (NNCF static post-training quantisation calibrated on normal images).

Every format starts from one ONNX graph of :class:`ScoreOutputs`, written by the
TorchScript-based ``torch.onnx.export`` (the same trace as the TorchScript export, a second
where the ``torch.export`` route takes a minute; BatchNorm is folded into the convolutions
on the way). The discriminator's per-image normalisation becomes ONNX
``InstanceNormalization`` and the calibration (``mean``, ``std``, score source) is part of
the graph, so an export scores exactly what :class:`~squid_monai.scoring.CalibratedScorer` does.
OpenVINO reads that ONNX file; NNCF quantises the OpenVINO model.

:class:`ExportedScorer` runs a file and keeps the PyTorch scorer beside it for what a
runtime graph cannot give: the thresholds, the decision, and the differentiable scorer that
the heat maps need. The runtimes are optional (``pip install squid-monai[export]``);
they are imported when used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "OUTPUTS",
    "RUNTIMES",
    "ScoreOutputs",
    "ExportedScorer",
    "export_onnx",
    "embed_onnx_card",
    "to_openvino",
    "quantize_openvino",
    "save_openvino",
    "open_runtime",
    "outputs_of",
    "embedded_card",
    "available",
]

#: the graph outputs, in order (the keys of the scorer's dict); ``domain_distance`` (the domain
#: guard's, :mod:`.domain`) is absent from files exported before the guard existed
OUTPUTS = ("score", "logit", "residual", "reconstruction", "domain_distance")
#: format -> the Python module its runtime needs
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino", "openvino_int8": "openvino"}
_CARD_KEY = (
    "squid.json"  # the model card's entry in ONNX metadata / OpenVINO rt_info (as in TorchScript)
)


def available(fmt: str) -> bool:
    """Whether the runtime of ``fmt`` (and, for INT8, NNCF) can be imported."""
    import importlib.util

    needed = [RUNTIMES[fmt]] + (["nncf"] if fmt == "openvino_int8" else [])
    return all(importlib.util.find_spec(name) is not None for name in needed)


class ScoreOutputs(nn.Module):
    """The scorer as a graph of plain tensors, :data:`OUTPUTS` in order (exporters take no dicts)."""

    def __init__(self, scorer: nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.scorer(image)
        return tuple(out[key] for key in OUTPUTS)


def export_onnx(
    scorer: nn.Module, path: str | os.PathLike, image_size: int, card_json: str | None = None
) -> Path:
    """Write the ONNX graph of ``scorer`` (any batch size) to ``path``, the model card (JSON)
    in its metadata when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with (
        warnings.catch_warnings()
    ):  # tracer notes on shape-only branches, and the exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ScoreOutputs(scorer.cpu()).eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=list(OUTPUTS),
            opset_version=18,
            dynamic_axes={"image": {0: "batch"}, **{key: {0: "batch"} for key in OUTPUTS}},
        )
    return path if card_json is None else embed_onnx_card(path, card_json)


def embed_onnx_card(path: str | os.PathLike, card_json: str) -> Path:
    """Write the model card (JSON) into an ONNX file's metadata."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {_CARD_KEY: card_json})
    onnx.save(model, str(path))
    return Path(path)


def to_openvino(onnx_path: str | os.PathLike):
    """The OpenVINO model of an ONNX file (in memory)."""
    import openvino as ov

    return ov.Core().read_model(str(onnx_path))


#: what INT8 leaves in fp32: everything before the memories (quantisation noise there changes
#: which memory items the top-k read picks, and the score's ranking is lost: Spearman 0.03
#: against fp32 on a trained ``small``, BENCHMARKS.md), the memory reads, and the
#: discriminator, whose logit the calibration magnifies
FP32_SCOPES = (".*encoder.*", ".*inpainting.*", ".*memories.*", ".*discriminator.*")


def quantize_openvino(model, images: Iterable[torch.Tensor], subset_size: int = 300):
    """NNCF static INT8 quantisation of an OpenVINO model's student decoder (:data:`FP32_SCOPES`
    stay fp32), calibrated on ``images`` (batches (B, 1, H, W) of un-augmented normal
    training images; the activation ranges are fixed from them, so a score stays a function
    of its image alone)."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # not one line per node left in fp32
    batches = [torch.as_tensor(b).float().numpy() for b in images]
    items = [b[i : i + 1] for b in batches for i in range(len(b))]
    fp32 = nncf.IgnoredScope(
        types=["MatMul", "Einsum", "Softmax", "TopK"], patterns=list(FP32_SCOPES), validate=False
    )
    with keep_signal_stack():  # NNCF compiles OpenVINO models to collect the statistics
        return nncf.quantize(
            model, nncf.Dataset(items), subset_size=min(subset_size, len(items)), ignored_scope=fp32
        )


def save_openvino(model, path: str | os.PathLike, card_json: str | None = None) -> Path:
    """Write an OpenVINO model as ``path`` (``.xml``, weights in the ``.bin`` beside it),
    weights kept in fp32 (OpenVINO would halve them by default), the card in its rt_info."""
    import openvino as ov

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if card_json is not None:
        model.set_rt_info(card_json, [_CARD_KEY])
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def embedded_card(path: str | os.PathLike) -> str:
    """The model card JSON written into an ONNX or OpenVINO file ("" when it has none)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        return props.get(_CARD_KEY, "")
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return model.get_rt_info([_CARD_KEY]).astype(str) if model.has_rt_info([_CARD_KEY]) else ""


class _SignalStack(ctypes.Structure):
    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


@contextlib.contextmanager
def keep_signal_stack():
    """Give the calling thread its alternate signal stack back after the block.

    OpenVINO's CPU plugin installs its own alternate signal stack on the thread that compiles
    a model and puts the previous one back when that compiled model is freed. Freed in another
    order than compiled (two models, or one kept and one dropped), the thread is left with a
    stack that no longer exists, and the next signal whose handler runs on it (Python's
    handlers and ``faulthandler`` do; a child process ending sends SIGCHLD) kills the process
    with a segmentation fault (``SI_KERNEL``), long after the model was used. Measured on
    openvino 2025 (tests/scoring/test_runtimes.py). POSIX only; elsewhere a no-op."""
    if os.name != "posix":
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    libc.sigaltstack(None, ctypes.byref(before))
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


def signal_stack() -> tuple[int | None, int, int]:
    """The calling thread's alternate signal stack: (address, flags, size)."""
    current = _SignalStack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current))
    return current.ss_sp, current.ss_flags, current.ss_size


def export_files(path: str | os.PathLike) -> list[Path]:
    """The files an export consists of: ``path`` and what its runtime reads beside it (an
    OpenVINO ``.bin``, an ONNX file's external data), for copying the export as a whole."""
    path = Path(path)
    if path.suffix == ".xml":
        return [path, path.with_suffix(".bin")]
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {
        ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)
    }
    return [path, *(path.with_name(name) for name in sorted(locations))]


def open_runtime(model, threads: int | None = None):
    """A callable ``(B, 1, H, W) float32 array -> list of arrays`` (:data:`OUTPUTS`, None for
    an output the file lacks) over an ONNX file (ONNX Runtime, all graph optimisations) or an OpenVINO model or ``.xml`` file
    (latency hint, fp32 arithmetic), on ``threads`` threads (default: torch's)."""
    threads = int(threads or torch.get_num_threads())
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        present = [key for key in OUTPUTS if key in {o.name for o in session.get_outputs()}]

        def run_onnx(x: np.ndarray) -> list[np.ndarray | None]:
            found = dict(zip(present, session.run(present, {"image": x})))
            return [found.get(key) for key in OUTPUTS]

        return run_onnx
    import openvino as ov

    core = ov.Core()
    if isinstance(model, (str, os.PathLike)):
        model = core.read_model(str(model))
    with keep_signal_stack():
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
    request = compiled.create_infer_request()
    names = {name for output in compiled.outputs for name in output.get_names()}
    outputs = [compiled.output(key) if key in names else None for key in OUTPUTS]
    lock = threading.Lock()  # one request, reused: a server's threads take turns

    def run(x: np.ndarray) -> list[np.ndarray | None]:
        with lock:
            result = request.infer({0: x})
            # copies: the request reuses its buffers
            return [None if o is None else np.array(result[o]) for o in outputs]

    return run


def outputs_of(run) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A runtime of :func:`open_runtime` as a scorer: (B, 1, H, W) tensor -> the dict of
    :data:`OUTPUTS` (CPU tensors)."""

    def scorer(image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
        return {
            key: torch.from_numpy(value) for key, value in zip(OUTPUTS, run(x)) if value is not None
        }

    return scorer


class ExportedScorer(nn.Module):
    """An exported scorer (a file, or an OpenVINO model in memory) run by its runtime, with
    the PyTorch ``reference`` scorer it was exported from for the thresholds, :meth:`decide`
    and ``discriminator`` (heat maps). ``forward(image)`` returns the scorer's dict (CPU
    tensors); ``format`` names the export format."""

    def __init__(self, model, reference: nn.Module, fmt: str, threads: int | None = None):
        super().__init__()
        self.path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        self.format = fmt
        self.reference = reference.cpu().eval()
        self._run = outputs_of(open_runtime(model, threads))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if hasattr(image, "as_tensor"):  # MetaTensor
            image = image.as_tensor()
        return self._run(image)

    @property
    def discriminator(self) -> nn.Module:
        return self.reference.discriminator

    def __getattr__(self, name: str):
        if name in (
            "mean",
            "std",
            "threshold",
            "normal_threshold",
            "score_source",
            "domain_limit",
        ):
            return getattr(self._modules["reference"], name)
        return super().__getattr__(name)

    def decide(self, score: torch.Tensor) -> torch.Tensor:
        return self.reference.decide(score)

    def train(self, mode: bool = True) -> ExportedScorer:
        """Always in eval mode, like the scorer it stands for."""
        return super().train(False)
