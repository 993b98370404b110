"""The trained-model folder: its file names, its recipe and its model card, in one place.

A trained model is a folder (``<output_dir>/models/``) holding

* ``model.pt``: the scorer's state dict (weights, calibration and thresholds as buffers);
* ``network.json``: the :class:`Recipe` that rebuilds exactly the trained architecture
  (model family, preset, overrides);
* ``preprocessing.json``: the preprocessing switches it was trained with (the intensity
  rule), :func:`save_preprocessing` / :func:`trained_intensity`;
* ``training.json``: the training recipe as resolved when the run started (loss weights,
  critic steps, learning rate, score source, input erasing), which a resumed run keeps;
* after export, ``model.ts``: the TorchScript scorer with the :class:`ModelCard` embedded as
  the extra file ``squid.json`` (a sidecar ``model.json`` beside it may override keys);
  ``model.onnx``, ``model.xml`` (OpenVINO) and ``model_int8.xml`` (OpenVINO INT8) the other
  :data:`EXPORT_FILES`, each with its card (format and measured parity) inside;
* in a reference model (``python -m squid_monai.reference build``), ``reference.json``
  (:data:`REFERENCE_FILE`): what its packaging measured. Nothing written through
  :func:`write_json` or a checkpoint saver lands in such a folder
  (:func:`refuse_reference_folder`): training never overwrites a reference model.

Every reader and writer of these files (training, evaluation, inference, the MLflow model,
the export and the deploy app) goes through this module, so the names, the JSON layout and
the derived facts (the image size) cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed import is_main_process
from .transforms.compose import check_switches

__all__ = [
    "MODELS_DIR",
    "WEIGHTS_FILE",
    "RECIPE_FILE",
    "PREPROCESSING_FILE",
    "TRAINING_FILE",
    "CARD_FILE",
    "TORCHSCRIPT_FILE",
    "EXPORT_FILES",
    "REFERENCE_FILE",
    "ReferenceFolderError",
    "SCORE_RULE",
    "Recipe",
    "ModelCard",
    "card_model_name",
    "load_training_settings",
    "reference_folder",
    "refuse_reference_folder",
    "save_preprocessing",
    "save_training_settings",
    "trained_intensity",
    "write_json",
]

#: folder of the trained model under a run's output folder
MODELS_DIR = "models"
#: the scorer's state dict (best validation epoch)
WEIGHTS_FILE = "model.pt"
#: the network recipe beside the weights
RECIPE_FILE = "network.json"
#: the preprocessing switches the model was trained with
PREPROCESSING_FILE = "preprocessing.json"
#: the training recipe a run started with (a resumed run keeps it)
TRAINING_FILE = "training.json"
#: TorchScript extra file (and sidecar content) with the model card
CARD_FILE = "squid.json"
#: the TorchScript export
TORCHSCRIPT_FILE = "model.ts"
#: export format -> its file in the model folder (``python -m squid_monai.export --format``)
EXPORT_FILES = {
    "torchscript": TORCHSCRIPT_FILE,
    "onnx": "model.onnx",
    "openvino": "model.xml",
    "openvino_int8": "model_int8.xml",
}
#: the record that makes a model folder a reference model (what its packaging measured)
REFERENCE_FILE = "reference.json"
#: how the card's numbers turn a logit into a decision
SCORE_RULE = "1 - sigmoid((x - mean) / std), x the logit, the negated residual, the negated worst standardised tile residual or the negated sum of standardised evidence (combined) (score_source); decision: score > threshold"
#: the family a recipe names when none is given: the project's method, and the one family of
#: the model folders written before there were others
DEFAULT_FAMILY = "squid"


def card_model_name(family: str | None, bundle_name: str | None = None) -> str:
    """The model name a card carries into reports (deploy SR, summaries): the model family
    and the bundle's name, ``"ganomaly (squid-monai chest X-ray anomaly detection)"``; either
    alone when the other is unknown."""
    family, bundle_name = (str(v).strip() if v else "" for v in (family, bundle_name))
    if family and bundle_name:
        return f"{family} ({bundle_name})"
    return family or bundle_name or "unnamed model"


class ReferenceFolderError(ValueError):
    """A run tried to write into a reference model's folder."""


