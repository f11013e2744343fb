"""Bisection at the edge of the threshold: the study's best reduction lies where one more channel pruned would
cost more than the allowed drop, and that edge is found by bisection along the kept fraction.

After the start-up trials (seed, neighbours, edge design) have run, the study keeps one more trial queued while
the edge is not yet resolved (:func:`next_edge_params`):

- the **anchor** is the feasible trial with the lowest primary cost (the best reduction so far);
- its **family** is the trials with the same parameters except ``pruning.keep``;
- the next trial keeps the geometric mean of the anchor's kept fraction and that of the family's least pruned
  infeasible trial below it, or, with no infeasible trial there yet, :data:`STEP` times the anchor's (a step
  further);
- once the bracket is within :data:`RESOLUTION` (or the space's lowest kept fraction is reached), the family's
  **near miss** (an infeasible trial below the anchor that lost at most twice the allowed drop; the one with
  the lowest primary cost) is retried with more recovery: combined distillation from the original (T=4,
  α=0.5) where it was fine-tuned, then one more pruning step. A repaired trial that turns feasible becomes the
  anchor of its own family, and bisection goes on there;
- no more once every such trial has been tried, or when edge trials are :data:`MAX_SHARE` of the study's
  trials.

The sampler (TPE) explores the rest of the space; bisection spends the trials where the answers are. On digits,
the FLOPs study's best feasible trial (global 83%) had its infeasible neighbour at 85%: the cliff lies inside
those 2 points, where random proposals seldom land.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

KEEP = "pruning.keep"
EDGE_ATTR = "edge"  # an edge trial's user attribute: {"anchor": number, "below": number or None, "keep": k}
STEP = 0.8  # with no infeasible trial below the anchor: keep 0.8x the channels (the third neighbour's step)
RESOLUTION = 1.1  # the edge is resolved when the bracket's kept fractions are within 10% of each other
MAX_SHARE = 1 / 3  # bisection trials are at most this share of the study's trials
_SAME = 0.01  # kept fractions within 1% of each other are the same trial


def next_edge_params(trials: Sequence[Any], primary: int, keep_floor: float) -> tuple[dict[str, Any], dict] | None:
    """The next bisection trial's parameters and its :data:`EDGE_ATTR` record, or None when the edge is resolved.

    ``trials``: the study's trials (FrozenTrial-like: ``number``, ``state``, ``params``, ``values``,
    ``user_attrs``, ``constraints``); ``primary``: the index in ``values`` of the primary cost (lower is
    better); ``keep_floor``: the space's lowest kept fraction.
    """
    from .objective import is_feasible

    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None and KEEP in t.params
                and math.isfinite(t.values[primary])]
    feasible = [t for t in complete if is_feasible(t)]
    if not feasible:
        return None
    anchor = min(feasible, key=lambda t: (t.values[primary], t.number))
    keep = float(anchor.params[KEEP])
    key = _family(anchor.params)
    family = [t for t in trials if KEEP in t.params and _family(t.params) == key]
    below = [t for t in complete if _family(t.params) == key and not is_feasible(t) and float(t.params[KEEP]) < keep]
    lower = max(below, key=lambda t: float(t.params[KEEP]), default=None)
    if lower is None:
        new = max(keep_floor, keep * STEP)
    else:
        lower_keep = float(lower.params[KEEP])
        new = math.sqrt(keep * lower_keep) if keep / lower_keep > RESOLUTION else keep
    new = round(new, 4)
    moved = new < keep * (1 - _SAME) and not any(abs(float(t.params[KEEP]) - new) <= _SAME * new for t in family)
    if moved:
        record = {"anchor": anchor.number, "below": None if lower is None else lower.number, "keep": new}
        return {**anchor.params, KEEP: new}, record
    # The edge of this family is resolved: retry its near miss with more recovery.
    near = [t for t in below if 0 < _over(t) <= _allowed(t)]
    for miss in sorted(near, key=lambda t: (t.values[primary], t.number)):
        for repaired in _repairs(miss.params):
            # Tried: a trial agrees with it on every parameter it has (a parameter is suggested only where
            # it applies, so a run trial may lack one the repair names).
            if not any(t.params and all(t.params.get(k, v) == v for k, v in repaired.items()) for t in trials):
                return repaired, {"anchor": anchor.number, "below": miss.number, "keep": repaired[KEEP],
                                  "repair_of": miss.number}
    return None


def _over(trial: Any) -> float:
    """How far over the allowed drop a trial's metric drop is (its constraint, ``metric_drop - max_drop``)."""
    from .objective import CONSTRAINT_KEY, trial_constraints

    value = trial_constraints(trial).get(CONSTRAINT_KEY)
    return float(value) if isinstance(value, (int, float)) else math.inf


def _allowed(trial: Any) -> float:
    """The allowed drop (``metric_drop`` minus the constraint): a near miss lost at most twice it."""
    drop = trial.user_attrs.get("metric_drop")
    over = _over(trial)
    return max(0.0, float(drop) - over) if isinstance(drop, (int, float)) and math.isfinite(over) else 0.0


def _repairs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The near miss with more recovery, in order: combined distillation (T=4, α=0.5) where it was fine-tuned
    or hard-distilled, then one more pruning step."""
    from .space import STEPS_RANGE

    out = []
    if params.get("distillation.technique") in ("finetune", "hard"):
        out.append({**params, "distillation.technique": "combined", "distillation.temperature": 4.0,
                    "distillation.alpha": 0.5})
    if int(params.get("pruning.steps", STEPS_RANGE[1])) < STEPS_RANGE[1]:
        out.append({**params, "pruning.steps": int(params["pruning.steps"]) + 1})
    return out


def _family(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in params.items() if k != KEEP))


def enqueue_edge_trial(study: Any, trials_total: int, primary: int, keep_floor: float) -> dict | None:
    """An Optuna callback's work: enqueue the next bisection trial when none is waiting, the start-up trials have
    run and the study has room for it. Returns the record enqueued, or None."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    if optuna.trial.TrialState.WAITING in states or len(trials) >= trials_total:
        return None
    if sum(1 for t in trials if EDGE_ATTR in t.user_attrs) + 1 > MAX_SHARE * trials_total:
        return None
    found = next_edge_params(trials, primary, keep_floor)
    if found is None:
        return None
    params, record = found
    study.enqueue_trial(params, user_attrs={"seeded": False, EDGE_ATTR: record}, skip_if_exists=True)
    return record
