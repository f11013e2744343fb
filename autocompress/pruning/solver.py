"""The target solver: the pruning ratio that makes a model a given factor smaller in parameters or FLOPs.

Each try prunes a copy and measures its real counts (no estimates); the ratio is found by bisection guided by
log-linear interpolation. Attention heads go whole, so the reduction jumps where one more head per layer goes;
at such a jump the solver holds the head count and moves the other widths instead.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .._tensors import ModelInput
from ..config import Config
from ..profile import count_flops, count_params
from ..progress import progress_bar
from .config import OBJECTIVES, PruneResult, PruningConfig, strategy_named
from .core import UNIFORM_NOTE, example, output_shapes, run
from .errors import PruningError, PruningWarning
from .graph import heads_to_remove
from .heads import STRATEGY as HEADS_MLP
from .heads import head_units
from .importance import technique_config
from .transformers import initial_heads


SOLVER_TOLERANCE = 0.02  # how close to the asked fold the solver must land (either side)


def solve_above(model: nn.Module, example_input: ModelInput, technique: Config | str, strategy: str,
                objective: str, fold: float, round_to: int | None = None, progress: bool = False,
                head_ratio: float | None = None) -> PruneResult:
    """:func:`solve_target` aimed just above ``fold``: the solver lands within its tolerance on either side of what
    it is given, so asking for ``fold × (1 + tolerance)`` lands at ``fold`` or past it."""
    return solve_target(model, example_input, technique, strategy, objective=objective,
                        target=fold * (1 + SOLVER_TOLERANCE), tolerance=SOLVER_TOLERANCE, round_to=round_to,
                        progress=progress, head_ratio=head_ratio)


def solve_target(model: nn.Module, example_input: ModelInput, technique: Config | str = "magnitude",
                 strategy: str = "global", objective: str = "params", target: float = 2.0,
                 tolerance: float = 0.05, round_to: int | None = None, max_ratio: float = 0.95,
                 max_layer_ratio: float = 0.9, max_evals: int = 24, widen: bool = True,
                 progress: bool = True, head_ratio: float | None = None) -> PruneResult:
    """Find the pruning ratio that makes ``model`` ``target`` times smaller in ``objective`` (within
    ``tolerance``, relative), measuring the real counts of a pruned copy at each try (bisection on the ratio).

    ``head_ratio`` holds the share of attention heads removed while the ratio moves the other widths (a plan that
    prunes MLP channels first); if the target is out of reach that way, the heads follow the ratio again.

    Attention heads come in whole units, so the reduction jumps as a head goes; the solver then holds the head
    count and moves the other widths. If the strategy cannot reach the target, it widens to ``global`` (when
    ``widen``); if that fails too, the result has ``reached=False`` and a note saying what was reached and why.
    """
    if objective not in OBJECTIVES:
        raise PruningError(f"objective {objective!r}", f"one of {', '.join(OBJECTIVES)}", "pass objective='params'")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 1.0:
        raise PruningError(f"target {target!r}", "a reduction factor above 1 (2.0 = half)", "pass e.g. target=2.0")
    if not 0 < tolerance < 1:
        raise PruningError(f"tolerance {tolerance!r}", "a relative tolerance in (0, 1)", "pass e.g. 0.05")
    if not 0 < max_ratio < 1:
        raise PruningError(f"max_ratio {max_ratio!r}", "a fraction in (0, 1)", "pass e.g. 0.95")
    technique = technique_config(technique) if isinstance(technique, str) else technique
    base = PruningConfig(technique=technique, strategy=strategy, ratio=0.0, round_to=round_to,
                         max_layer_ratio=max_layer_ratio, head_ratio=head_ratio)
    x = example(example_input)
    reference = output_shapes(model, x)
    before = (count_params(model), count_flops(model, x))
    solver = _Solver(model, x, objective, float(target), tolerance, max_evals, before, reference)
    with progress_bar(f"solving {target}x {objective}", total=max_evals, enabled=progress) as bar:
        solver.bar = bar
        try:
            result, why = solver.search(base, max_ratio)
        except PruningError as exc:  # e.g. the strategy finds no layer of its kind in this model
            if not widen or strategy == "global":
                raise
            solver.max_evals += max_evals  # the widened search gets a budget of its own
            result, why = solver.search(base.replace(strategy="global"), max_ratio)
            notes = [f"{exc}; widened to 'global'"] + ([why] if why else [])
        else:
            notes = [why] if why else []
            if not solver.hit(result) and head_ratio is not None:
                solver.max_evals += max_evals
                released, why = solver.search(base.replace(head_ratio=None), max_ratio)
                if solver.hit(released) or solver.error(released) < solver.error(result):
                    notes = [f"with {100 * head_ratio:.0f}% of heads held, {strategy!r} reaches at most "
                             f"{result.reduction(objective):.2f}x {objective}; the heads follow the ratio"]
                    notes += [why] if why else []
                    result = released
            if not solver.hit(result) and widen and strategy != "global":
                solver.max_evals += max_evals
                widened, why = solver.search(base.replace(strategy="global"), max_ratio)
                if solver.hit(widened) or solver.error(widened) < solver.error(result):
                    notes = [f"strategy {strategy!r} could not reach {target}x {objective} (best "
                             f"{result.reduction(objective):.2f}x); widened to 'global'"] + ([why] if why else [])
                    result = widened
    # Every figure is measured on the returned model itself; a params search did not count its FLOPs yet.
    final = result if objective == "flops" else dataclasses.replace(result, flops_after=count_flops(result.model, x))
    for note in final.notes:
        if note != UNIFORM_NOTE:
            warnings.warn(note, PruningWarning, stacklevel=2)
    reached = solver.hit(final)
    if not reached:
        notes = notes or [f"reached {final.reduction(objective):.2f}x {objective}, not {target}x"]
        warnings.warn(f"target {target}x {objective} not reached: {notes[-1]}", PruningWarning, stacklevel=2)
    return dataclasses.replace(final, notes=tuple(notes) + final.notes, objective=objective, target=float(target),
                               reached=reached, evaluations=solver.evals)


class _Solver:
    """The state of one search: the model, what counts as a hit, the evaluations spent so far."""

    def __init__(self, model: nn.Module, x: ModelInput, objective: str, target: float, tolerance: float,
                 max_evals: int, before: tuple[int, int], reference: list[torch.Size]) -> None:
        self.model, self.x, self.objective, self.target = model, x, objective, target
        self.tolerance, self.max_evals, self.before, self.reference = tolerance, max_evals, before, reference
        self.evals, self.bar = 0, None
        self.head_counts = sorted(set(initial_heads(model).values()))
        self.unit_counts = sorted(set(head_units(model).values()))  # heads_mlp's: heads, or KV groups under GQA

    def reduction(self, result: PruneResult) -> float:
        return result.reduction(self.objective)

    def error(self, result: PruneResult) -> float:
        return abs(self.reduction(result) / self.target - 1.0)

    def hit(self, result: PruneResult) -> bool:
        return self.error(result) <= self.tolerance

    def evaluate(self, config: PruningConfig) -> PruneResult:
        self.evals += 1
        if self.bar is not None:
            self.bar.advance()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PruningWarning)
            return run(self.model, self.x, config, progress=False, before=self.before,
                       measure_flops=self.objective == "flops", reference=self.reference)

    def search(self, base: PruningConfig, max_ratio: float) -> tuple[PruneResult, str]:
        """Bisection on ``ratio``; then, at a jump where heads go, bisection with the head count held."""
        top = self.evaluate(base.replace(ratio=max_ratio))
        if self.reduction(top) < self.target * (1 - self.tolerance):
            return top, (f"strategy {base.strategy!r} reaches at most {self.reduction(top):.2f}x {self.objective} "
                         f"(ratio {max_ratio}): the layers it may prune hold too little of the model")
        counts = self.unit_counts if base.strategy == HEADS_MLP else self.head_counts
        # Held heads (head_ratio set) do not move with the ratio, so the reduction has no jumps to handle.
        heads = counts if "attention" in strategy_named(base.strategy).kinds and base.head_ratio is None else []
        best, (lo, at_lo), (hi, at_hi) = self._bisect(base, (0.0, None), (max_ratio, top), heads)
        if self.hit(best):
            return best, ""
        if heads:
            # Heads go whole, so the reduction jumps where one more head per layer goes. Hold the head count
            # below the jump and prune more channels, else hold the count above it and prune fewer.
            for held, bracket in ((lo, ((lo, at_lo), (max_ratio, None))), (hi, ((0.0, None), (hi, at_hi)))):
                if self.evals >= self.max_evals:
                    break
                if len(heads) == 1:  # the canonical ratio of that head count: k / heads
                    held = heads_to_remove(held, heads[0]) / heads[0]
                fixed = base.replace(head_ratio=round(held, 6))
                (a, ra), (b, rb) = bracket
                # Results at the bracket ends were pruned with the same head count: reuse them.
                found, _, _ = self._bisect(fixed, (a, ra), (b, rb))
                if self.error(found) < self.error(best):
                    best = found
                if self.hit(best):
                    return best, ""
        return best, (f"the {self.objective} reduction jumps between ratios {lo:.3f} and {hi:.3f} (whole channels "
                      f"or heads go at once); closest reached: {self.reduction(best):.2f}x at ratio "
                      f"{best.config.ratio:.3f}")

    def _bisect(self, base: PruningConfig, low: tuple[float, PruneResult | None],
                high: tuple[float, PruneResult | None], heads: Sequence[int] = ()) -> tuple[PruneResult, tuple, tuple]:
        """Bisection (guided by log-linear interpolation) for the ratio in [low, high]: best and final bracket.

        With ``heads`` (head counts of the attention layers, head ratio following the ratio), it stops as soon
        as the bracket holds a single step in the number of heads removed: the caller handles that jump.
        """
        (lo, at_lo), (hi, at_hi) = low, high
        if at_hi is None:
            at_hi = self.evaluate(base.replace(ratio=hi))
        if at_lo is None and lo > 0 or base.head_ratio is not None and at_lo is None:
            at_lo = self.evaluate(base.replace(ratio=lo))
        red_lo = self.reduction(at_lo) if at_lo is not None else 1.0
        red_hi = self.reduction(at_hi)
        best = min((r for r in (at_lo, at_hi) if r is not None), key=self.error)
        if red_hi < self.target or red_lo > self.target:
            return best, (lo, at_lo), (hi, at_hi)  # the target is outside this bracket

        def removed(ratio: float) -> int:
            return sum(heads_to_remove(ratio, h) for h in heads)

        while not self.hit(best) and self.evals < self.max_evals and hi - lo > 1e-3:
            if heads and removed(hi) - removed(lo) == len(heads):
                break
            if red_hi > red_lo > 0:
                t = (math.log(self.target) - math.log(red_lo)) / (math.log(red_hi) - math.log(red_lo))
                mid = lo + min(0.8, max(0.2, t)) * (hi - lo)  # interpolate, but keep shrinking the bracket
            else:
                mid = (lo + hi) / 2
            result = self.evaluate(base.replace(ratio=round(mid, 6)))
            if self.error(result) < self.error(best):
                best = result
            if self.reduction(result) < self.target:
                lo, at_lo, red_lo = mid, result, self.reduction(result)
            else:
                hi, at_hi, red_hi = mid, result, self.reduction(result)
        return best, (lo, at_lo), (hi, at_hi)
