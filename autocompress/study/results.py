"""Reading a study: its trials as :class:`TrialRecord` values, ``study show`` / ``study pareto`` JSON, the
feasible Pareto front, the best trial, the training epochs it spent, and stable JSON output.

The reported Pareto front holds feasible trials only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._common import ATTR, STUDY_SCHEMA_VERSION, StudyError
from ..report import figures
from .objective import is_feasible
from .storage import mask_url

# A study user attribute per trial failed from outside its own run (its worker died): the reason. Trials of
# another worker cannot be given user attributes through Optuna's public API, so the study holds the reason.
FAILURE_ATTR_PREFIX = "failed_trial:"


def failure_attr(number: int) -> str:
    """The study user attribute holding why trial ``number`` was failed by another worker."""
    return f"{FAILURE_ATTR_PREFIX}{number}"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as ``study show --json`` reports it. ``to_dict()`` is that stable JSON record."""

    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING or WAITING
    params: Mapping[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None  # [metric, *costs], completed trials only
    feasible: bool | None = None  # None for trials that did not complete
    metric_drop: float | None = None  # points
    reduction: Mapping[str, float | None] | None = None  # X-fold by cost name
    plan: Mapping[str, Any] | None = None
    plan_summary: str | None = None
    metrics: Mapping[str, Any] | None = None  # the compressed model's figures (see report.figures)
    seconds: float | None = None
    aborted: str | None = None  # the early-abort reason
    error: str | None = None  # why the trial failed
    seeded: bool | None = None  # trial 0: the selector's plan
    artifact_id: str | None = None  # the trial's model in the study's artifact store

    @classmethod
    def from_trial(cls, trial: Any, failure: str | None = None) -> TrialRecord:
        """The record of an Optuna trial; ``failure``: the reason another worker failed it (see
        :func:`failure_attr`), used when the trial holds none itself."""
        attrs = trial.user_attrs
        complete = trial.state.name == "COMPLETE"
        return cls(number=trial.number, state=trial.state.name, params=dict(trial.params),
                   values=tuple(trial.values) if complete and trial.values is not None else None,
                   feasible=is_feasible(trial), metric_drop=attrs.get("metric_drop"), reduction=attrs.get("reduction"),
                   plan=attrs.get("plan"), plan_summary=attrs.get("plan_summary"), metrics=attrs.get("metrics"),
                   seconds=attrs.get("seconds"), aborted=attrs.get("aborted"), error=attrs.get("error") or failure,
                   seeded=attrs.get("seeded"), artifact_id=attrs.get("artifact_id"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        """A record from its ``to_dict()`` (missing keys are None)."""
        values = data.get("values")
        return cls(number=data["number"], state=data["state"], params=dict(data.get("params") or {}),
                   values=None if values is None else tuple(values),
                   **{k: data.get(k) for k in _OPTIONAL})

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON record (``study show --json``'s keys, in their order)."""
        return {"number": self.number, "state": self.state, "params": dict(self.params),
                "values": None if self.values is None else list(self.values),
                **{k: getattr(self, k) for k in _OPTIONAL}}

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def metric_value(self) -> float | None:
        """The compressed model's metric (None when the trial measured nothing)."""
        return ((self.metrics or {}).get("metric") or {}).get("value")

    def reduction_of(self, cost: str) -> float | None:
        """The X-fold reduction of ``cost`` (None when not measured)."""
        return (self.reduction or {}).get(cost)


_OPTIONAL = ("feasible", "metric_drop", "reduction", "plan", "plan_summary", "metrics", "seconds", "aborted", "error",
             "seeded", "artifact_id")

Record = TypeVar("Record", TrialRecord, Mapping[str, Any])


def _record(r: TrialRecord | Mapping[str, Any]) -> TrialRecord:
    return r if isinstance(r, TrialRecord) else TrialRecord.from_dict(r)


def study_meta(study: Any) -> dict[str, Any]:
    """What the study measured once (the ``autocompress`` user attribute); an error for a foreign study."""
    meta = study.user_attrs.get(ATTR)
    if not meta:
        raise StudyError(f"study {study.study_name!r} was not created by autocompress", "an autocompress study",
                         "run `autocompress study` to create one")
    return meta


def trial_records(study: Any) -> list[TrialRecord]:
    """Every trial of ``study``, by number, with the reasons other workers recorded for trials they failed."""
    attrs = study.user_attrs
    return [TrialRecord.from_trial(t, attrs.get(failure_attr(t.number))) for t in study.get_trials(deepcopy=False)]


def trial_epochs(trial: Any) -> int:
    """The distillation epochs a trial ran: its ``distillation`` record, else (a trial that failed or is still
    running) the length of its per-epoch ``curve``."""
    attrs = trial.user_attrs
    ran = (attrs.get("distillation") or {}).get("epochs_run")
    return int(ran) if isinstance(ran, int) else len(attrs.get("curve") or [])


def study_epochs(study: Any) -> int:
    """The distillation epochs spent by the study's finished (complete, failed or pruned) trials."""
    return sum(trial_epochs(t) for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED)


def epochs_summary(study: Any) -> dict[str, Any]:
    """``{"total": study_epochs, "trials": {number: epochs}}`` over the finished trials (numbers as strings,
    as JSON keys are)."""
    per_trial = {str(t.number): trial_epochs(t) for t in study.get_trials(deepcopy=False)
                 if t.state.name in _FINISHED}
    return {"total": sum(per_trial.values()), "trials": per_trial}


_FINISHED = ("COMPLETE", "FAIL", "PRUNED")  # as run.FINISHED (run imports this module)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether value vector ``a`` is at least as good as ``b`` in every direction and better in one."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    pa = [s * v for s, v in zip(sign, a)]
    pb = [s * v for s, v in zip(sign, b)]
    return all(x <= y for x, y in zip(pa, pb)) and any(x < y for x, y in zip(pa, pb))


def pareto_front(records: Sequence[Record], directions: Sequence[str]) -> list[Record]:
    """The feasible completed trials that no other feasible completed trial dominates, by number. ``records``
    are :class:`TrialRecord` values or their dicts; the front holds the same objects."""
    pool = [(r, _record(r)) for r in records]
    pool = [(r, t) for r, t in pool if t.complete and t.feasible and t.values is not None]
    return [r for r, t in pool if not any(dominates(o.values, t.values, directions)  # type: ignore[arg-type]
                                          for _, o in pool if o is not t)]


def best_trial(records: Sequence[Record], directions: Sequence[str], objective: str) -> Record | None:
    """The trial to offer first: on the feasible Pareto front, the largest reduction of ``objective``; ties go
    to the smaller metric drop, then to the lower trial number. None when no trial is feasible."""
    front = pareto_front(records, directions)

    def rank(r: Record) -> tuple[float, float, int]:
        t = _record(r)
        return (t.reduction_of(objective) or 0.0, -(t.metric_drop or 0.0), -t.number)

    return max(front, key=rank, default=None)


def show(study: Any, storage_url: str) -> dict[str, Any]:
    """The stable JSON of ``autocompress study show``."""
    meta = study_meta(study)
    return {
        "schema_version": STUDY_SCHEMA_VERSION,
        "name": study.study_name,
        "storage": mask_url(storage_url),
        "task": meta["task"],
        "requirements": meta["requirements"],
        "objectives": {"metric": meta.get("metric"), "costs": meta["objectives"], "directions": meta["directions"],
                       "values": [meta.get("metric") or "metric", *meta["objectives"]]},
        "original": figures(meta["original"]),
        "seed_plan": meta["seed_plan"],
        "reasons": meta["reasons"],
        "artifacts": meta["artifacts"],
        "trials": [r.to_dict() for r in trial_records(study)],
        "epochs": epochs_summary(study),
    }


def pareto(study: Any, storage_url: str) -> dict[str, Any]:
    """``study show``'s JSON with the feasible Pareto ``front`` in place of the trials; ``epochs`` also gives
    each front trial's epochs (``front``)."""
    data = show(study, storage_url)
    data["front"] = pareto_front(data.pop("trials"), data["objectives"]["directions"])
    trials = data["epochs"]["trials"]
    data["epochs"]["front"] = {str(r["number"]): trials.get(str(r["number"])) for r in data["front"]}
    return data


def pick_trial(study: Any, number: int | None = None, prefer: str | None = None) -> Any:
    """Trial ``number``, or else :func:`best_trial` by ``prefer`` (default: the study's primary objective)."""
    meta = study_meta(study)
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        found = [t for t in trials if t.number == number]
        if not found:
            raise StudyError(f"no trial {number} in study {study.study_name!r}",
                             f"a trial number in 0..{len(trials) - 1}", "see `autocompress study show`")
        trial = found[0]
    else:
        chosen = best_trial(trial_records(study), meta["directions"], prefer or meta["requirements"]["objective"])
        if chosen is None:
            raise StudyError(f"study {study.study_name!r} has no feasible completed trial",
                             "at least one trial within the threshold", "run more trials, or pick one with --trial")
        trial = next(t for t in trials if t.number == chosen.number)
    if trial.state.name != "COMPLETE" or "artifact_id" not in trial.user_attrs:
        why = (trial.user_attrs.get("error") or study.user_attrs.get(failure_attr(trial.number))
               or trial.state.name.lower())
        raise StudyError(f"trial {trial.number} of study {study.study_name!r} has no model ({why})",
                         "a completed trial", "pick another trial (see `autocompress study show`)")
    return trial


def dumps(data: Any) -> str:
    """Stable JSON: non-finite floats become null."""
    return json.dumps(_finite(data), indent=2, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