def reference_folder(path: str | os.PathLike) -> Path | None:
    """The reference model folder (one holding :data:`REFERENCE_FILE`) that ``path`` is, or
    lies inside, links resolved; None when there is none."""
    path = Path(path).expanduser().resolve()
    return next((p for p in (path, *path.parents) if (p / REFERENCE_FILE).is_file()), None)


def refuse_reference_folder(path: str | os.PathLike) -> None:
    """Raise :class:`ReferenceFolderError` when ``path`` resolves into a reference model's
    folder: the committed reference model is rebuilt only by its packaging command, never
    overwritten by a training run pointed at it."""
    folder = reference_folder(path)
    if folder is not None:
        raise ReferenceFolderError(
            f"{path}: lies in the reference model folder {folder} (it holds {REFERENCE_FILE}); "
            "training never writes there. Train into another --output_dir, then package the "
            "model with python -m squid_monai.reference build"
        )


def write_json(path: str | os.PathLike, content: Any) -> Path:
    """Write ``content`` as JSON to ``path`` atomically (a temporary file beside it, then a
    rename): another process reading the model folder meanwhile (the other ranks of a
    distributed run checking a resume) sees the old file or the new one, never half of it.
    Never into a reference model's folder (:func:`refuse_reference_folder`)."""
    path = Path(path)
    refuse_reference_folder(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Recipe:
    """What rebuilds a trained network: its model family's name, preset and preset overrides.

    ``network.json`` is ``{"family": ..., "preset": ..., "overrides": {...}, "config": {...}}``:
    ``config`` pins every setting as resolved when the file was written, so that a later
    change of the preset's definition never changes a trained model. Files written before
    the pin existed rebuild from preset and overrides (and, where the preset changed since,
    from its earlier definitions: :func:`squid_monai.loading.load_scorer`); files that name
    the family ``method`` (written before the one vocabulary) still load, and files written
    before either field existed are SQUID. ``domain`` (``{"name", "dataset", "description",
    "image_size", "intensity", "guard"}``, :meth:`squid_monai.workflow.DataSource.domain`)
    records the data the model was trained on, for the domain guard
    (:mod:`squid_monai.scoring.domain`); files written before it have none
    (:func:`squid_monai.scoring.domain.recorded_domain` then says so). This module only reads and writes the record:
    resolving it needs the family (:mod:`squid_monai.loading`), which lives above this layer.
    """

    preset: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    family: str = DEFAULT_FAMILY
    pinned: Mapping[str, Any] | None = field(default=None, compare=False)
    domain: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def settings(self) -> dict[str, Any]:
        """What rebuilds the network, as overrides of the preset: the pinned settings, else
        the recipe's own overrides."""
        return dict(self.pinned if self.pinned is not None else self.overrides)

    def as_dict(self) -> dict[str, Any]:
        out = {"family": self.family, "preset": self.preset, "overrides": dict(self.overrides)}
        if self.pinned is not None:
            out["config"] = dict(self.pinned)
        return out if self.domain is None else {**out, "domain": dict(self.domain)}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], where: str = "network recipe") -> Recipe:
        if not isinstance(content, Mapping) or "preset" not in content:
            raise ValueError(f"{where}: network recipe without 'preset'")
        pinned = content.get("config")
        return cls(
            preset=str(content["preset"]),
            overrides=dict(content.get("overrides") or {}),
            family=_family_name(content),
            pinned=None if pinned is None else dict(pinned),
            domain=dict(content["domain"]) if isinstance(content.get("domain"), Mapping) else None,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``network.json`` (``path`` is the file or its folder) as it is (pin it first:
        :func:`squid_monai.loading.save_network_config`)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / RECIPE_FILE
        write_json(path, self.as_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Read ``network.json`` (``path`` is the file or the model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / RECIPE_FILE
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read the network recipe ({err})") from err
        return cls.from_dict(content, str(path))

    @classmethod
    def of(cls, recipe: Recipe | Mapping[str, Any] | str | os.PathLike) -> Recipe:
        """A recipe from a recipe, its dict, or the path of its file / folder."""
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, Mapping):
            return cls.from_dict(recipe)
        return cls.load(recipe)

    @classmethod
    def in_folder(
        cls,
        model_dir: str | os.PathLike,
        preset: str = "",
        overrides: Mapping | None = None,
        family: str = DEFAULT_FAMILY,
    ) -> Recipe:
        """The trained model's recipe in ``model_dir``, or the given one when there is none
        yet (an untrained bundle: ``verify_net_in_out`` and other checks still need a network)."""
        path = Path(model_dir) / RECIPE_FILE
        if path.is_file():
            return cls.load(path)
        return cls(preset=preset, overrides=dict(overrides or {}), family=family)


def _family_name(content: Mapping[str, Any]) -> str:
    """The family a stored file names: ``family``, or ``method`` in files written before the one
    vocabulary, or SQUID in files older than both."""
    return str(content.get("family") or content.get("method") or DEFAULT_FAMILY)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"model card needs image_size > 0 and std > 0, got {name}={value}")


@dataclass(frozen=True)
class ModelCard:
    """What a deployment must know about a trained scorer besides its weights: the input
    size the preprocessing must produce, the calibration, the thresholds, and the name and
    version that go into reports (``model_name``: the model family, then the bundle's name,
    :func:`card_model_name`). ``format`` and ``parity`` are an export's: its
    :data:`EXPORT_FILES` key and what :mod:`squid_monai.scoring.parity` measured against the
    PyTorch scorer (``parity["default"]``: whether it meets the contract to be used unasked).
    ``domain``: the domain the model was trained on (:attr:`Recipe.domain`, or ``name``
    "domain not recorded") with the domain guard's ``limit`` (``None``: calibrated before the
    guard); cards written before it have none. ``source`` says where it was read from;
    ``extra`` keeps unknown keys."""

    image_size: int
    mean: float
    std: float
    threshold: float
    model_name: str
    model_version: str
    normal_threshold: float | None = None
    format: str = ""
    parity: Mapping[str, Any] = field(default_factory=dict)
    domain: Mapping[str, Any] | None = None
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    #: keys a card must have
    REQUIRED = ("image_size", "mean", "std", "threshold", "model_name", "model_version")

    @classmethod
    def from_scorer(
        cls,
        scorer: Any,
        image_size: int,
        metadata: Mapping[str, Any] | None = None,
        domain: Mapping[str, Any] | None = None,
        family: str | None = None,
    ) -> ModelCard:
        """The card of a scorer (PyTorch or TorchScript: both carry the calibration buffers);
        version from the bundle's ``metadata.json``, name from the model's ``family``
        (:attr:`Recipe.family`) and the bundle's name (:func:`card_model_name`); ``domain``:
        the recorded domain (:attr:`Recipe.domain`), written with the scorer's domain-guard
        limit (``null``: a scorer calibrated before the guard) as :attr:`domain`."""
        from .scoring.domain import recorded_domain

        metadata = metadata or {}
        limit = float(getattr(scorer, "domain_limit", float("nan")))
        return cls(
            image_size=int(image_size),
            mean=float(scorer.mean),
            std=float(scorer.std),
            threshold=float(scorer.threshold),
            normal_threshold=float(scorer.normal_threshold),
            model_name=card_model_name(family, metadata.get("name")),
            model_version=str(metadata.get("version", "0")),
            domain={**recorded_domain(domain), "limit": limit if limit > 0 else None},
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "") -> ModelCard:
        """Check and convert; a missing key or a bad value is a ``ValueError`` saying which."""
        missing = [key for key in cls.REQUIRED if key not in values]
        if missing:
            raise ValueError(f"model card incomplete, missing {missing}")
        try:
            normal = values.get("normal_threshold")
            card = cls(
                image_size=int(values["image_size"]),
                mean=float(values["mean"]),
                std=float(values["std"]),
                threshold=float(values["threshold"]),
                model_name=str(values["model_name"]),
                model_version=str(values["model_version"]),
                normal_threshold=None if normal is None else float(normal),
                source=source,
                format=str(values.get("format", "")),
                parity=dict(values.get("parity") or {}),
                domain=dict(values["domain"])
                if isinstance(values.get("domain"), Mapping)
                else None,
                extra={
                    k: v
                    for k, v in values.items()
                    if k not in cls.REQUIRED
                    and k not in ("normal_threshold", "score", "format", "parity", "domain")
                },
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"model card has a malformed value ({err})") from err
        _positive("image_size", card.image_size)
        _positive("std", card.std)
        return card

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of the card (``squid.json``)."""
        content = {key: getattr(self, key) for key in self.REQUIRED}
        if self.normal_threshold is not None:
            content["normal_threshold"] = self.normal_threshold
        if self.format:
            content.update(format=self.format, parity=dict(self.parity))
        if self.domain is not None:
            content["domain"] = dict(self.domain)
        return {**content, **dict(self.extra), "score": SCORE_RULE}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def parse(text: str | bytes) -> dict[str, Any]:
        """The JSON object of a card file, unchecked (cards from several files are merged
        before :meth:`from_dict` checks them)."""
        try:
            values = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"not valid JSON ({err})") from err
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got {type(values).__name__}")
        return values

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "") -> ModelCard:
        return cls.from_dict(cls.parse(text), source)


def save_preprocessing(ckpt_dir: str | os.PathLike, intensity: str = "percentile") -> Path:
    """Record the intensity rule a model was trained with in ``<ckpt_dir>/preprocessing.json``
    (:data:`PREPROCESSING_FILE`), so that evaluation and inference preprocess exactly as
    training did."""
    path = Path(ckpt_dir, PREPROCESSING_FILE)
    if is_main_process():
        write_json(path, check_switches(intensity=intensity))
    return path


def trained_intensity(ckpt_dir: str | os.PathLike, default: str = "percentile") -> str:
    """The intensity rule recorded beside a trained model (:func:`save_preprocessing`), or
    ``default`` for a model folder without the record (trained before the switch existed:
    ``"percentile"``)."""
    path = Path(ckpt_dir, PREPROCESSING_FILE)
    if not path.is_file():
        return check_switches(intensity=default)["intensity"]
    return check_switches(intensity=json.loads(path.read_text()).get("intensity", default))[
        "intensity"
    ]


def save_training_settings(
    ckpt_dir: str | os.PathLike, family: str, name: str, settings: Mapping[str, Any]
) -> Path:
    """Pin the training recipe a run starts with in ``<ckpt_dir>/training.json``
    (:data:`TRAINING_FILE`): ``{"family", "recipe", "settings"}``."""
    path = Path(ckpt_dir, TRAINING_FILE)
    if is_main_process():
        write_json(path, {"family": family, "recipe": name, "settings": dict(settings)})
    return path


def load_training_settings(ckpt_dir: str | os.PathLike) -> tuple[str, str, dict[str, Any]]:
    """``(family, recipe name, settings)`` pinned by :func:`save_training_settings` (files
    that say ``method`` for the family still load); an unreadable file is a ``ValueError``
    naming it."""
    path = Path(ckpt_dir, TRAINING_FILE)
    try:
        stored = json.loads(path.read_text())
        family, name, settings = _family_name(stored), stored["recipe"], stored["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: cannot read the pinned training recipe ({err}); start afresh with --resume false "
            "or another --output_dir"
        ) from err
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: the pinned training settings are not a JSON object")
    return family, name, settings
