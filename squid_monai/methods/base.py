"""What a model family provides, and how the rest of the house finds one by name.

A *model family* (SQUID is the first; the seed baselines come next) is a folder
``squid_monai/methods/<name>/`` whose ``__init__.py`` defines ``FAMILY``, an object with the
attributes and methods of :class:`ModelFamily`. Nothing else in the package names a
family: the trained-model recipe (``network.json``) stores the family's name, and
:func:`get_family` imports ``squid_monai.methods.<name>`` when a recipe is built. So adding a
family means adding a folder; the scoring path, the writer, the handlers and the bundle
configs' wiring stay as they are (see ``docs/METHODS.md``).
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "SHARED_RECIPE",
    "Family",
    "ModelFamily",
    "Scorer",
    "get_family",
    "get_recipe",
    "family_names",
    "network_arguments",
    "preset_config",
]


#: The settings every family's training recipe starts from, so that the bundle configs read
#: each number from ``@recipe`` and a family's ``recipes.py`` states only where it differs:
#: Adam with learning rate 1e-4, betas (0.5, 0.999), weight decay 1e-5 and eps 1e-8, the
#: ``paper`` schedule annealing to 0.2 of the rate, and 12 epochs in the CPU recipe
#: (``chest_cpu.json``): what every family trained with when the configs held these numbers.
SHARED_RECIPE: Mapping[str, Any] = {
    "lr": 1e-4,
    "betas": (0.5, 0.999),
    "weight_decay": 1e-5,
    "adam_eps": 1e-8,
    "lr_min_ratio": 0.2,
    "cpu_epochs": 12,
}


@runtime_checkable
class Scorer(Protocol):
    """The trained model as every consumer sees it (an ``nn.Module``).

    ``forward(image)`` takes (B, 1, H, W) preprocessed in [0, 1] and returns a dict with
    ``score`` (B,) (higher = more anomalous, calibrated), ``logit`` (B,) (the raw output
    the score is calibrated from) and ``reconstruction`` (B, 1, H, W) (what the model
    thinks a normal image would look like; the writer derives the ``difference`` from it).
    The buffers ``mean``, ``std``, ``threshold`` and ``normal_threshold`` are the calibration
    and the decision thresholds, saved with the weights. The explanation
    (:mod:`squid_monai.scoring.explain`) is the gradient of the score; a scorer may also have a
    ``discriminator`` (a (B, 1, H, W) -> (B, 1) logit network) to explain by Grad-CAM.
    """

    mean: torch.Tensor
    std: torch.Tensor
    threshold: torch.Tensor
    normal_threshold: torch.Tensor

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class ModelFamily(Protocol):
    """What a model family provides.

    Attributes:
        name: the folder name under ``squid_monai/methods`` (stored in ``network.json``).
        network_presets: named architectures, ``{preset: {setting: value}}``; every preset
            has an ``image_size``.
        recipe_presets: named training recipes (loss weights, critic steps, optimiser
            settings) ``{recipe: {setting: value}}``, beside the network presets.
        loss_weights: the class of the weighted loss terms (a dataclass with defaults).
        trainer: the :class:`monai.engines.Trainer` subclass whose ``_iteration`` is one
            training step of the family.
        scorer: the :class:`Scorer` class.
    """

    name: str
    network_presets: Mapping[str, Mapping[str, Any]]
    recipe_presets: Mapping[str, Mapping[str, Any]]
    loss_weights: type
    trainer: type
    scorer: type

    def get_config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The network preset's settings with ``overrides`` applied (unknown keys: error)."""

    def build_networks(self, preset: str, **overrides: Any) -> tuple[nn.Module, ...]:
        """The family's untrained networks (plain ``nn.Module`` s, what the trainer takes)."""

    def build_scorer(self, preset: str, **overrides: Any) -> Scorer:
        """An untrained scorer wrapping freshly built networks."""


