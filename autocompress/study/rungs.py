"""The rung rule: a multi-fidelity stop that judges a trial at fixed epochs against the study's earlier trials.

Optuna's pruners and ``trial.report`` refuse multi-objective studies (``NotImplementedError`` in optuna 5), so
each trial writes its per-epoch metric into its own user attribute ``curve`` as epochs finish, and records its
pruned model's figures in ``pruned``. The rule reads both from the study's storage, so it sees the trials of
every worker and of earlier runs of a resumed study.

At each rung (after epochs 1 and 3 by default; rungs at or past the epoch budget save nothing and are skipped)
a trial's best metric so far is compared with the study's other trials, in the spirit of successive halving:

- **Gain bound.** The largest gain from a rung to the final measured metric (after quantization) that a
  completed trial showed, times :data:`GAIN_MARGIN`, among the trials that stood no higher at that rung than
  this one (a model that starts lower recovers more: mild trials' gains would stop the heavily pruned ones the
  front needs). Only trials that trained to their end (budget or patience) count: a stopped trial's gain was cut
  short. With fewer than :data:`MIN_TRIALS` such trials the bound is
  ``default_gain`` (infinite: no rung stop until the study has seen enough trials). *Optimistic final* = best
  so far + the bound.
- **(a) Threshold.** Stop when the optimistic final cannot reach the metric the threshold needs.
- **(b) Front.** Stop when a completed feasible trial with the same quantization mode and embedding storage,
  whose pruned model has no more parameters and no more MACs than this trial's, measured a final metric at
  least as good as this trial's optimistic final: this trial could at best tie it (size and MACs follow the
  pruned structure under one quantization mode; latency and energy are taken to follow them too).
- **(c) Rank.** ASHA-like: stop when fewer than 1/``eta`` of the trials that reached this rung were worse there,
  *and* its likely final (best so far + the gain at the (1 − 1/eta) quantile of the gains, times the margin)
  cannot beat the best feasible trial with a structure no larger than its own (as in (b)).

The seed trial (trial 0, the selector's plan) is never stopped by rungs. The pruned figures of the running
trial are computed only when (b) or (c) has a candidate to compare against (one extra pruning of a copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

RUNGS = (1, 3)  # epochs after which a trial is judged
ETA = 3  # successive halving's reduction factor: the bottom 1/eta of a rung may be stopped by rank
MIN_TRIALS = 3  # completed full-length trials with data at a rung before the rule trusts their gains
GAIN_MARGIN = 1.5  # the largest gain seen, stretched: a few trials underestimate the largest possible gain
CURVE_ATTR = "curve"  # a trial's metric after epoch 1, 2, ... (None for a non-finite one), written as they finish
PRUNED_ATTR = "pruned"  # {"params", "flops", "quantization", "embeddings"}: the pruned structure, before training
FULL_RUN = ("max_epochs", "patience")  # distillation stops after which a trial's rung-to-final gain counts


def structure_figures(task: Any, plan: Any) -> dict[str, int]:
    """Parameters and MACs of the model ``plan`` trains: the task's model (vocabulary trimmed when the plan says
    so) pruned by the plan, as the pipeline prunes it. The same numbers as ``run_plan``'s ``pruning`` record."""
    from ..pipeline import pruning_source
    from ..profile import count_flops, count_params
    from ..pruning import prune
    from ..pruning.core import example

    source = pruning_source(task, plan)
    if plan.pruning.ratio > 0:
        pruned = prune(source, task.example_input, plan.pruning, progress=False)
        return {"params": int(pruned.params_after), "flops": int(pruned.flops_after)}
    return {"params": count_params(source), "flops": count_flops(source, example(task.example_input))}


def structure_key(plan: Any) -> dict[str, str]:
    """What must match for two trials' pruned figures to rank their costs: quantization mode, embedding storage."""
    from .space import embedding_choice

    return {"quantization": plan.quantization_mode, "embeddings": embedding_choice(plan.embeddings)}


@dataclass(frozen=True)
class _Peer:
    """Another trial of the study as the rule sees it; scores are metric values signed so that higher is better."""

    number: int
    at_rung: float | None  # best score up to the rung; None without a curve that long
    final: float | None  # the measured metric's score (complete trials only)
    full_run: bool  # trained to its end: its rung-to-final gain counts
    feasible: bool
    pruned: dict[str, Any] | None


