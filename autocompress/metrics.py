"""Task metrics: the built-in names and the user's callables, resolved to one shape.

A metric takes ``(logits, targets)`` for the whole evaluation set and returns a float. Built-in metrics are
reported in [0, 1]; "points" of drop are percentage points (0.01 = 1 point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import MetricError

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


@dataclass(frozen=True)
class Metric:
    """A resolved metric: its name, the function and its direction."""

    name: str
    fn: MetricFn
    higher_is_better: bool = True
    classification: bool = True  # built-in metrics take class logits; the label-range check applies

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        return float(self.fn(logits, targets))


def resolve_metric(metric: str | MetricFn, higher_is_better: bool = True) -> Metric:
    """Turn a task's ``metric`` field into a :class:`Metric`, or raise a one-line :class:`MetricError`."""
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
        return Metric(metric.lower(), fn, True, True)
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        return Metric(name, metric, higher_is_better, False)
    raise MetricError(
        f"metric of type {type(metric).__name__}",
        "a metric name ('accuracy', 'f1') or a callable (logits, targets) -> float",
        "set Task.metric accordingly",
    )