@dataclass(frozen=True)
class Family:
    """The usual :class:`ModelFamily`: a family folder's presets, classes and its two module
    functions ``configure(preset, **overrides)`` (the network settings) and
    ``build(preset, **overrides)`` (the networks); the scorer wraps what ``build`` returns.
    A family whose scorer needs more than its networks subclasses it.

    ``preset_revisions``: ``{preset: (overrides, ...)}``, each an earlier definition of the
    preset as overrides of today's, newest first, so that models saved before recipes were
    pinned (:class:`~squid_monai.artifact.Recipe`) still load."""

    name: str
    network_presets: Mapping[str, Mapping[str, Any]]
    recipe_presets: Mapping[str, Mapping[str, Any]]
    loss_weights: type
    trainer: type
    scorer: type
    configure: Callable[..., dict[str, Any]]
    build: Callable[..., tuple[nn.Module, ...]]
    preset_revisions: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)

    def get_config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        return self.configure(preset, **overrides)

    def build_networks(self, preset: str, **overrides: Any) -> tuple[nn.Module, ...]:
        return self.build(preset, **overrides)

    def build_scorer(self, preset: str, **overrides: Any) -> Scorer:
        return self.scorer(*self.build_networks(preset, **overrides))


def family_names() -> list[str]:
    """The families installed as folders of ``squid_monai.methods`` (its package path: this
    module's own package, already imported, looked up rather than imported again)."""
    path = getattr(sys.modules.get(__package__), "__path__", None) or [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(path) if m.ispkg)


def get_family(name: str) -> ModelFamily:
    """The ``FAMILY`` of ``squid_monai.methods.<name>`` (imported on first use)."""
    if name not in family_names():
        raise KeyError(f"unknown model family {name!r}; installed: {family_names()}")
    family = importlib.import_module(f"squid_monai.methods.{name}").FAMILY
    if not isinstance(family, ModelFamily):
        raise TypeError(
            f"squid_monai.methods.{name}.FAMILY does not provide the ModelFamily interface"
        )
    return family


def get_recipe(family: ModelFamily, name: str) -> dict[str, Any]:
    """A copy of the family's training recipe ``name`` (the bundle picks ``chest`` or
    ``digitanatomy`` from the data source) over :data:`SHARED_RECIPE`; unknown names are an
    error."""
    if name not in family.recipe_presets:
        raise KeyError(
            f"{family.name} has no training recipe {name!r}; choose one of {sorted(family.recipe_presets)}"
        )
    return {
        key: dict(value) if isinstance(value, Mapping) else value
        for key, value in {**SHARED_RECIPE, **family.recipe_presets[name]}.items()
    }


def preset_config(
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    overrides: Mapping[str, Any],
    setting: str = "network setting",
    switches: Iterable[str] = (),
    known: Iterable[str] = (),
) -> dict[str, Any]:
    """A copy of ``presets[preset]`` with ``overrides`` applied, the one way every family
    resolves a preset: unknown presets and settings (neither in the preset nor ``known``, the
    network's other arguments) are an error (``setting`` names them in the message), JSON /
    command-line lists become tuples, and the ``switches`` accept command-line strings such as
    ``"false"``, which Python would take as true and silently leave the switch on."""
    if preset not in presets:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    config = copy.deepcopy(dict(presets[preset]))
    allowed, switches = set(config) | set(known), set(switches)
    for key, value in overrides.items():
        if key not in allowed:
            raise KeyError(f"unknown {setting} {key!r}; known: {sorted(allowed)}")
        if key in switches:
            value = _switch(key, value, setting)
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def network_arguments(network: type) -> dict[str, Any]:
    """The defaults of a network class's ``__init__`` arguments (the settings a preset may
    leave out), for :func:`preset_config`'s ``known`` and ``switches``."""
    import inspect

    return {
        k: p.default
        for k, p in inspect.signature(network.__init__).parameters.items()
        if k != "self"
    }


def _switch(key: str, value: Any, setting: str) -> bool:
    from monai.utils import str2bool

    try:
        return str2bool(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise TypeError(
            f"{setting} {key!r} is a switch: use true or false, not {value!r}"
        ) from None
