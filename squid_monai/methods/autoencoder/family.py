"""One :class:`~squid_monai.methods.base.ModelFamily` implementation for the three
reconstruction families: they differ only in their presets, network class and scorer
class (and recipes), so the preset lookup, the override check and the builders are
written once here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ...engines.reconstruction import ReconstructionLossWeights, ReconstructionTrainer
from ..base import network_arguments, preset_config

__all__ = ["ReconstructionFamily"]


class ReconstructionFamily:
    """A reconstruction family: ``network`` built from a preset, wrapped by ``scorer``,
    trained by :class:`~squid_monai.engines.reconstruction.ReconstructionTrainer`."""

    loss_weights = ReconstructionLossWeights
    trainer = ReconstructionTrainer

    def __init__(
        self,
        name: str,
        network: type[nn.Module],
        scorer: type[nn.Module],
        network_presets: Mapping[str, Mapping[str, Any]],
        recipe_presets: Mapping[str, Mapping[str, Any]],
    ):
        self.name, self.network, self.scorer = name, network, scorer
        self.network_presets, self.recipe_presets = network_presets, recipe_presets

    def get_config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The preset with ``overrides`` (:func:`~..base.preset_config`; the network's other
        arguments may be overridden too)."""
        return preset_config(
            self.network_presets,
            preset,
            overrides,
            f"{self.name} network setting",
            known=network_arguments(self.network),
        )

    def build_networks(self, preset: str, **overrides: Any) -> tuple[nn.Module]:
        return (self.network(**self.get_config(preset, **overrides)),)

    def build_scorer(self, preset: str, **overrides: Any) -> nn.Module:
        return self.scorer(*self.build_networks(preset, **overrides))
