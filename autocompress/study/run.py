"""Running a study: create it or resume it, seed it once, fail the trials of dead workers, optimise.

- **Seeded.** A new study gets the selector's plan as trial 0 and a few of its neighbours after it; workers
  sharing a storage file on one machine seed it once (a file lock in the artifact folder).
- **Measured once.** The original model's profile, the requirements, the objectives and the selector's reasons
  live in the study's user attributes and are reused on resume (a resume with other settings is an error).
- **Sampler.** TPE with the threshold constraint (see the README for why).
- **Dead workers.** A RUNNING trial whose worker process on this machine is gone is failed, with the reason,
  when the study resumes; workers on other machines are left to the storage's heartbeat.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _arch
from ..errors import describe_error
from ..threads import WorkerRegistry, process_alive
from ._common import ATTR, STUDY_SCHEMA_VERSION, StudyError
from .objective import WORKER_ATTR, StudyContext, make_objective, worker
from .results import failure_attr
from .space import (SearchSpace, edge_design, neighbours, trial_params_from_plan, translate_params,
                    unreachable_strategies)
from .storage import artifact_dir, mask_url, resolve_storage

FINISHED = ("COMPLETE", "FAIL", "PRUNED")
EDGE_MIN_TRIALS = 8  # studies this long also start at the estimate's edge (two trials; four from 16 trials)


def finished_trials(study: Any) -> list[Any]:
    """The trials that count towards ``--trials``: complete, failed or pruned."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def run_study(task_ref: str, requirements: Any, objectives: list[str], trials: int, *, name: str,
              storage: str | None = None, timeout: float | None = None, seed: int | None = 0,
              device: str = "auto", threads: int | None = None, artifacts: str | None = None,
              n_neighbours: int = 3, enqueue: Sequence[dict[str, Any]] = (),
              on_trial: Callable[[Any, Any], None] | None = None, log: Callable[[str], None] | None = None) -> Any:
    """Create or resume study ``name`` and run trials until ``trials`` have finished (complete or failed).

    ``trials`` counts the total: a resumed study runs only the missing ones. A new study gets the selector's
    plan as trial 0, then ``n_neighbours`` of its neighbours, then the ``enqueue`` parameter dicts (see
    :func:`~autocompress.study.space.trial_params_from_plan`). Returns the study.
    """
    import optuna

    from ..task import load_task

    from ..device import require_backend
    from ..metrics import check_max_drop
    from ..requirements import check_objectives

    if trials < 1:
        raise StudyError(f"--trials {trials}", "a total number of trials ≥ 1", "pass e.g. --trials 12")
    check_objectives(requirements, objectives)
    require_backend(requirements.backend)
    backend, url = resolve_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    task = load_task(task_ref)
    check_max_drop({"scale": task.resolved_metric.scale}, requirements.max_drop)
    say = log or (lambda message: None)
    try:
        existing = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        existing = None
    start = _resume(existing, task, task_ref, requirements, objectives, name, url, artifacts, say) \
        if existing is not None and ATTR in existing.user_attrs else \
        _measure(task, task_ref, requirements, objectives, name, url, artifacts, threads, say)
    already = len(finished_trials(existing)) if existing is not None else 0
    study = _create_and_seed(start, backend, name, url, seed, already, trials, n_neighbours, enqueue, say)
    fail_dead_trials(study, say)
    missing = trials - len(finished_trials(study))
    if missing <= 0:
        say(f"study {name!r} already has {len(finished_trials(study))} finished trials (--trials {trials} "
            "counts the total); nothing to run")
        return study
    # Whoever wrote the study's measurements first, every worker uses them (one original profile per study).
    from ..profile import Profile

    meta = study.user_attrs[ATTR]
    workers = WorkerRegistry(start.artifacts)
    ctx = StudyContext(task=task, requirements=requirements, objectives=objectives,
                       original=Profile.from_dict(meta["original"]), space=SearchSpace.from_dict(meta["space"]),
                       artifacts=start.artifacts, device=device, log=log, threads=threads, workers=workers)
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(
        trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED))]
    if ctx.space.keep_range is not None:
        callbacks.append(_edge_callback(trials, objectives, requirements, ctx.space.keep_range[0], say))
    if on_trial is not None:
        callbacks.append(lambda s, t: on_trial(s, t))
    with workers, warnings.catch_warnings():  # registered while it runs: the workers here share the cores
        # Enqueued parameters outside the search ranges are run on purpose (a seed, a user's --enqueue).
        warnings.filterwarnings("ignore", message=r"Fixed parameter .* is out of range", category=UserWarning)
        # catch=(Exception,) is Optuna's documented way to record a trial that raises as FAIL and go on with the
        # study; the objective has stored the reason in the trial's `error` attribute first.
        study.optimize(make_objective(ctx), n_trials=missing, timeout=timeout, catch=(Exception,),
                       callbacks=callbacks)
    return study


