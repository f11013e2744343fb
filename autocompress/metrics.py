"""Task metrics: the built-in names and the user's callables, resolved to one shape.

A metric takes ``(logits, targets)`` for the whole evaluation set and returns a float.

A metric has a **scale** that says what a drop is measured in:

- ``"fraction"``: a value in [0, 1] (the built-in accuracy and F1). Drops are reported in percentage points:
  ``--max-drop 1`` allows 0.01.
- ``"raw"``: any other unit (a perplexity, a mean error in dollars). Drops are in the metric's own units:
  ``--max-drop 1`` allows 1.0. A callable metric is ``raw`` unless its task says ``metric_scale="fraction"``.

:func:`metric_drop` and :func:`metric_threshold` are the one home of that arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError, MetricError

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits`` (N×C) against integer ``targets`` (N)."""
    if targets.numel() == 0:
        return float("nan")
    return (logits.argmax(dim=-1) == targets).float().mean().item()


def f1_macro(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro-averaged F1 over the classes that occur in ``targets`` or in the predictions."""
    preds = logits.argmax(dim=-1)
    classes = torch.unique(torch.cat([preds, targets]))
    scores = []
    for c in classes:
        tp = ((preds == c) & (targets == c)).sum().item()
        fp = ((preds == c) & (targets != c)).sum().item()
        fn = ((preds != c) & (targets == c)).sum().item()
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(sum(scores) / len(scores)) if scores else float("nan")


BUILTIN_METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "f1": f1_macro}
SCALES = ("fraction", "raw")
DROP_UNITS = {"fraction": 100.0, "raw": 1.0}  # drop units per unit of the metric: points, or the metric's own


@dataclass(frozen=True)
class Metric:
    """A resolved metric: its name, the function and its direction."""

    name: str
    fn: MetricFn
    higher_is_better: bool = True
    classification: bool = True  # built-in metrics take class logits; the label-range check applies
    scale: str = "fraction"  # "fraction": a value in [0, 1], drops in points; "raw": drops in its own units

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        return float(self.fn(logits, targets))


def resolve_metric(metric: str | MetricFn, higher_is_better: bool = True, scale: str | None = None) -> Metric:
    """Turn a task's ``metric`` field into a :class:`Metric`, or raise a one-line :class:`MetricError`.

    ``scale`` (``"fraction"`` or ``"raw"``) defaults to ``fraction`` for the built-in metrics and ``raw`` for a
    callable.
    """
    if scale is not None and scale not in SCALES:
        raise MetricError(f"metric_scale {scale!r}", f"one of {', '.join(SCALES)} (fraction: a value in [0, 1] "
                          "whose drops are percentage points; raw: drops in the metric's own units)",
                          "set Task.metric_scale accordingly")
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        fn = BUILTIN_METRICS.get(metric.lower())
        if fn is None:
            raise MetricError(
                f"unknown metric {metric!r}",
                f"one of {', '.join(sorted(BUILTIN_METRICS))} or a callable (logits, targets) -> float",
                "set Task.metric to a known name or pass a function",
            )
        return Metric(metric.lower(), fn, True, True, scale or "fraction")
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        return Metric(name, metric, higher_is_better, False, scale or "raw")
    raise MetricError(
        f"metric of type {type(metric).__name__}",
        "a metric name ('accuracy', 'f1') or a callable (logits, targets) -> float",
        "set Task.metric accordingly",
    )


def _scale_of(metric: Mapping[str, Any]) -> str:
    # Profiles stored before scales existed hold built-in fraction metrics only.
    return metric.get("scale") or "fraction"


def drop_unit(metric: Mapping[str, Any]) -> str:
    """What a drop of ``metric`` (a profile's metric record) is counted in: ``points`` or ``units``."""
    return "points" if _scale_of(metric) == "fraction" else "units"


def metric_drop(original: Mapping[str, Any], value: float) -> float:
    """How much worse ``value`` is than the ``original`` metric record (``{"value", "higher_is_better",
    "scale"}``): in points for a fraction metric, in the metric's units for a raw one; negative when better."""
    sign = 1.0 if original.get("higher_is_better", True) else -1.0
    return sign * (float(original["value"]) - float(value)) * DROP_UNITS[_scale_of(original)]


def metric_threshold(original: Mapping[str, Any], max_drop: float) -> float:
    """The worst metric value that still holds a ``max_drop`` (points or units, see :func:`metric_drop`)."""
    step = max_drop / DROP_UNITS[_scale_of(original)]
    value = float(original["value"])
    return value - step if original.get("higher_is_better", True) else value + step


def check_max_drop(original: Mapping[str, Any], max_drop: float) -> None:
    """A drop of 100 points or more allows anything for a fraction metric: refuse it. Raw metrics take any
    non-negative drop in their own units."""
    if _scale_of(original) == "fraction" and not 0 <= max_drop < 100:
        raise ConfigError(f"max drop {max_drop!r}", "metric points in [0, 100), e.g. 1 for one point",
                          "pass e.g. --max-drop 1")
