"""The early-abort rule: an epoch callback that stops a trial's distillation once the threshold is out of reach.

Such a trial is still measured and counts as infeasible; the reason goes into the trial's ``aborted`` attribute.
"""

from __future__ import annotations

import math

ABORT_WINDOW = 2  # epochs over which the early-abort rule measures progress
ABORT_OPTIMISM = 2.0  # the projection assumes twice the recent rate of improvement


class EarlyAbort:
    """An epoch callback that stops distillation once the threshold is out of reach.

    After ``window`` epochs it measures how much the best metric improved over the last ``window`` epochs. It
    stops when the best metric has not improved at all while below the target, or when even twice that rate
    over the remaining epochs could not bring it to the target. ``reason`` says which and with what figures.
    """

    def __init__(self, target: float, higher_is_better: bool, max_epochs: int, window: int = ABORT_WINDOW,
                 optimism: float = ABORT_OPTIMISM, metric_name: str = "metric") -> None:
        self.target, self.higher, self.max_epochs = target, higher_is_better, max_epochs
        self.window, self.optimism, self.metric_name = window, optimism, metric_name
        self.best: list[float] = []
        self.reason: str | None = None

    def _score(self, value: float) -> float:
        return value if self.higher else -value

    def __call__(self, epoch: int, value: float) -> str | None:
        score = self._score(value) if math.isfinite(value) else -math.inf
        self.best.append(max(score, self.best[-1]) if self.best else score)
        goal = self._score(self.target)
        best = self.best[-1]
        remaining = self.max_epochs - epoch
        if best >= goal or remaining <= 0 or len(self.best) <= self.window:
            return None
        gained = best - self.best[-1 - self.window]
        shown = best if self.higher else -best
        if gained <= 0:
            self.reason = (f"early abort at epoch {epoch}: no improvement for {self.window} epochs, best "
                           f"{self.metric_name} {shown:.4f} below the {self.target:.4f} the threshold needs")
        elif best + self.optimism * gained / self.window * remaining < goal:
            rate = gained / self.window
            self.reason = (f"early abort at epoch {epoch}: best {self.metric_name} {shown:.4f} improving "
                           f"{rate:.4f}/epoch cannot reach {self.target:.4f} in {remaining} remaining epochs")
        return self.reason