def _edge_callback(trials: int, objectives: list[str], requirements: Any, keep_floor: float,
                   say: Callable[[str], None]) -> Callable[[Any, Any], None]:
    """After each trial: queue the next bisection trial at the threshold's edge (see :mod:`.edge`)."""
    from .edge import enqueue_edge_trial

    primary = 1 + (objectives.index(requirements.objective) if requirements.objective in objectives else 0)

    def callback(study: Any, trial: Any) -> None:
        record = enqueue_edge_trial(study, trials, primary, keep_floor)
        if record is None:
            return
        if "repair_of" in record:  # the bracket is resolved: its near miss again, with more recovery
            say(f"queued an edge trial: trial {record['repair_of']} (keep {record['keep']:g}) again with more "
                "recovery (combined distillation or one more pruning step)")
        else:
            below = f"and infeasible trial {record['below']}" if record["below"] is not None else "(a step further)"
            say(f"queued an edge trial: keep {record['keep']:g}, between feasible trial {record['anchor']} {below}")

    return callback


@dataclass(frozen=True)
class _Start:
    """What a study starts from: measured now (a new study) or read back (a resumed one)."""

    task_name: str
    task_ref: str
    requirements: Any
    objectives: list[str]
    original: Any  # Profile
    space: SearchSpace
    seed_plan: Any
    reasons: list[str]
    artifacts: Path
    original_widths: dict[str, int] | None = None  # measured for a new study only
    estimate: dict[str, Any] | None = None  # autocompress.estimate.Estimate.to_dict(), for a new study only


def _resume(existing: Any, task: Any, task_ref: str, requirements: Any, objectives: list[str], name: str,
            url: str, artifacts: str | None, say: Callable[[str], None]) -> _Start:
    from ..plan import Plan
    from ..profile import Profile

    meta = existing.user_attrs[ATTR]
    _check_resume(meta, task.name, requirements, objectives, name)
    say(f"resuming study {name!r} ({len(finished_trials(existing))} finished trials) in {mask_url(url)}")
    return _Start(task_name=task.name, task_ref=task_ref, requirements=requirements, objectives=objectives,
                  original=Profile.from_dict(meta["original"]), space=SearchSpace.from_dict(meta["space"]),
                  seed_plan=Plan.load(meta["seed_plan"]), reasons=list(meta["reasons"]),
                  artifacts=Path(artifacts).absolute() if artifacts else Path(meta["artifacts"]))


def _measure(task: Any, task_ref: str, requirements: Any, objectives: list[str], name: str, url: str,
             artifacts: str | None, threads: int | None, say: Callable[[str], None]) -> _Start:
    from ..selection import plan_task

    say("profiling the original model (once per study)")
    original, selection = plan_task(task, requirements, threads=threads)
    sensitivity = _sensitivity(task, original, requirements, say)
    space = SearchSpace.for_model(original, requirements, vocabulary=selection.plan.embeddings.trim_vocabulary
                                  or task.token_ids()["unk_id"] is not None, seed_ratio=selection.plan.pruning.ratio,
                                  sensitivity=sensitivity, objectives=tuple(objectives),
                                  seed_mode=selection.plan.quantization_mode,
                                  unreachable=unreachable_strategies(task.model, task.example_input)
                                  if original.arch_type != "transformer" else ())
    from ..estimate import applies, estimate_or_reason

    guess, why_not = estimate_or_reason(task, original, requirements, space.quantization)
    if guess is not None:
        say(guess.describe())
    elif applies(original):
        say(why_not or "no estimate")
    return _Start(task_name=task.name, task_ref=task_ref, requirements=requirements, objectives=objectives,
                  original=original, space=space, estimate=guess.to_dict() if guess else None,
                  seed_plan=selection.plan,
                  reasons=[str(r) for r in selection.reasons] + list(space.notes),
                  artifacts=Path(artifacts).absolute() if artifacts else artifact_dir(url, name),
                  original_widths=_arch.layer_widths(_arch.capture(task.model)))


SENSITIVITY_BATCHES = 4  # training batches the per-layer scan measures the loss on


def _sensitivity(task: Any, original: Any, requirements: Any, say: Callable[[str], None]) -> dict[str, Any] | None:
    """The per-layer sensitivity scan (once per study, stored with it) for models the ``uniform`` strategy
    prunes; None for transformers on the embedding-first route, which prune heads and MLP channels instead."""
    import itertools
    import time

    from ..pruning import PruningError, measure_sensitivity
    from ..transformer_route import applies

    if applies(original, requirements):
        return None
    started = time.perf_counter()
    batches = list(itertools.islice(iter(task.train_loader(shuffle=False)), SENSITIVITY_BATCHES))
    try:
        scan = measure_sensitivity(task.model, task.example_input, batches, loss_fn=task.loss_fn)
    except PruningError as exc:  # nothing prunable layer by layer: the dial is simply not offered
        say(f"no per-layer sensitivity scan ({exc})")
        return None
    # The scan runs the user's model and loss on pruned copies, which may raise anything (a model that rejects
    # some inputs); the study goes on without the dial, and its trials meet the failure with their own record.
    except Exception as exc:
        say(f"no per-layer sensitivity scan: the scan failed ({describe_error(exc)})")
        return None
    say(f"measured the sensitivity of {len(scan.scores)} layers in {time.perf_counter() - started:.1f}s")
    return scan.to_dict()


