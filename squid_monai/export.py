"""TorchScript export of the scoring path, and the checks that it is the same model.

The export itself is MONAI's ``ckpt_export`` run on ``inference.json``'s ``network_def``
(a :class:`~squid_monai.scoring.CalibratedScorer`), traced because ``forward`` switches the
networks to eval mode, which scripting cannot compile; the traced graph takes any batch
size. This module adds what ``ckpt_export`` cannot:

* :class:`ScoreHead`: the scorer seen as a ``(B, 1, H, W) -> (B, 1)`` score network, the
  shape ``verify_net_in_out`` checks against ``metadata.json``;
* :func:`embed_model_card`: the :class:`~squid_monai.artifact.ModelCard` (input size,
  calibration, thresholds, name, version) as the TorchScript extra file ``squid.json`` that
  ``pipelines`` reads; the calibration lives in the checkpoint, not in a config, so
  ``ckpt_export`` cannot write it;
* :func:`parity`: the largest difference between the TorchScript and the PyTorch scorer,
  both run through :func:`squid_monai.scoring.forward`.

``python -m squid_monai.export --bundle_root bundles/squid`` runs all three steps.

``--format onnx | openvino | openvino_int8`` writes the scorer for another runtime instead
(:mod:`squid_monai.scoring.runtimes`; ``pip install squid-monai[export]``): the INT8 one
calibrated on the training normals, each measured against PyTorch on the validation split
(:mod:`squid_monai.scoring.parity`) and its card, with format and parity, inside the file.
``inference.json`` (``backend: auto``) then scores with the fastest export whose card says
it meets the parity contract. ``--dataset_dir`` / ``--datalist`` name the training data as
for training (default: DigitAnatomy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import loading
from .artifact import (
    CARD_FILE,
    EXPORT_FILES,
    MODELS_DIR,
    WEIGHTS_FILE,
    ModelCard,
    Recipe,
    trained_intensity,
)
from .data.sources import bundle_root, choose_data
from .handlers.progress import progress_iter
from .loading import load_scorer
from .scoring import CalibratedScorer, forward

__all__ = [
    "CARD_FILE",
    "FORMATS",
    "ScoreHead",
    "model_card",
    "embed_model_card",
    "parity",
    "split_images",
    "export_runtime",
    "export_bundle",
    "main",
]

#: what ``--format`` takes
FORMATS = tuple(EXPORT_FILES)

logger = logging.getLogger(__name__)


class ScoreHead(nn.Module):
    """``scorer(image)["score"]`` as a (B, 1) tensor: the network output ``metadata.json``
    declares (``outputs.pred``, one channel), for ``verify_net_in_out``."""

    def __init__(self, scorer: CalibratedScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.scorer(image)["score"].unsqueeze(1)


def _load_torchscript(
    path: str | os.PathLike, extra_files: dict | None = None
) -> torch.jit.ScriptModule:
    with (
        warnings.catch_warnings()
    ):  # TorchScript is the agreed deploy format; torch flags it as legacy
        warnings.filterwarnings("ignore", message=".*torch.jit.*", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})


def _extra_file_names(path: str | os.PathLike) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [n.split("/extra/", 1)[1] for n in archive.namelist() if "/extra/" in n]


def model_card(
    module: nn.Module, image_size: int, metadata: dict, family: str | None = None
) -> dict:
    """The card of a scorer of model family ``family`` as JSON content
    (:meth:`ModelCard.from_scorer`)."""
    return ModelCard.from_scorer(module, image_size, metadata, family=family).to_dict()


def embed_model_card(
    ts_path: str | os.PathLike,
    image_size: int,
    metadata: dict | None = None,
    intensity: str | None = None,
    measured: dict | None = None,
    domain: dict | None = None,
    family: str | None = None,
) -> dict:
    """Write :func:`model_card` into the TorchScript file as ``squid.json`` (the other extra
    files, e.g. MONAI's ``metadata.json`` and the configs, are kept); ``domain`` and
    ``family``: the model's recorded domain and model family (``network.json``), the family
    naming the model in the card. Returns the card."""
    ts_path = Path(ts_path)
    extra = {name: "" for name in _extra_file_names(ts_path)}
    module = _load_torchscript(ts_path, extra)
    if metadata is None and extra.get("metadata.json"):
        metadata = json.loads(extra["metadata.json"])
    card = ModelCard.from_scorer(module, image_size, metadata, domain, family=family)
    if (
        intensity is not None
    ):  # the intensity rule the model was trained with, for the deploy preprocessing
        card = dataclasses.replace(card, extra={**card.extra, "intensity": intensity})
    if measured is not None:
        card = dataclasses.replace(card, format="torchscript", parity=measured)
    extra[CARD_FILE] = card.to_json().encode()
    torch.jit.save(module, str(ts_path), _extra_files=extra)
    return card.to_dict()


@torch.no_grad()
def parity(
    ts_path: str | os.PathLike,
    scorer: CalibratedScorer,
    image_size: int,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Largest absolute difference of each output between the TorchScript file and
    ``scorer`` on a random batch (batch size other than the traced one on purpose)."""
    module = _load_torchscript(ts_path).eval()
    x = torch.rand(
        batch_size, 1, image_size, image_size, generator=torch.Generator().manual_seed(seed)
    )
    scorer = scorer.cpu()
    expected, got = forward(scorer, x, per_image=False), forward(module, x, per_image=False)
    return {key: float((expected[key] - got[key]).abs().max()) for key in expected}


def split_images(
    source, split: str, size: int, intensity: str, n: int
) -> tuple[torch.Tensor, list[int]]:
    """The images (N, 1, size, size) and labels of a split of ``source`` (a
    :class:`~squid_monai.workflow.DataSource`; ``"calibration"``: its training normals), at
    most ``n`` per class, preprocessed as the model was trained (``intensity``)."""
    data = (
        source.calibration(size, max_images=n, cache=False, intensity=intensity)
        if split == "calibration"
        else source.validation(
            size, split=split, n_normal=n, n_abnormal=n, cache=False, intensity=intensity
        )
    )
    items = [data[i] for i in progress_iter(range(len(data)), f"export: loading {split}")]
    images = torch.stack([torch.as_tensor(it["image"]).float() for it in items])
    return images, [int(it.get("label", 0)) for it in items]


def _weights_on_cpu(weights: Path, folder: Path) -> Path:
    """A copy of ``weights`` in ``folder`` whose tensors say "cpu". ``ckpt_export`` loads through
    ignite's ``Checkpoint.load_objects``, which names no ``map_location``: a model saved on a
    GPU would not load on a machine without one."""
    copy = folder / weights.name
    torch.save(torch.load(weights, map_location="cpu", weights_only=True), copy)
    return copy


def export_runtime(
    fmt: str,
    models: Path,
    filepath: Path,
    metadata: dict,
    source,
    calibration_images: int = 300,
    val_per_class: int = 100,
) -> dict:
    """Write ``models/model.pt`` as ``fmt`` (ONNX, OpenVINO, OpenVINO INT8 calibrated on
    ``calibration_images`` training normals of ``source``, a
    :class:`~squid_monai.data.sources.DataSource`), measure its parity on the validation split,
    and embed the card. Raises when an fp32 format misses the contract; an INT8 one that
    misses it is written as an opt-in (``parity["default"]`` false)."""
    import shutil

    from .scoring import parity as contract
    from .scoring import runtimes

    scorer, recipe = load_scorer(models / WEIGHTS_FILE), Recipe.in_folder(models)
    size, intensity = loading.image_size(recipe), trained_intensity(models)
    card = ModelCard.from_scorer(scorer, size, metadata, recipe.domain, family=recipe.family)
    card = dataclasses.replace(card, format=fmt, extra={**card.extra, "intensity": intensity})
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = runtimes.export_onnx(scorer, Path(tmp) / "model.onnx", size)
        model = onnx_path
        if fmt != "onnx":
            model = runtimes.to_openvino(onnx_path)
            if fmt == "openvino_int8":
                calibration, _ = split_images(
                    source, "calibration", size, intensity, calibration_images
                )
                model = runtimes.quantize_openvino(model, [calibration])
        images, labels = split_images(source, "validation", size, intensity, val_per_class)
        measured = contract.measure_parity(
            scorer,
            runtimes.ExportedScorer(model, scorer, fmt),
            images,
            labels,
            quantised=fmt.endswith("int8"),
        )
        if not fmt.endswith("int8") and not measured["default"]:
            raise RuntimeError(
                f"{fmt} export of {models / WEIGHTS_FILE} misses the fp32 parity contract: {measured}"
            )
        card = dataclasses.replace(card, parity=measured)
        if fmt == "onnx":
            filepath.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(runtimes.embed_onnx_card(onnx_path, card.to_json()), filepath)
        else:
            runtimes.save_openvino(model, filepath, card.to_json())
    return {"filepath": str(filepath), "card": card.to_dict(), "parity": measured}


def export_bundle(
    bundle_root: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    filepath: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    tolerance: float = 1e-5,
    fmt: str = "torchscript",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    seed: int = 0,
    val_per_class: int = 100,
    calibration_images: int = 300,
    model_dir: str | os.PathLike | None = None,
) -> dict:
    """``ckpt_export`` of ``<output_dir>/models/model.pt`` (or ``<model_dir>/model.pt``: any
    model folder, a reference model's too) to ``models/model.ts`` (traced),
    then the card and the parity check; raises if the export drifts beyond ``tolerance``.
    Another ``fmt`` (:data:`FORMATS`) goes to :func:`export_runtime` with the run's data
    (:func:`~squid_monai.data.sources.choose_data` of ``dataset_dir`` / ``datalist`` / ``seed``)."""
    from monai.bundle import ckpt_export

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    bundle_root = Path(bundle_root).resolve()
    output_dir = Path(output_dir).resolve() if output_dir else bundle_root
    models = Path(model_dir).resolve() if model_dir else output_dir / MODELS_DIR
    filepath = Path(filepath) if filepath else models / EXPORT_FILES[fmt]
    filepath.parent.mkdir(parents=True, exist_ok=True)
    config_file = Path(config_file) if config_file else bundle_root / "configs" / "inference.json"
    meta_file = Path(meta_file) if meta_file else bundle_root / "configs" / "metadata.json"
    recipe = Recipe.in_folder(models)
    if not recipe.preset:
        raise FileNotFoundError(
            f"{models}: no trained model (network recipe) to export (train the bundle first)"
        )
    size = loading.image_size(recipe)
    metadata = json.loads(meta_file.read_text())
    if fmt != "torchscript":
        source = choose_data(dataset_dir, datalist, seed, val_per_class=val_per_class)
        return export_runtime(
            fmt, models, filepath, metadata, source, calibration_images, val_per_class
        )
    declared = (
        metadata.get("network_data_format", {})
        .get("inputs", {})
        .get("image", {})
        .get("spatial_shape")
    )
    overrides = {}
    if declared and list(declared) != [size, size]:
        logger.warning(
            "metadata.json declares input %s but the trained network takes %s: the exported "
            "metadata says %s",
            declared,
            [size, size],
            [size, size],
        )
        overrides["_meta_#network_data_format#inputs#image#spatial_shape"] = [size, size]
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        # the tracer flags shape checks (tile grid, top-k size) as constants: true for a fixed input
        # size, and the parity check below runs another batch size than the traced one
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.*", category=DeprecationWarning)
        ckpt_export(
            net_id="network_def",
            filepath=str(filepath),
            ckpt_file=str(_weights_on_cpu(models / WEIGHTS_FILE, Path(tmp))),
            meta_file=str(meta_file),
            config_file=str(config_file),
            bundle_root=str(bundle_root),
            output_dir=str(output_dir),
            ckpt_dir=str(models),
            use_trace=True,
            input_shape=[1, 1, size, size],
            converter_kwargs={"strict": False},
            **overrides,
        )
    diff = parity(filepath, load_scorer(models / WEIGHTS_FILE), size)
    if max(diff.values()) > tolerance:
        raise RuntimeError(
            f"{filepath}: TorchScript differs from the PyTorch scorer by {diff} (> {tolerance})"
        )
    card = embed_model_card(
        filepath,
        size,
        intensity=trained_intensity(models),
        measured={"max_abs_diff": diff},
        domain=recipe.domain,
        family=recipe.family,
    )
    return {"filepath": str(filepath), "card": card, "max_abs_diff": diff}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m squid_monai.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--bundle_root", default=None, help="bundle folder (default: found from the current folder)"
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="training output folder holding models/ (default: bundle_root)",
    )
    parser.add_argument(
        "--model_dir",
        default=None,
        help="model folder to export instead of <output_dir>/models (e.g. a reference model's)",
    )
    parser.add_argument(
        "--format",
        default="torchscript",
        choices=FORMATS,
        help="export format (default: torchscript)",
    )
    parser.add_argument(
        "--filepath",
        default=None,
        help="exported file (default: <output_dir>/models/<the format's file>)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest accepted |TorchScript - PyTorch|"
    )
    parser.add_argument(
        "--dataset_dir", default=None, help="training data, as for training (default: DigitAnatomy)"
    )
    parser.add_argument(
        "--datalist", default=None, help="MONAI datalist JSON instead of --dataset_dir"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the training run's seed (its data split)"
    )
    parser.add_argument(
        "--val_per_class",
        type=int,
        default=100,
        help="validation images per class, as for training",
    )
    parser.add_argument(
        "--calibration_images", type=int, default=300, help="training normals that calibrate INT8"
    )
    args = parser.parse_args(argv)
    result = export_bundle(
        args.bundle_root or bundle_root(),
        args.output_dir,
        args.filepath,
        tolerance=args.tolerance,
        fmt=args.format,
        dataset_dir=args.dataset_dir,
        datalist=args.datalist,
        seed=args.seed,
        val_per_class=args.val_per_class,
        calibration_images=args.calibration_images,
        model_dir=args.model_dir,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
