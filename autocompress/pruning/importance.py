"""Pruning techniques: how channels are scored.

A technique is a config record (registered with :func:`autocompress.config.register_config`, so it round-trips
through JSON) and an importance factory registered in :data:`IMPORTANCE`. The factory builds a Torch-Pruning
style importance: ``importance(group) -> 1-D scores``, one per channel of the coupled group; the lowest go.
Adding a technique = a config class, an entry in :data:`TECHNIQUES` and a registered factory.

Torch-Pruning is imported inside the factories: importing :mod:`autocompress.pruning` (for its configs) stays
cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, HandlerRegistry, config_from_name, register_config
from .errors import PruningError

Importance = Callable[[Any], torch.Tensor | None]


@register_config("pruning.random")
@dataclass(frozen=True)
class RandomImportanceConfig(Config):
    """Random channel scores: the baseline every other criterion has to beat. Seeded, so runs repeat."""

    seed: int = 0


@dataclass(frozen=True)
class _LpImportanceConfig(Config):
    """A criterion built on the Lp norm of weights (``p``: the norm's order)."""

    p: int = 2


@register_config("pruning.magnitude")
@dataclass(frozen=True)
class MagnitudeImportanceConfig(_LpImportanceConfig):
    """Lp norm (L1 by default) of each layer's own filters/neurons."""

    p: int = 1


@register_config("pruning.bn_scale")
@dataclass(frozen=True)
class BNScaleImportanceConfig(Config):
    """Network slimming: |gamma| of the BatchNorm after a layer. Layers without a following BatchNorm are kept."""


@register_config("pruning.group_norm")
@dataclass(frozen=True)
class GroupNormImportanceConfig(_LpImportanceConfig):
    """Group magnitude (DepGraph): the Lp norm over every parameter coupled to a channel, averaged."""


@register_config("pruning.lamp")
@dataclass(frozen=True)
class LAMPImportanceConfig(_LpImportanceConfig):
    """Layer-adaptive magnitude (LAMP): squared magnitude normalised by the layer's larger weights."""


# Names users and the search space use; each maps to its config type.
TECHNIQUES: dict[str, type[Config]] = {
    "random": RandomImportanceConfig,
    "magnitude": MagnitudeImportanceConfig,
    "bn_scale": BNScaleImportanceConfig,
    "group_norm": GroupNormImportanceConfig,
    "lamp": LAMPImportanceConfig,
}

#: config type -> factory building a Torch-Pruning style importance: ``importance(group) -> 1-D scores``.
# Handlers take (config, request) like every family's; an importance needs nothing beyond its config.
IMPORTANCE: HandlerRegistry[Callable[[Any, None], Importance]] = HandlerRegistry("pruning importance")


@IMPORTANCE.register(RandomImportanceConfig)
def _random_importance(config: RandomImportanceConfig, request: None = None) -> Importance:
    generator = torch.Generator().manual_seed(config.seed)

    def importance(group: Any) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=generator)

    return importance


@IMPORTANCE.register(MagnitudeImportanceConfig)
def _magnitude_importance(config: MagnitudeImportanceConfig, request: None = None) -> Importance:
    import torch_pruning as tp

    # "first": the root layer's own filters; "mean" normalisation keeps layers comparable in global ranking.
    return tp.importance.MagnitudeImportance(p=config.p, group_reduction="first", normalizer="mean")


@IMPORTANCE.register(BNScaleImportanceConfig)
def _bn_scale_importance(config: BNScaleImportanceConfig, request: None = None) -> Importance:
    import torch_pruning as tp

    return tp.importance.BNScaleImportance(normalizer="mean")


@IMPORTANCE.register(GroupNormImportanceConfig)
def _group_norm_importance(config: GroupNormImportanceConfig, request: None = None) -> Importance:
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=config.p, group_reduction="mean", normalizer="mean")


@IMPORTANCE.register(LAMPImportanceConfig)
def _lamp_importance(config: LAMPImportanceConfig, request: None = None) -> Importance:
    import torch_pruning as tp

    return tp.importance.LAMPImportance(p=config.p)


def technique_config(name: str, **params: Any) -> Config:
    """The config record of a technique by name, e.g. ``technique_config("magnitude", p=2)`` (the one name→config
    map, :func:`autocompress.config.config_from_name`)."""
    return config_from_name("pruning", name, error=PruningError, **params)


def technique_name(config: Config) -> str:
    """The short name (``magnitude``, ...) of a technique config."""
    for name, cls in TECHNIQUES.items():
        if type(config) is cls:
            return name
    return config.KIND
