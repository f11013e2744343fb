"""The compression plan: one frozen, versioned, JSON-serialisable record of what to do to a model.

A plan nests the three module configs: a pruning action (technique, strategy, ratio, steps), a distillation
action (technique, alpha, temperature, stop mode, patience) and a quantization action (none, dynamic, static,
qat). An Optuna trial's parameters map one-to-one onto a plan, and every trial and exported model carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config, register_config
from .distillation import DistillationConfig
from .embeddings import EmbeddingConfig
from .errors import ConfigError
from .pruning import PruningConfig, technique_name
from .quantization import NoQuantization, QuantizationConfig


@register_config("plan")
@dataclass(frozen=True)
class Plan(Config):
    """What to do: trim the vocabulary, prune, then distil (QAT inside the loop when quantization is ``qat``),
    then quantize (int8 embeddings with it, when ``embeddings.int8``)."""

    VERSION = 1
    pruning: PruningConfig = field(default_factory=PruningConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    quantization: QuantizationConfig = field(default_factory=NoQuantization)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)  # records without it: nothing done

    def __post_init__(self) -> None:
        for name, cls in (("pruning", PruningConfig), ("distillation", DistillationConfig),
                          ("quantization", QuantizationConfig), ("embeddings", EmbeddingConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"plan.{name} of type {type(getattr(self, name)).__name__}",
                                  f"a {cls.__name__} record", "build the plan from the module configs")

    @property
    def quantization_mode(self) -> str:
        return self.quantization.MODE

    def summary(self) -> str:
        """One line, e.g. ``prune lamp/global 42% · distil hard 15 ep · quant qat``."""
        p, d = self.pruning, self.distillation
        technique = d.technique.name
        extras = []
        if hasattr(d.technique, "temperature"):
            extras.append(f"T={d.technique.temperature:g}")
        if hasattr(d.technique, "alpha"):
            extras.append(f"α={d.technique.alpha:g}")
        distil = " ".join([technique, *extras])
        steps = f" ×{p.steps}" if p.steps > 1 else ""
        e = self.embeddings
        embeddings = " · ".join(part for part, on in (("trim vocab", e.trim_vocabulary), ("int8 emb", e.int8)) if on)
        heads = ""
        if p.head_ratio is not None and p.head_ratio != p.ratio:
            heads = f" heads {100 * p.head_ratio:.0f}%"
        if p.layer_ratios:  # per-layer widths: their range, and the sensitivity dial that made them
            values = [r for _, r in p.layer_ratios]
            dial = f" sens {p.sensitivity_weight:g}" if p.sensitivity_weight else ""
            heads += f" (per layer {100 * min(values):.0f}-{100 * max(values):.0f}%{dial})"
        return (f"{embeddings + ' · ' if embeddings else ''}prune {technique_name(p.technique)}/{p.strategy} "
                f"{100 * p.ratio:.0f}%{heads}{steps} · distil {distil} · quant {self.quantization_mode}"
                f"{' (onnxruntime)' if self.quantization.backend == 'onnxruntime' else ''}")

    @classmethod
    def load(cls, data: dict[str, Any] | str) -> Plan:
        plan = Config.from_json(data) if isinstance(data, str) else Config.from_dict(data)
        if not isinstance(plan, Plan):
            raise ConfigError(f"a {type(plan).__name__} record", "a plan record (kind 'plan')",
                              "pass the plan JSON stored with a trial or an exported model")
        return plan
