"""What a pruning action is and what it returns: :class:`PruningConfig`, the strategies, :class:`PruneResult`.

A :class:`PruningConfig` joins two independent choices: the **technique** scores channels (see
:mod:`.importance`), the **strategy** decides which layers may lose channels and how they are ranked
(``conv``, ``linear`` and ``attention`` prune one kind of layer with the same ratio in every layer; ``uniform``
prunes every kind with the same ratio in every layer, the usual hand recipe; ``global`` prunes every kind and
ranks channels across layers). ``layer_ratios`` gives chosen conv/linear layers ratios of their own (see
:mod:`.sensitivity` for ratios weighted by how much each layer hurts when pruned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import Config, register_config
from ..errors import ConfigError
from .errors import PruningError
from .importance import IMPORTANCE, TECHNIQUES, MagnitudeImportanceConfig, technique_config

OBJECTIVES = ("params", "flops")


@dataclass(frozen=True)
class Strategy:
    """Which kinds of coupled channel groups may be pruned, and whether channels are ranked across layers."""

    name: str
    kinds: frozenset[str]
    global_ranking: bool
    description: str


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("linear", frozenset({"linear"}), False,
             "fully connected / MLP widths, the same ratio in every layer"),
    Strategy("conv", frozenset({"conv"}), False, "convolution channels, the same ratio in every layer"),
    Strategy("attention", frozenset({"attention"}), False,
             "attention heads (and the hidden width where the architecture ties it to the heads)"),
    Strategy("global", frozenset({"conv", "linear", "attention"}), True,
             "every prunable layer, channels ranked across layers"),
    # Pruned by direct surgery in .heads (no dependency graph): ratio = MLP channels, head_ratio = heads.
    Strategy("heads_mlp", frozenset({"attention", "linear"}), False,
             "attention heads and MLP channels, the residual (hidden) width kept"),
    # Listed last: error messages and search spaces list the strategies in this order.
    Strategy("uniform", frozenset({"conv", "linear", "attention"}), False,
             "every prunable layer (conv, linear, attention), the same ratio in every layer"),
)}

# Strategies whose layers are pruned one by one, so a layer can be given a ratio of its own (``layer_ratios``).
PER_LAYER_STRATEGIES = ("uniform", "conv", "linear")


def strategy_named(name: str) -> Strategy:
    """The strategy called ``name``; a one-line :class:`PruningError` for an unknown name."""
    found = STRATEGIES.get(name) if isinstance(name, str) else None
    if found is None:
        raise PruningError(f"unknown pruning strategy {name!r}", f"one of {', '.join(STRATEGIES)}",
                           "pick one of these names")
    return found


@register_config("pruning")
@dataclass(frozen=True)
class PruningConfig(Config):
    """One pruning action.

    ``ratio`` is the fraction of channels removed (per layer for ``conv``/``linear``/``attention``, over all
    selected layers for ``global``). ``head_ratio`` is the fraction of attention heads removed; ``None`` means
    the same as ``ratio``. ``steps`` prunes in that many equal steps (a callback can fine-tune between them).
    ``round_to`` keeps pruned channel counts at multiples of it. ``max_layer_ratio`` caps what global ranking
    may take from any one layer. ``technique`` may be given by name (``"magnitude"``).

    ``layer_ratios`` (strategies ``uniform``, ``conv``, ``linear``) maps conv/linear layer names (as in
    ``model.named_modules()``) to the fraction of that layer's output channels removed; layers not named are
    pruned at ``ratio``. A dict is accepted and stored as ``((name, ratio), ...)`` sorted by name, so the record
    stays frozen, hashable and the same however it was given. Layers coupled with a named one (a residual add)
    are pruned with it.
    """

    technique: Config = MagnitudeImportanceConfig()
    strategy: str = "global"
    ratio: float = 0.5
    head_ratio: float | None = None
    steps: int = 1
    round_to: int | None = None
    max_layer_ratio: float = 0.9
    layer_ratios: tuple[tuple[str, float], ...] | None = None
    # The study's dial that made ``layer_ratios`` from a sensitivity scan (0: uniform, 1: fully weighted); kept
    # so that the record says why its layers differ and the study can map the plan back onto its parameters.
    sensitivity_weight: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.technique, str):
            object.__setattr__(self, "technique", technique_config(self.technique))
        if not isinstance(self.technique, Config):
            raise PruningError(f"technique {self.technique!r}", f"a technique name ({', '.join(TECHNIQUES)}) "
                               "or its config record", "pass e.g. technique='magnitude'")
        try:
            IMPORTANCE(self.technique)
        except ConfigError as exc:
            raise PruningError(f"technique config {type(self.technique).__name__}",
                               f"one of {', '.join(TECHNIQUES)}", "use a registered technique") from exc
        strategy_named(self.strategy)
        _check_fraction("ratio", self.ratio)
        if self.head_ratio is not None:
            _check_fraction("head_ratio", self.head_ratio)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise PruningError(f"steps={self.steps!r}", "an integer of at least 1", "pass steps=1 or more")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise PruningError(f"round_to={self.round_to!r}", "None or a positive integer such as 8",
                               "pass round_to=None or round_to=8")
        if not isinstance(self.max_layer_ratio, (int, float)) or not 0.0 < self.max_layer_ratio <= 1.0:
            raise PruningError(f"max_layer_ratio={self.max_layer_ratio!r}", "a number in (0, 1]",
                               "pass e.g. max_layer_ratio=0.9")
        if self.layer_ratios is not None:
            object.__setattr__(self, "layer_ratios", _layer_ratios(self.layer_ratios, self.strategy))
        if isinstance(self.sensitivity_weight, bool) or not isinstance(self.sensitivity_weight, (int, float)) or \
                not 0.0 <= self.sensitivity_weight <= 1.0:
            raise PruningError(f"sensitivity_weight={self.sensitivity_weight!r}", "a number in [0, 1]",
                               "pass e.g. sensitivity_weight=0.5")

    @property
    def ratios_by_layer(self) -> dict[str, float]:
        """``layer_ratios`` as a dict (empty when none are given)."""
        return dict(self.layer_ratios or ())

    @property
    def effective_head_ratio(self) -> float:
        return self.ratio if self.head_ratio is None else self.head_ratio


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PruningError(f"{name}={value!r}", "a fraction of channels in [0, 1)", f"pass e.g. {name}=0.5")


def _layer_ratios(value: Any, strategy: str) -> tuple[tuple[str, float], ...]:
    """``value`` (a dict or pairs) as sorted ``(name, ratio)`` pairs; a one-line PruningError if malformed."""
    if strategy not in PER_LAYER_STRATEGIES:
        raise PruningError(f"layer_ratios with strategy {strategy!r}",
                           f"per-layer ratios with strategy {', '.join(map(repr, PER_LAYER_STRATEGIES))}",
                           "use strategy 'uniform', or drop layer_ratios")
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple)) or \
            not all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise PruningError(f"layer_ratios={value!r}", "a dict or pairs of layer name -> fraction removed",
                           "pass e.g. layer_ratios={'features.0': 0.5}")
    names = [name for name, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PruningError(f"layer_ratios naming {repeated[0]!r} twice", "each layer named once",
                           "keep one ratio per layer")
    for name, ratio in pairs:
        _check_fraction(f"layer_ratios[{name!r}]", ratio)
    return tuple(sorted((name, float(ratio)) for name, ratio in pairs))


@dataclass(frozen=True)
class PruneResult:
    """A pruned model and what pruning measurably did to it. FLOPs are MACs for one sample (see profile)."""

    model: nn.Module
    config: PruningConfig
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    notes: tuple[str, ...] = ()
    objective: str | None = None  # set by solve_target
    target: float | None = None
    reached: bool | None = None
    evaluations: int = 0

    @property
    def ratio(self) -> float:
        return self.config.ratio

    @property
    def param_reduction(self) -> float:
        """``params_before / params_after``: 2.0 means half the parameters."""
        return self.params_before / max(self.params_after, 1)

    @property
    def flop_reduction(self) -> float:
        return self.flops_before / max(self.flops_after, 1)

    def reduction(self, objective: str = "params") -> float:
        return self.param_reduction if objective == "params" else self.flop_reduction

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as plain values (for reports and JSON)."""
        return {
            "config": self.config.to_dict(), "params_before": self.params_before, "params_after": self.params_after,
            "flops_before": self.flops_before, "flops_after": self.flops_after,
            "param_reduction": self.param_reduction, "flop_reduction": self.flop_reduction,
            "notes": list(self.notes), "objective": self.objective, "target": self.target, "reached": self.reached,
            "evaluations": self.evaluations,
        }
