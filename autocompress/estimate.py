"""A performance-impact estimate before the study: the reduction reachable at the threshold, with a range.

Made from a short probe rather than from the study's full training (seconds on a small CNN):

1. **Pruning probe.** The model is pruned uniformly (magnitude, the same share of every layer's channels: the
   hand recipe's pruning) at each ratio of :data:`PROBE_RATIOS`; each pruned copy is fine-tuned for one epoch
   of training batches (:func:`probe_steps`, within :data:`PROBE_STEPS`; Adam, lr 1e-3, the task's loss) and
   its metric measured on :data:`EVAL_BATCHES` evaluation batches. Untrained, a pruned CNN collapses to chance
   already at 50% (digits: 0.35 accuracy), so the untrained metric says nothing; an epoch orders the ratios
   (digits: 0.98 at 50%, 0.88 at 80%, 0.48 at 90%).
2. **The ratios.** The study's training recovers much of what the probe still misses, the more the longer its
   budget (:data:`DROP_ENDS`): the point stands for the largest ratio whose probe drop is within the budget's
   second figure (high budget: 25 points, low: 10), the range's low end for the largest within its first
   (10, 4), and its high end for the next probe ratio past the point's (the edge lies before it).
   ``studies/results`` sets each estimate beside what the study found.
3. **Quantization gain**, the best mode the search space offers, measured on a static int8 copy of the pruned
   model calibrated on the example input: its size, and its latency (the selector's constant
   :data:`~autocompress.selection.INT8_LATENCY_GAIN` only where quantization fails); none for MACs.
4. **The reduction** at each of the three ratios: for size the measured int8 size of the pruned copy, for MACs
   the counted MACs, for latency and energy the batch-64 latency of the pruned copy against the original's,
   measured side by side (median after warm-up), times the quantization gain. The study's search (bisection at
   the threshold's edge, the near miss repaired by distillation) reaches the point: with the point at the
   geometric mean of the two ends, as first built, the digits studies found 21-49% more than estimated.

A model the probe cannot prune (no layer the uniform strategy reaches) gets an estimate of what quantization
alone gives, with the reason.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

PROBE_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
PROBE_STEPS = (20, 200)  # fine-tuning steps each pruned copy gets: one epoch of the training set, within these
PROBE_LR = 1e-3
EVAL_BATCHES = 4
# Probe drops (points) the study's training recovers to the threshold, per budget: (the range's low end, the
# point). Calibrated on the two CNN benchmarks: digits at the high budget (15 epochs) found its edge where the
# one-epoch probe dropped 25 points; mnist at the low budget (5 epochs) between 2 and 16 (at 70% and 80%).
DROP_ENDS = {"high": (10.0, 25.0), "low": (4.0, 10.0)}


@dataclass(frozen=True)
class Estimate:
    """The reduction of ``objective`` expected at the threshold: ``low`` to ``high``, ``point`` between."""

    objective: str
    low: float
    point: float
    high: float
    ratio_range: tuple[float, float]  # the uniform pruning ratios the two ends stand for
    quantization: str  # the mode whose gain is counted
    probe: tuple[tuple[float, float], ...] = ()  # (ratio, drop in points after the probe's short fine-tuning)
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())
    steps: int = 0  # the probe's fine-tuning steps per ratio

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "low": self.low, "point": self.point, "high": self.high,
                "ratio_range": list(self.ratio_range), "quantization": self.quantization,
                "probe": [list(p) for p in self.probe], "seconds": self.seconds, "notes": list(self.notes),
                "steps": self.steps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        return cls(objective=data["objective"], low=data["low"], point=data["point"], high=data["high"],
                   ratio_range=tuple(data["ratio_range"]), quantization=data["quantization"],  # type: ignore[arg-type]
                   probe=tuple(tuple(p) for p in data.get("probe", ())),  # type: ignore[misc]
                   seconds=data.get("seconds", 0.0), notes=tuple(data.get("notes", ())),
                   steps=data.get("steps", 0))

    def describe(self) -> str:
        r0, r1 = self.ratio_range
        return (f"estimate: {self.objective} {self.point:.3g}x reachable at the threshold (range {self.low:.3g}x-"
                f"{self.high:.3g}x: uniform pruning {r0:.0%}-{r1:.0%} + {self.quantization} int8), "
                f"from a {self.steps}-step probe in {self.seconds:.1f}s")


def _metric_on(model: Any, batches: list[Any], metric: Any) -> float:
    from .profile import evaluate

    return evaluate(model, batches, metric)


def probe_steps(task: Any) -> int:
    """One epoch of the task's training batches, within :data:`PROBE_STEPS`: a fixed count was a third of an
    epoch on mnist and the probe then saw 60% pruning lose 31 points where the study recovered 72%."""
    try:
        batches = len(task.train_loader(seed=0))
    except TypeError:  # an iterable without a length
        batches = PROBE_STEPS[0]
    return max(PROBE_STEPS[0], min(PROBE_STEPS[1], batches))


def _short_recovery(model: Any, task: Any, steps: int) -> Any:
    """``model`` (a pruned copy, changed in place) fine-tuned for ``steps`` training batches."""
    import torch

    from ._tensors import call_model, logits_of

    loss_fn = task.loss_fn
    model.train()
    params = [p for p in model.parameters() if p.is_floating_point()]
    for p in params:  # a frozen model (inference flags, a frozen backbone) is recovered whole, as distil does
        p.requires_grad_(True)
    if not params:
        return model.eval()
    optimizer = torch.optim.Adam(params, lr=PROBE_LR)
    with torch.enable_grad():
        for x, y in itertools.islice(itertools.cycle(task.train_loader(seed=0)), steps):
            optimizer.zero_grad()
            loss_fn(logits_of(call_model(model, x)), y).backward()
            optimizer.step()
    return model.eval()


def applies(original: Any) -> bool:
    """Whether the estimate is made: CNNs and MLPs, which the uniform probe prunes. A transformer's widths are
    tied to its heads and hidden size, and its route starts with the embeddings (not estimated yet)."""
    return original.arch_type != "transformer"


def estimate(task: Any, original: Any, requirements: Any, quantization_modes: tuple[str, ...] = ("none",)
             ) -> Estimate:
    """The estimate for ``task``'s model (profile ``original``) under ``requirements`` (objective, max drop),
    counting the best of ``quantization_modes`` (the study's search space). See :func:`applies`."""
    from .metrics import metric_drop
    from .profile import count_flops, measure_latency
    from .pruning import PruningConfig, PruningError, PruningWarning, prune
    from .selection import INT8_LATENCY_GAIN, int8_copy, quantized_size_reduction

    started = time.perf_counter()
    steps = probe_steps(task)
    objective = requirements.objective
    metric = task.resolved_metric
    batches = list(itertools.islice(iter(task.eval_loader()), EVAL_BATCHES))
    base = _metric_on(task.model, batches, metric)
    reference = {"value": base, "higher_is_better": original.metric.get("higher_is_better", True),
                 "scale": original.metric.get("scale")}
    probe: list[tuple[float, float, Any]] = []
    notes: list[str] = []
    for ratio in PROBE_RATIOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PruningWarning)  # the probe's copies are thrown away
                pruned = prune(task.model, task.example_input, PruningConfig(technique="magnitude",
                               strategy="uniform", ratio=ratio), progress=False).model
        except PruningError as exc:
            notes.append(f"the probe cannot prune uniformly ({exc}); quantization alone counted")
            break
        _short_recovery(pruned, task, steps)
        probe.append((ratio, metric_drop(reference, _metric_on(pruned, batches, metric)), pruned))
    # A threshold looser than 1 point loosens both ends by as much.
    low_drop, point_drop = DROP_ENDS.get(requirements.budget, DROP_ENDS["high"])
    within = [p for p in probe if p[1] <= low_drop + requirements.max_drop - 1.0]
    recoverable = [p for p in probe if p[1] <= point_drop + requirements.max_drop - 1.0]
    point_end = max(recoverable, key=lambda p: p[0]) if recoverable else None
    beyond = [p for p in probe if point_end is None or p[0] > point_end[0]]
    ends = [max(within, key=lambda p: p[0]) if within else None, point_end,
            min(beyond, key=lambda p: p[0]) if beyond else point_end]
    mode = _best_mode(objective, quantization_modes)

    def reduction(end: tuple[float, float, Any] | None) -> float:
        model = task.model if end is None else end[2]
        if objective == "size":
            if mode in ("static", "qat", "dynamic"):
                measured = quantized_size_reduction(original, model, task.example_input, mode)
                if measured is not None:
                    return measured
            from .profile import serialized_size_mb

            return original.size_mb / serialized_size_mb(model)
        if objective == "flops":
            return original.flops / max(1, count_flops(model, task.example_input))
        gain = INT8_LATENCY_GAIN.get(mode, 1.0)
        timed = model
        if mode in ("static", "qat"):  # time the int8 copy itself: the selector's 1.5x was 2.5x off on mnist
            timed = int8_copy(model, task.example_input)
            gain = 1.0 if timed is not None else gain
            timed = model if timed is None else timed
        elif end is None:
            return gain
        # side by side: the original and the pruned copy timed one after the other in this process
        before = measure_latency(task.model, task.example_input, batch=64)
        after = measure_latency(timed, task.example_input, batch=64)
        return before / after * gain

    low, point, high = (reduction(end) for end in ends)
    low, high = min(low, point), max(high, point)
    ratio_range = (ends[0][0] if ends[0] else 0.0, ends[1][0] if ends[1] else 0.0)
    return Estimate(objective=objective, low=round(low, 3), point=round(point, 3), high=round(high, 3),
                    ratio_range=ratio_range, quantization=mode, steps=steps,
                    probe=tuple((r, round(d, 3)) for r, d, _ in probe),
                    seconds=round(time.perf_counter() - started, 2), notes=tuple(notes))


def estimate_or_reason(task: Any, original: Any, requirements: Any, quantization_modes: tuple[str, ...] = ("none",)
                       ) -> tuple[Estimate | None, str | None]:
    """:func:`estimate`, or None and the reason when the probe fails on this model or data.

    The estimate is advice: a study or a plan goes on without it. The user's model and task may raise anything
    on the probe's pruned and briefly trained copies (a model that rejects some inputs, a loss that fails on a
    pruned output), so every exception is caught here and its description returned; the trials then meet the
    same failure with their own record of it.
    """
    from .errors import describe_error

    if not applies(original):
        return None, "no estimate for transformers yet (their route starts with the embeddings)"
    try:
        return estimate(task, original, requirements, quantization_modes), None
    except Exception as exc:  # advice only: see the docstring; the reason is kept and shown
        return None, f"no estimate: the probe failed ({describe_error(exc)})"


def _best_mode(objective: str, modes: tuple[str, ...]) -> str:
    """The mode whose gain the estimate counts: static (or QAT) int8 where offered, else dynamic, else none."""
    for mode in ("static", "qat", "dynamic"):
        if mode in modes and (objective != "flops"):
            return mode
    return "none"
