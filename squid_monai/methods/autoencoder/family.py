"""One :class:`~squid_monai.methods.base.ModelFamily` implementation for the three
reconstruction families: they differ only in their presets, network class and scorer
class (and recipes), so the preset lookup, the override check and the builders are
written once here."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from ...engines.reconstruction import ReconstructionLossWeights, ReconstructionTrainer

__all__ = ["ReconstructionFamily"]


class ReconstructionFamily:
    """A reconstruction family: ``network`` built from a preset, wrapped by ``scorer``,
    trained by :class:`~squid_monai.engines.reconstruction.ReconstructionTrainer`."""

    loss_weights = ReconstructionLossWeights
    trainer = ReconstructionTrainer

    def __init__(self, name: str, network: type[nn.Module], scorer: type[nn.Module],
                 network_presets: Mapping[str, Mapping[str, Any]], recipe_presets: Mapping[str, Mapping[str, Any]]):
        self.name, self.network, self.scorer = name, network, scorer
        self.network_presets, self.recipe_presets = network_presets, recipe_presets

    def get_config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The preset with ``overrides`` (unknown keys are an error; JSON lists become
        tuples, as the presets hold them)."""
        if preset not in self.network_presets:
            raise KeyError(f"{self.name}: unknown preset {preset!r}; choose one of {sorted(self.network_presets)}")
        config = copy.deepcopy(dict(self.network_presets[preset]))
        known = set(inspect.signature(self.network.__init__).parameters) - {"self"}
        for key, value in overrides.items():
            if key not in config and key not in known:
                raise KeyError(f"{self.name}: unknown network setting {key!r}")
            config[key] = tuple(value) if isinstance(value, list) else value
        return config

    def build_networks(self, preset: str, **overrides: Any) -> tuple[nn.Module]:
        return (self.network(**self.get_config(preset, **overrides)),)

    def build_scorer(self, preset: str, **overrides: Any) -> nn.Module:
        return self.scorer(*self.build_networks(preset, **overrides))