def _create_and_seed(start: _Start, backend: Any, name: str, url: str, seed: int | None, already: int,
                     trials: int, n_neighbours: int, enqueue: Sequence[dict[str, Any]],
                     say: Callable[[str], None]) -> Any:
    """The study, created if need be; a new one gets its measurements and its seed trials.

    Workers sharing one storage file on this machine seed the study once: creating it, writing what was measured
    and enqueueing the seeds happen under a lock in the artifact folder. (Workers on other machines against
    PostgreSQL may race here; the first writer's measurements win.)
    """
    import optuna

    higher = start.original.metric.get("higher_is_better", True)
    directions = ["maximize" if higher else "minimize"] + ["minimize"] * len(start.objectives)
    sampler = _sampler(None if seed is None else seed + already, min(10, max(3, trials // 3)))
    start.artifacts.mkdir(parents=True, exist_ok=True)
    with _file_lock(start.artifacts / ".seed.lock"):
        study = optuna.create_study(study_name=name, storage=backend, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        if [d.name.lower() for d in study.directions] != directions:
            found = [d.name.lower() for d in study.directions]
            raise StudyError(f"study {name!r} in {mask_url(url)} has directions {found}",
                             f"{directions} for objectives {start.objectives}", "use another --name")
        if ATTR not in study.user_attrs:
            study.set_user_attr(ATTR, {
                "schema_version": STUDY_SCHEMA_VERSION, "task": start.task_name, "task_ref": start.task_ref,
                "requirements": start.requirements.to_dict(), "objectives": start.objectives,
                "directions": directions, "metric": start.original.metric.get("name"),
                "original": start.original.to_dict(), "space": start.space.to_dict(),
                "seed_plan": start.seed_plan.to_dict(), "reasons": start.reasons, "artifacts": str(start.artifacts),
                "original_widths": start.original_widths, "estimate": start.estimate,
            })
            seeds = [start.seed_plan, *neighbours(start.seed_plan, start.space)[:max(0, n_neighbours)]]
            if start.estimate and trials >= EDGE_MIN_TRIALS:
                edge = edge_design(start.seed_plan, start.space, tuple(start.estimate["ratio_range"]),
                                   4 if trials >= 2 * EDGE_MIN_TRIALS else 2)
                seeds += [p for p in edge if p not in seeds]
            for plan in seeds:
                study.enqueue_trial(trial_params_from_plan(plan, start.space),
                                    user_attrs={"seeded": plan is start.seed_plan})
            for params in enqueue:  # a user's `pruning.ratio` reaches a space that searches `pruning.keep`
                study.enqueue_trial(translate_params(dict(params), start.space), user_attrs={"seeded": False})
            say(f"seeded trial 0 with the selector's plan: {start.seed_plan.summary()}")
    return study


def _sampler(seed: int | None, n_startup: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Constraints come from trial.set_constraint (optuna 5 deprecates constraints_func for it); TPE reads
        # them from every finished trial, so constraint violations steer the search like constraints_func did.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=n_startup)


class _file_lock:
    """An exclusive ``fcntl`` lock on ``path`` (a no-op where fcntl is missing)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fh = path, None

    def __enter__(self) -> _file_lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def _check_resume(meta: dict[str, Any], task_name: str, requirements: Any, objectives: list[str], name: str) -> None:
    stored = meta.get("requirements", {})
    mine = requirements.to_dict()
    diffs = [k for k in ("objective", "max_drop", "target", "backend", "budget") if stored.get(k) != mine.get(k)]
    if meta.get("task") != task_name:
        diffs.insert(0, "task")
    if list(meta.get("objectives", [])) != list(objectives):
        diffs.append("objectives")
    if diffs:
        was = {k: (meta.get("task") if k == "task" else meta.get("objectives") if k == "objectives"
                   else stored.get(k)) for k in diffs}
        raise StudyError(f"study {name!r} exists with other settings ({', '.join(f'{k}={v}' for k, v in was.items())})",
                         "the same task, requirements and objectives to resume it",
                         "rerun with those settings, or choose another --name")


def fail_dead_trials(study: Any, log: Callable[[str], None] | None = None) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone (killed, crashed), with the
    reason; their numbers. Trials of workers on other machines are left to the storage's heartbeat.

    The reason goes into a study user attribute (:func:`~autocompress.study.results.failure_attr`), which the
    trial's record reads: Optuna's public API can finish another process's trial (``study.tell``) but not give it
    user attributes.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    me = worker()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR) or {}
        if owner.get("host") != me["host"] or not isinstance(owner.get("pid"), int) or process_alive(owner["pid"]):
            continue
        reason = (f"the worker (pid {owner['pid']} on {owner['host']}) stopped before the trial finished "
                  "(killed or crashed); the study resumed without it")
        study.set_user_attr(failure_attr(trial.number), reason)
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):  # another worker finished it first
            continue
        failed.append(trial.number)
        if log:
            log(f"trial {trial.number}: {reason}")
    return failed