class RungRule:
    """An epoch callback ``(epoch, value) -> reason | None`` that stops a trial at a rung (see the module doc).

    ``study``: the Optuna study (read afresh at each rung); ``number``: this trial's number; ``target``: the
    metric the threshold needs; ``structure``: computes this trial's pruned figures (``{"params", "flops"}``)
    when asked, at most once; ``key``: :func:`structure_key` of its plan. ``reason`` says what stopped it.
    """

    def __init__(self, study: Any, number: int, target: float, higher_is_better: bool, max_epochs: int, *,
                 key: dict[str, str] | None = None, structure: Callable[[], dict[str, int] | None] | None = None,
                 seeded: bool = False, rungs: Sequence[int] = RUNGS, eta: int = ETA, min_trials: int = MIN_TRIALS,
                 margin: float = GAIN_MARGIN, default_gain: float = math.inf, metric_name: str = "metric") -> None:
        self.study, self.number, self.target, self.higher = study, number, target, higher_is_better
        self.rungs = tuple(r for r in sorted(set(rungs)) if 0 < r < max_epochs)
        self.key, self._structure, self.seeded = key, structure, seeded
        self.eta, self.min_trials, self.margin, self.default_gain = eta, min_trials, margin, default_gain
        self.metric_name = metric_name
        self.values: list[float] = []
        self._mine: dict[str, int] | None = None
        self._mine_done = False
        self.reason: str | None = None
        self.checks: list[dict[str, Any]] = []  # what each rung compared, for the trial's record

    def _score(self, value: float) -> float:
        return value if self.higher else -value

    def _shown(self, score: float) -> float:
        return score if self.higher else -score

    def __call__(self, epoch: int, value: float) -> str | None:
        self.values.append(float(value))
        if self.seeded or epoch not in self.rungs or self.reason:
            return None
        finite = [self._score(v) for v in self.values if math.isfinite(v)]
        if not finite:
            return None  # a diverged run stops on its own
        self.reason = self._judge(epoch, max(finite))
        return self.reason

    # ----------------------------------------------------------------------------------------------- the rule
    def _judge(self, rung: int, best: float) -> str | None:
        peers = self._peers(rung)
        gains = sorted(p.final - p.at_rung for p in peers  # type: ignore[operator]
                       if p.final is not None and p.at_rung is not None and p.full_run)
        # The threshold is judged only on trials that stood no higher at this rung: a heavily pruned model
        # recovers far more after epoch 1 than the mild trials that finish first (digits: a trial at 0.80 after
        # epoch 1 ended feasible at 0.99, where the mild trials had gained at most 0.04; stopping it cost the
        # study its best FLOPs point).
        below = sorted(p.final - p.at_rung for p in peers  # type: ignore[operator]
                       if p.final is not None and p.at_rung is not None and p.full_run and p.at_rung <= best)
        reach_bound, front_bound = self._bound(below), self._bound(gains)
        reach, optimistic = best + reach_bound, best + front_bound
        check: dict[str, Any] = {"rung": rung, "best": self._shown(best), "trials_with_gains": len(gains),
                                 "trials_no_higher": len(below)}
        if math.isfinite(reach):
            check["reach"] = self._shown(reach)
        if math.isfinite(optimistic):
            check["optimistic"] = self._shown(optimistic)
        self.checks.append(check)
        head = f"rung stop at epoch {rung}: best {self.metric_name} {self._shown(best):.4f}, at most "
        gain_of = f"{self.margin:g}x the largest epoch-{rung}-to-final gain of"
        if math.isfinite(reach) and reach < self._score(self.target):
            return (f"{head}{self._shown(reach):.4f} at the end (+{reach_bound:.4f}: {gain_of} {len(below)} "
                    f"completed trials that stood no higher at epoch {rung}) cannot reach the "
                    f"{self.target:.4f} the threshold needs")
        if not math.isfinite(optimistic):
            return None
        better = [p for p in peers if p.feasible and p.final is not None and p.final >= optimistic
                  and self._comparable(p)]
        if better and (mine := self._structure_now()) is not None:
            smaller = [p for p in better if _no_larger(p.pruned, mine)]
            if smaller:
                top = max(smaller, key=lambda p: (p.final, -p.number))
                return (f"{head}{self._shown(optimistic):.4f} at the end (+{front_bound:.4f}: {gain_of} "
                        f"{len(gains)} completed trials) cannot beat feasible trial {top.number} "
                        f"({self.metric_name} {self._shown(top.final):.4f}, pruned to {_figures(top.pruned)} "
                        f"against this trial's {_figures(mine)}, same quantization and embeddings)")
        return self._rank(rung, best, peers, gains)

    def _bound(self, gains: list[float]) -> float:
        """The optimistic gain: the largest of ``gains`` times the margin, or the default with too few."""
        return max(0.0, gains[-1]) * self.margin if len(gains) >= self.min_trials else self.default_gain

    def _rank(self, rung: int, best: float, peers: list[_Peer], gains: list[float]) -> str | None:
        reached = [p for p in peers if p.at_rung is not None]
        if not gains or len(gains) < self.min_trials:
            return None
        worse = sum(p.at_rung < best for p in reached)  # type: ignore[operator]
        if len(reached) < self.eta or worse * self.eta >= len(reached):
            return None
        quantile = max(0, -(-len(gains) * (self.eta - 1) // self.eta) - 1)  # the (1 - 1/eta) quantile, in integers
        likely_gain = max(0.0, gains[quantile]) * self.margin
        likely = best + likely_gain
        feasible = [p for p in peers if p.feasible and p.final is not None and p.final >= likely
                    and self._comparable(p)]
        if not feasible or (mine := self._structure_now()) is None:
            return None
        smaller = [p for p in feasible if _no_larger(p.pruned, mine)]
        if not smaller:
            return None
        top = max(smaller, key=lambda p: (p.final, -p.number))
        return (f"rung stop at epoch {rung}: best {self.metric_name} {self._shown(best):.4f}, only {worse} of "
                f"the {len(reached)} trials that reached epoch {rung} were worse there, and its likely "
                f"final {self._shown(likely):.4f} cannot beat feasible trial {top.number} "
                f"({self._shown(top.final):.4f}, pruned to {_figures(top.pruned)} against {_figures(mine)})")

    def _comparable(self, peer: _Peer) -> bool:
        if self.key is None or not peer.pruned:
            return False
        return all(peer.pruned.get(k) == v for k, v in self.key.items())

    def _structure_now(self) -> dict[str, int] | None:
        if not self._mine_done:
            self._mine_done = True
            self._mine = self._structure() if self._structure is not None else None
        return self._mine

    # ----------------------------------------------------------------------------------------------- reading
    def _peers(self, rung: int) -> list[_Peer]:
        """The study's other trials, read from its storage now (other workers' and earlier runs' included)."""
        from .objective import is_feasible

        peers = []
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number == self.number:
                continue
            attrs = trial.user_attrs
            curve = [self._score(v) for v in (attrs.get(CURVE_ATTR) or [])[:rung]
                     if v is not None and math.isfinite(v)]
            at_rung = max(curve) if len(attrs.get(CURVE_ATTR) or []) >= rung and curve else None
            complete = trial.state.name == "COMPLETE" and trial.values is not None
            final = self._score(float(trial.values[0])) if complete and math.isfinite(trial.values[0]) else None
            stopped = (attrs.get("distillation") or {}).get("stopped_because")
            peers.append(_Peer(number=trial.number, at_rung=at_rung, final=final,
                               full_run=stopped in FULL_RUN and not attrs.get("aborted"),
                               feasible=bool(is_feasible(trial)), pruned=attrs.get(PRUNED_ATTR)))
        return peers


def _no_larger(peer: dict[str, Any] | None, mine: dict[str, int]) -> bool:
    """A peer's pruned model has no more parameters and no more MACs than this trial's."""
    return bool(peer) and all(isinstance(peer.get(k), (int, float)) and peer[k] <= mine[k]  # type: ignore[union-attr]
                              for k in ("params", "flops"))


def _figures(pruned: dict[str, Any] | None) -> str:
    def shown(key: str) -> str:
        value = (pruned or {}).get(key)
        return f"{value:,}" if isinstance(value, int) else "?"

    return f"{shown('params')} params / {shown('flops')} MACs"
