"""One per-image result record, and the one function that makes records from images.

Every consumer of a trained model (evaluation, bundle inference, the MLflow model, the
deploy operators) turns images into :class:`ScoreRecord` s here, so the decision rule, the
bad-file policy and the meaning of each field are the same everywhere:

* ``score``: calibrated anomaly score (higher = more anomalous); ``logit``: the raw output;
* ``decision``: 1 = "likely abnormal, look closer" (``score > threshold``, :func:`decide`);
* ``reconstruction``: the model's normal-looking version of the input (H, W);
* ``difference``: ``|input - reconstruction|`` (H, W), the residual;
* ``heatmap``: the explanation of the score (H, W) in [0, 1] (:mod:`.explain`), when asked;
* ``domain``: the domain guard's verdict (:mod:`.domain`): ``in domain``, ``OUT OF DOMAIN:
  <reasons>`` (read the score as meaningless) or ``domain not recorded`` (a model calibrated
  before the guard existed); ``domain_distance``: the image's distance to the nearest
  calibration normal that the verdict compares with the model's limit;
* ``error``: why the image could not be scored (then no score); the others still are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from ..transforms import EncodedImage, find_radiograph_error, preprocess
from ..transforms.dicom import dataset_name, is_dicom_dataset
from .domain import OUT_OF_DOMAIN, domain_status
from .scorer import decide

__all__ = [
    "PerImageInferer",
    "ScoreRecord",
    "ScoringItems",
    "difference_map",
    "forward",
    "read_image",
    "score_images",
    "source_name",
]


@dataclass
class ScoreRecord:
    """The result of scoring one image (see the module docstring). ``image`` names it (a
    path, a case id or ``<split>#<n>``); ``extra`` holds consumer-specific columns (e.g.
    the evaluation's ``sharpness_score``), written after the common ones."""

    image: str
    label: int | None = None
    score: float | None = None
    logit: float | None = None
    decision: int | None = None
    threshold: float | None = None
    reconstruction: np.ndarray | None = None
    difference: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    error: str | None = None
    domain: str | None = None
    domain_distance: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return self.error is None and self.score is not None

    @property
    def out_of_domain(self) -> bool:
        """The domain guard fired: the score must not be read as if all were well."""
        return (self.domain or "").startswith(OUT_OF_DOMAIN)

    @classmethod
    def unreadable(
        cls, image: Any, error: str, label: Any = None, threshold: float | None = None
    ) -> ScoreRecord:
        """The record of an image that could not be read (the bad-file policy: a row with
        its reason and no score)."""
        return cls(image=str(image), label=_label(label), threshold=threshold, error=str(error))


def difference_map(image: Any, reconstruction: Any) -> Any:
    """``|image - reconstruction|``, same type (tensor or array) and shape as the inputs."""
    if tuple(image.shape) != tuple(reconstruction.shape):
        raise ValueError(
            f"image and reconstruction shapes differ: {tuple(image.shape)} vs "
            f"{tuple(reconstruction.shape)}"
        )
    if isinstance(image, torch.Tensor):
        return (image - reconstruction.to(image)).abs()
    return np.abs(np.asarray(image) - np.asarray(reconstruction))


def read_image(
    source: Any,
    image_size: int | None = None,
    transform: Callable[[dict], dict] | None = None,
    **options: Any,
) -> tuple[torch.Tensor | None, str | None]:
    """``(preprocessed image (1, S, S), None)`` or ``(None, reason)``: the bad-file policy
    of every consumer (a :class:`~squid_monai.transforms.RadiographError` is a reason, not
    an exception, so one file cannot stop a run; any other error is a bug and propagates).

    ``source``: a path, a file's contents (``EncodedImage``), an array or an in-memory
    ``pydicom.Dataset``. ``transform``: a
    dictionary preprocessing (the bundle's ``preprocessing``, e.g. read from an exported
    model); default :func:`~squid_monai.transforms.preprocess` at ``image_size`` with
    ``options``, the same ``inference_transforms``.
    """
    try:
        image = (
            preprocess(source, image_size, **options)
            if transform is None
            else transform({"image": source})["image"]
        )
    except Exception as err:  # noqa: BLE001 - MONAI wraps a transform's error in a RuntimeError
        found = find_radiograph_error(err)
        if found is None:
            raise
        return None, found.reason
    return (
        image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    ).float(), None


def source_name(source: Any) -> str:
    """How a record names its input: the path, the name of a file's contents, the file of a
    DICOM dataset, or ``<array>``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, EncodedImage):
        return source.name
    if is_dicom_dataset(source):
        return dataset_name(source)
    return str(getattr(source, "meta", {}).get("filename_or_obj", "<array>"))


class ScoringItems(torch.utils.data.Dataset):
    """A datalist (items with ``image`` and optionally ``label``) through a preprocessing (the
    bundle's ``preprocessing``, applied to ``{"image": ...}``) with the bad-file policy of
    :func:`read_image`: item ``i`` is ``{"index", "name", "label", "image" (1, S, S)
    plain float32 tensor or None, "error" (reason) or None}``. Batch with ``collate_fn=list``.
    Any error other than a :class:`~squid_monai.transforms.RadiographError` is a bug and
    propagates."""

    def __init__(self, data: Sequence[dict], transform: Callable[[dict], dict]):
        self.data, self.transform = list(data), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        item = self.data[index]
        source = item["image"]
        image, error = read_image(source, transform=self.transform)
        return {
            "index": index,
            "name": source_name(source),
            "label": item.get("label"),
            "image": image,
            "error": error,
        }


class PerImageInferer(Inferer):
    """MONAI inferer running the network on one image at a time (:func:`forward`): scores
    bitwise independent of the batch size. ``SimpleInferer`` is the batched alternative."""

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        return forward(network, inputs, per_image=True)


def forward(
    scorer: Callable[[torch.Tensor], dict], images: torch.Tensor, per_image: bool = True
) -> dict[str, torch.Tensor]:
    """``scorer(images)``, one image at a time when ``per_image``: CPU (and GPU) kernels choose
    their blocking by batch size, so a batched forward differs from a single-image one in
    the last bits, which the calibration magnifies; per image, a score is a pure function
    of the image whatever the batch size."""
    if isinstance(images, MetaTensor):
        images = images.as_tensor()
    if not per_image or images.shape[0] <= 1:
        return scorer(images)
    outs = [scorer(images[i : i + 1]) for i in range(images.shape[0])]
    return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


def score_images(
    scorer: Callable[[torch.Tensor], dict],
    images: torch.Tensor,
    names: Sequence[Any] | None = None,
    threshold: float | torch.Tensor | None = None,
    labels: Sequence[Any] | None = None,
    per_image: bool = True,
    explainer: Any = None,
    pixels: bool = True,
    output: dict[str, torch.Tensor] | None = None,
) -> list[ScoreRecord]:
    """Score a (B, 1, H, W) batch into records.

    Args:
        scorer: a :class:`~squid_monai.methods.base.Scorer` (PyTorch or TorchScript).
        images: the preprocessed batch, on the scorer's device.
        names: one name per image (default ``#<n>``).
        threshold: decision threshold; default the scorer's ``threshold`` buffer.
        labels: known labels, copied into the records.
        per_image: see :func:`forward`.
        explainer: the heat maps' explainer (:func:`.explain.explainer_for`), called as
            ``explainer.explain(images, output)``.
        pixels: keep ``reconstruction`` and ``difference`` (not needed for a score table).
        output: the scorer's output on ``images`` when already computed (an engine's).
    """
    threshold = scorer.threshold if threshold is None else threshold
    out = forward(scorer, images, per_image) if output is None else output
    limit = getattr(scorer, "domain_limit", None)
    limit = None if limit is None else float(limit)
    distances = (
        out["domain_distance"].detach().reshape(-1).double().cpu().tolist()
        if "domain_distance" in out
        else [None] * len(out["score"].reshape(-1))
    )
    maps = explainer.explain(images, out) if explainer is not None else None
    score = out["score"].detach().reshape(-1)
    decisions = decide(score, threshold).cpu().tolist()
    scores, logits = (
        score.double().cpu().tolist(),
        out["logit"].detach().reshape(-1).double().cpu().tolist(),
    )
    threshold = float(threshold)
    if pixels:
        reconstruction = out["reconstruction"].detach().float().cpu()
        difference = difference_map(torch.as_tensor(images).detach().float().cpu(), reconstruction)
    records = []
    for i in range(len(scores)):
        record = ScoreRecord(
            image=str(names[i]) if names is not None else f"#{i}",
            label=_label(labels[i]) if labels is not None else None,
            score=scores[i],
            logit=logits[i],
            decision=int(decisions[i]),
            threshold=threshold,
            domain=domain_status(distances[i], limit, scores[i]),
            domain_distance=distances[i],
        )
        if pixels:
            record.reconstruction = reconstruction[i, 0].numpy()
            record.difference = difference[i, 0].numpy()
        if maps is not None:
            record.heatmap = maps[i]
        records.append(record)
    return records


def _label(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return int(value.item() if isinstance(value, (torch.Tensor, np.generic)) else value)
