"""The Optuna study: seeded by the selector's plan, multi-objective under the threshold constraint, resumable.

- **Search space.** :func:`plan_from_trial` turns a trial's parameters into a :class:`~autocompress.plan.Plan`
  one-to-one, and :func:`trial_params_from_plan` goes back, so the selector's plan is enqueued as trial 0 (and
  a couple of neighbours after it). Conditional parameters (alpha, temperature, round_to) are suggested only
  when they apply; choices depend on the model (no ``bn_scale`` without BatchNorm, only strategies whose layer
  categories exist) and on the backend (gpu: no quantization; transformers: none or dynamic).
- **Objectives.** Maximise the task metric (minimise it when lower is better) and minimise the compressed
  model's cost(s): ``size`` (MB), ``latency`` (batch-64 ms), ``flops`` (MACs), ``energy`` (batch-64 mJ).
- **Constraint.** ``metric_drop - max_drop`` set with ``trial.set_constraint`` (optuna 5's replacement of
  ``constraints_func``, read by the samplers the same way): feasible when ≤ 0. The sampler is
  TPE with that constraint (see the README for why), and the reported Pareto front holds feasible trials only.
- **Per trial.** One ``pipeline.run_plan`` (no back-off). An epoch callback stops distillation once the
  threshold is out of reach (:class:`EarlyAbort`); such a trial is measured and counts as infeasible. A trial
  that raises, or measures NaN, is recorded as failed with its message, and the study goes on.
- **Measured once.** The original model's profile, the requirements, the objectives and the selector's reasons
  live in the study's user attributes and are reused on resume. Teacher outputs are computed once per process.
- **Artifacts.** Each completed trial's model is exported as an ``autocompress`` archive (``.acz``) into
  Optuna's file-system artifact store beside the storage (see :func:`artifact_dir`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _arch
from .errors import ConfigError, describe_error

STUDY_SCHEMA_VERSION = 1
ATTR = "autocompress"  # the study user attribute holding what was measured once
DEFAULT_STORAGE = "sqlite:///studies/autocompress.db"
COSTS = ("size", "flops", "latency", "energy")
COST_UNITS = {"size": "MB", "flops": "MACs", "latency": "ms (batch 64)", "energy": "mJ (batch 64)"}
DISTILLATION_TECHNIQUES = ("finetune", "hard", "soft", "combined")
RATIO_RANGE = (0.0, 0.95)
STEPS_RANGE = (1, 3)
LR_RANGE = (1e-4, 3e-3)
ALPHA_RANGE = (0.1, 0.9)
TEMPERATURE_RANGE = (1.0, 8.0)
ROUND_TO_CHOICES = (0, 16)  # 0: free widths
ABORT_WINDOW = 2  # epochs over which the early-abort rule measures progress
ABORT_OPTIMISM = 2.0  # the projection assumes twice the recent rate of improvement


class StudyError(ConfigError):
    """A bad study option: storage URL, study name, a trial that cannot be exported, a mismatched resume."""


# ============================================================================================ search space
@dataclass(frozen=True)
class SearchSpace:
    """What the trials may choose for one model, backend and budget. Everything else in a plan is fixed."""

    techniques: tuple[str, ...]
    strategies: tuple[str, ...]
    quantization: tuple[str, ...]
    max_epochs: int
    backend: str  # the quantization config's backend: x86 or gpu
    patience: int | None = 3
    stop: str = "epochs"

    @classmethod
    def for_model(cls, profile: Any, requirements: Any) -> SearchSpace:
        from .pruning import TECHNIQUES, STRATEGIES
        from .selection import BUDGET_EPOCHS, layer_category

        has_bn = any(layer.type.startswith("BatchNorm") for layer in profile.layers)
        techniques = tuple(t for t in TECHNIQUES if t != "bn_scale" or has_bn)
        categories = {layer_category(layer.type) for layer in profile.layers}
        strategies = tuple(s for s in STRATEGIES if s == "global" or s in categories)
        if requirements.backend == "gpu":
            quantization: tuple[str, ...] = ("none",)
        elif profile.arch_type == "transformer":
            quantization = ("none", "dynamic")  # static and QAT cannot trace attention fed dicts of tensors
        else:
            quantization = ("none", "dynamic", "static", "qat")
        return cls(techniques=techniques, strategies=strategies, quantization=quantization,
                   max_epochs=BUDGET_EPOCHS[requirements.budget],
                   backend="gpu" if requirements.backend == "gpu" else "x86")

    def to_dict(self) -> dict[str, Any]:
        return {"techniques": list(self.techniques), "strategies": list(self.strategies),
                "quantization": list(self.quantization), "max_epochs": self.max_epochs, "backend": self.backend,
                "patience": self.patience, "stop": self.stop}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(techniques=tuple(data["techniques"]), strategies=tuple(data["strategies"]),
                   quantization=tuple(data["quantization"]), max_epochs=int(data["max_epochs"]),
                   backend=data["backend"], patience=data.get("patience", 3), stop=data.get("stop", "epochs"))


def plan_from_trial(trial: Any, space: SearchSpace) -> Any:
    """The plan a trial's parameters describe. Parameters are suggested only where they apply."""
    from .distillation import DistillationConfig, technique_from_name
    from .plan import Plan
    from .pruning import PruningConfig
    from .quantization import quantization_config

    mode = trial.suggest_categorical("quantization.mode", list(space.quantization))
    ratio = trial.suggest_float("pruning.ratio", *RATIO_RANGE)
    technique = trial.suggest_categorical("pruning.technique", list(space.techniques))
    strategy = trial.suggest_categorical("pruning.strategy", list(space.strategies))
    steps = trial.suggest_int("pruning.steps", *STEPS_RANGE)
    round_to = None
    if mode in ("static", "qat"):  # fbgemm's int8 kernels like channel counts in multiples of 16
        round_to = trial.suggest_categorical("pruning.round_to", list(ROUND_TO_CHOICES)) or None
    distil = trial.suggest_categorical("distillation.technique", list(DISTILLATION_TECHNIQUES))
    options: dict[str, float] = {}
    if distil in ("soft", "combined"):
        options["temperature"] = trial.suggest_float("distillation.temperature", *TEMPERATURE_RANGE, step=0.25)
    if distil == "combined":
        options["alpha"] = trial.suggest_float("distillation.alpha", *ALPHA_RANGE, step=0.05)
    lr = trial.suggest_float("distillation.lr", *LR_RANGE, log=True)
    return Plan(
        pruning=PruningConfig(technique=technique, strategy=strategy, ratio=ratio, steps=steps, round_to=round_to),
        distillation=DistillationConfig(technique=technique_from_name(distil, **options), stop=space.stop,
                                        max_epochs=space.max_epochs, patience=space.patience, lr=lr),
        quantization=quantization_config(mode, backend=space.backend),
    )


def trial_params_from_plan(plan: Any, space: SearchSpace | None = None) -> dict[str, Any]:
    """The trial parameters that :func:`plan_from_trial` maps back onto ``plan`` (for ``enqueue_trial``).

    With ``space``, a plan the search space cannot express raises :class:`StudyError`.
    """
    from .pruning import technique_name

    p, d = plan.pruning, plan.distillation
    params: dict[str, Any] = {"quantization.mode": plan.quantization_mode, "pruning.ratio": float(p.ratio),
                              "pruning.technique": technique_name(p.technique), "pruning.strategy": p.strategy,
                              "pruning.steps": int(p.steps)}
    if plan.quantization_mode in ("static", "qat"):
        params["pruning.round_to"] = int(p.round_to or 0)
    name = d.technique.name if hasattr(d.technique, "name") else d.technique.KIND.partition(".")[2]
    params["distillation.technique"] = name
    if name in ("soft", "combined"):
        params["distillation.temperature"] = float(d.technique.temperature)
    if name == "combined":
        params["distillation.alpha"] = float(d.technique.alpha)
    params["distillation.lr"] = float(d.lr)
    if space is not None:
        problems = []
        if params["quantization.mode"] not in space.quantization:
            problems.append(f"quantization {params['quantization.mode']}")
        if params["pruning.technique"] not in space.techniques:
            problems.append(f"technique {params['pruning.technique']}")
        if params["pruning.strategy"] not in space.strategies:
            problems.append(f"strategy {params['pruning.strategy']}")
        if name not in DISTILLATION_TECHNIQUES:
            problems.append(f"distillation {name}")
        if not RATIO_RANGE[0] <= p.ratio <= RATIO_RANGE[1] or not STEPS_RANGE[0] <= p.steps <= STEPS_RANGE[1]:
            problems.append(f"ratio {p.ratio} / steps {p.steps}")
        if not LR_RANGE[0] <= d.lr <= LR_RANGE[1]:
            problems.append(f"lr {d.lr}")
        if p.round_to not in (None, *[r for r in ROUND_TO_CHOICES if r]):
            problems.append(f"round_to {p.round_to}")
        if d.max_epochs != space.max_epochs or d.stop != space.stop or d.patience != space.patience:
            problems.append(f"epochs {d.max_epochs} / stop {d.stop} / patience {d.patience}")
        if problems:
            raise StudyError(f"a plan outside the study's search space ({', '.join(problems)})",
                             "a plan the trials can express", "check the plan against SearchSpace")
    return params


def neighbours(plan: Any) -> list[Any]:
    """The seed's closest alternatives, most useful first (``--neighbours K`` enqueues the first K).

    The rule plan aims pruning at the target, so the threshold is what usually binds: the first neighbour keeps
    1.4× the channels, the second the same milder pruning recovered by combined distillation from the original
    (T=4, α=0.5), the third prunes harder (0.8× the channels kept), the fourth keeps 2× the channels.
    Steps are in the kept fraction (1 − ratio), where they mean the same at 50% and at 90% pruning.
    """
    from .distillation import CombinedDistillation

    r = plan.pruning.ratio
    keep = 1.0 - r

    def with_keep(factor: float) -> Any | None:
        ratio = round(min(RATIO_RANGE[1], max(RATIO_RANGE[0], 1.0 - keep * factor)), 4)
        return plan.replace(pruning=plan.pruning.replace(ratio=ratio)) if abs(ratio - r) > 1e-3 else None

    milder = with_keep(1.4)
    distilled = None
    if milder is not None and plan.distillation.technique.KIND != CombinedDistillation.KIND:
        distilled = milder.replace(distillation=milder.distillation.replace(technique=CombinedDistillation()))
    candidates = [milder, distilled, with_keep(0.8), with_keep(2.0)]
    out: list[Any] = []
    for candidate in candidates:
        if candidate is not None and candidate not in out and candidate != plan:
            out.append(candidate)
    return out


# ============================================================================================ early abort
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


# ============================================================================================ storage
def resolve_storage(url: str | None) -> tuple[Any, str]:
    """An Optuna storage for ``url`` and the URL as stored. ``journal:///path`` is a journal file."""
    import optuna

    url = url or DEFAULT_STORAGE
    if not isinstance(url, str) or "://" not in url:
        raise StudyError(f"storage {url!r}", "an Optuna storage URL such as sqlite:///studies/x.db, "
                         "postgresql://user@host/db or journal:///path/to/file.log", "fix --storage")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "journal":
        path = _journal_path(url)
        if not path:
            raise StudyError(f"storage {url!r} without a file path", "journal:///path/to/file.log",
                             "add the journal file path")
        from optuna.storages.journal import JournalFileBackend

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path)), url
        except Exception as exc:
            raise StudyError(f"journal storage {url!r} could not be opened ({describe_error(exc)})",
                             "a writable journal file path", "fix --storage") from exc
    if scheme.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is None:
            raise StudyError(f"storage {url!r}", "sqlite:///relative/path.db or sqlite:////absolute/path.db",
                             "fix --storage")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return _open_rdb(url), url
    except Exception as exc:
        raise StudyError(f"storage {mask_url(url)!r} could not be opened ({describe_error(exc)})",
                         "a reachable Optuna storage URL (sqlite:///..., postgresql://..., journal:///...)",
                         "fix --storage, or start the database server") from exc


def _open_rdb(url: str, attempts: int = 5) -> Any:
    """``RDBStorage(url)``, retried when another worker is creating the same schema at the same moment.

    Two workers starting on a fresh PostgreSQL database both run ``CREATE TYPE``/``CREATE TABLE``; the loser gets
    a unique-key violation. Once the winner has committed, a retry finds the schema in place.
    """
    import random
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Workers on other machines: a trial whose worker stops beating for the grace period is failed
                # by the next worker (SQLite is one machine's file; dead local workers are found by pid).
                server = not url.lower().startswith("sqlite")
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS if server else None,
                                                  grace_period=HEARTBEAT_GRACE_SECONDS if server else None)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))


def storage_file(url: str) -> str | None:
    """The file behind a SQLite or journal storage URL (None for a server URL)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.startswith("sqlite"):
        return _sqlite_path(url)
    if scheme == "journal":
        return _journal_path(url) or None
    return None


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for output and logs."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def _journal_path(url: str) -> str:
    """``journal:///abs/file.log`` (any number of slashes after ``//``) is absolute, ``journal://rel/file.log``
    relative to the working directory."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        rest = rest.lstrip("/")
        return os.path.normpath("/" + rest) if rest else ""
    return os.path.normpath(rest) if rest else ""


def _sqlite_path(url: str) -> str | None:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        return None
    path = rest[1:]
    return path or None


def artifact_dir(url: str, name: str) -> Path:
    """Where a study's trial models go: ``<file>.artifacts/`` beside a SQLite or journal file; else
    ``studies/artifacts/<name>/`` under the working directory (share it between machines, or pass --artifacts)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "journal":
        return Path(_journal_path(url) + ".artifacts").absolute()
    if scheme.startswith("sqlite"):
        path = _sqlite_path(url)
        if path and path != ":memory:":
            return Path(os.path.normpath(os.path.abspath(path)) + ".artifacts")
    from ._io import safe_component

    return Path("studies", "artifacts", safe_component(name)).absolute()


def load_study(name: str, storage: str | None = None) -> Any:
    """An existing study by name (a one-line error when there is none)."""
    import optuna

    backend, url = resolve_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
        raise StudyError(f"no study named {name!r} in {mask_url(url)}",
                         f"one of: {', '.join(known)}" if known else "an existing study",
                         "check --name and --storage, or run `autocompress study` first") from None


# ============================================================================================ objectives
def parse_objectives(primary: str, objectives: str | None) -> list[str]:
    """The costs the study minimises: ``--objectives a,b`` if given, else ``--objective``."""
    if not objectives:
        names = [primary]
    else:
        names = [n.strip() for n in objectives.split(",") if n.strip()]
    bad = [n for n in names if n not in COSTS]
    if bad or not names or len(set(names)) != len(names):
        raise StudyError(f"objectives {objectives or primary!r}", f"distinct names among {', '.join(COSTS)}",
                         "pass e.g. --objectives size,latency")
    return names


def costs_of(profile: Any, objectives: Sequence[str]) -> list[float]:
    figures = {"size": profile.size_mb, "flops": float(profile.flops),
               "latency": profile.latency_ms.get("batch_64"), "energy": (profile.energy_mj or {}).get("batch_64")}
    return [float("nan") if figures[o] is None else float(figures[o]) for o in objectives]


def figures(profile: Any) -> dict[str, Any]:
    return {"params": profile.params, "flops": profile.flops, "size_mb": profile.size_mb,
            "latency_ms": dict(profile.latency_ms), "energy_mj": dict(profile.energy_mj or {}),
            "metric": dict(profile.metric)}


CONSTRAINT_KEY = "metric_drop_over_max"  # the trial's constraint: metric_drop - max_drop (feasible when ≤ 0)


def is_feasible(trial: Any) -> bool | None:
    """A completed trial's feasibility from its Optuna constraint; None for trials that did not complete."""
    if trial.state.name != "COMPLETE":
        return None
    constraints = dict(getattr(trial, "constraints", {}) or {})
    if not constraints and "constraint" in trial.user_attrs:
        constraints = {CONSTRAINT_KEY: trial.user_attrs["constraint"]}
    return bool(constraints) and all(v <= 0 for v in constraints.values())


# ============================================================================================ running
@dataclass
class StudyContext:
    """What a study measured once: reused by every trial of this process and on resume."""

    task: Any
    requirements: Any
    objectives: list[str]
    original: Any  # Profile
    space: SearchSpace
    seed_plan: Any
    reasons: list[str]
    artifacts: Path
    device: str = "auto"
    teacher_outputs: Any = None
    log: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)




def _atomic_artifact_store(base_path: str) -> Any:
    """Optuna's file-system artifact store, but a write goes to a temporary name and is renamed into place, so a
    worker killed mid-write leaves no partial artifact."""
    import shutil

    from optuna.artifacts import FileSystemArtifactStore

    from ._io import atomic_write

    class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
        def write(self, artifact_id: str, content_body: Any) -> None:
            atomic_write(self._get_filepath(artifact_id), lambda fh: shutil.copyfileobj(content_body, fh))

    return AtomicFileSystemArtifactStore(base_path)


HEARTBEAT_SECONDS = 60
HEARTBEAT_GRACE_SECONDS = 600
WORKER_ATTR = "worker"  # {"host", "pid"} of the process running a trial, to tell a dead worker's trial


def _worker() -> dict[str, Any]:
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_trials(study: Any, log: Callable[[str], None] | None = None) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone (killed, crashed), with the
    reason; their numbers. Trials of workers on other machines are left to the storage's heartbeat."""
    import optuna

    me = _worker()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("host") != me["host"] or not isinstance(worker.get("pid"), int) or _alive(worker["pid"]):
            continue
        reason = (f"the worker (pid {worker['pid']} on {worker['host']}) stopped before the trial finished "
                  "(killed or crashed); the study resumed without it")
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", reason)
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # another worker got there first
            continue
        failed.append(trial.number)
        if log:
            log(f"trial {trial.number}: {reason}")
    return failed


def make_objective(ctx: StudyContext) -> Callable[[Any], list[float]]:
    """The objective: one pipeline run per trial, its figures in the trial's user attributes."""
    from optuna.artifacts import upload_artifact

    from .export import export_model
    from .pipeline import run_plan

    ctx.artifacts.mkdir(parents=True, exist_ok=True)
    store = _atomic_artifact_store(str(ctx.artifacts))
    req = ctx.requirements
    metric = ctx.original.metric
    higher = metric.get("higher_is_better", True)
    target = metric["value"] - req.max_drop_fraction if higher else metric["value"] + req.max_drop_fraction

    def objective(trial: Any) -> list[float]:
        started = time.perf_counter()
        trial.set_user_attr(WORKER_ATTR, _worker())
        try:
            plan = plan_from_trial(trial, ctx.space)
            trial.set_user_attr("plan", plan.to_dict())
            trial.set_user_attr("plan_summary", plan.summary())
            abort = EarlyAbort(target, higher, plan.distillation.max_epochs, metric_name=metric.get("name") or "metric")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = run_plan(ctx.task, plan, ctx.original, requirements=req, device=ctx.device,
                                  teacher_outputs=ctx.teacher_outputs, epoch_callback=abort, progress=False)
            ran = time.perf_counter() - started
            if result.distillation.get("stopped_because") == "diverged":
                raise RuntimeError(f"training diverged ({result.distillation.get('stop_detail') or 'NaN loss'})")
            value = result.compressed.metric.get("value")
            if value is None or not math.isfinite(float(value)):
                raise RuntimeError(f"the compressed model's metric is {value} (training diverged)")
            costs = costs_of(result.compressed, ctx.objectives)
            if not all(math.isfinite(c) for c in costs):
                raise RuntimeError(f"a cost is not finite: {dict(zip(ctx.objectives, costs))}")
            drop = float(result.metric_drop)
            trial.set_user_attr("metrics", figures(result.compressed))
            trial.set_user_attr("metric_drop", drop)
            trial.set_user_attr("reduction", {k: (None if math.isnan(v) else float(v))
                                              for k, v in result.reduction.items()})
            trial.set_user_attr("feasible", bool(result.feasible))
            trial.set_user_attr("constraint", drop - req.max_drop)
            trial.set_user_attr("distillation", {k: result.distillation.get(k) for k in
                                                 ("epochs_run", "best_epoch", "best_metric", "stopped_because",
                                                  "stop_detail") if k in result.distillation})
            if abort.reason:
                trial.set_user_attr("aborted", abort.reason)
            if result.notes:
                trial.set_user_attr("notes", list(result.notes))
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"trial-{trial.number}.acz"
                exported = export_model(result.model, "autocompress", path, ctx.task.example_input,
                                        check_inputs=ctx.task.eval_loader(), plan=plan.to_dict(),
                                        base_model=ctx.task.model)
                artifact_id = upload_artifact(study_or_trial=trial, file_path=str(path), artifact_store=store,
                                              mimetype="application/zip")
            trial.set_user_attr("artifact_id", artifact_id)
            trial.set_user_attr("artifact_bytes", exported.size_bytes)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.set_user_attr("timing", {**{k: round(v, 4) for k, v in result.timing.items()}, "pipeline": ran,
                                           "distillation": result.distillation.get("seconds"),
                                           "export": time.perf_counter() - started - ran})
            trial.set_constraint(CONSTRAINT_KEY, drop - req.max_drop)
            return [float(value), *costs]
        except Exception as exc:
            trial.set_user_attr("error", describe_error(exc))
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise

    return objective


def _sampler(seed: int | None, n_startup: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Constraints come from trial.set_constraint (optuna 5 deprecates constraints_func for it); TPE reads
        # them from every finished trial, so constraint violations steer the search like constraints_func did.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=n_startup)


FINISHED = ("COMPLETE", "FAIL", "PRUNED")


def finished_trials(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def run_study(task_ref: str, requirements: Any, objectives: list[str], trials: int, *, name: str,
              storage: str | None = None, timeout: float | None = None, seed: int | None = 0,
              device: str = "auto", threads: int | None = None, artifacts: str | None = None,
              n_neighbours: int = 3, enqueue: Sequence[dict[str, Any]] = (), on_trial: Callable[[Any, Any], None] | None = None,
              log: Callable[[str], None] | None = None) -> Any:
    """Create or resume study ``name`` and run trials until ``trials`` have finished (complete or failed).

    ``trials`` counts the total: a resumed study runs only the missing ones. A new study gets the selector's
    plan as trial 0, then ``n_neighbours`` of its neighbours, then the ``enqueue`` parameter dicts (see
    :func:`trial_params_from_plan`). Returns the study.
    """
    import optuna

    from .profile import Profile
    from .task import load_task

    if trials < 1:
        raise StudyError(f"--trials {trials}", "a total number of trials ≥ 1", "pass e.g. --trials 12")
    backend, url = resolve_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    task = load_task(task_ref)
    try:
        existing = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        existing = None
    say = log or (lambda message: None)
    if existing is not None and ATTR in existing.user_attrs:
        meta = existing.user_attrs[ATTR]
        _check_resume(meta, task.name, requirements, objectives, name)
        original = Profile.from_dict(meta["original"])
        space = SearchSpace.from_dict(meta["space"])
        from .plan import Plan

        seed_plan = Plan.load(meta["seed_plan"])
        reasons = list(meta["reasons"])
        art = Path(artifacts).absolute() if artifacts else Path(meta["artifacts"])
        say(f"resuming study {name!r} ({len(finished_trials(existing))} finished trials) in {mask_url(url)}")
    else:
        from .pipeline import measurement_device
        from .profile import profile_task
        from .selection import select

        say("profiling the original model (once per study)")
        original = profile_task(task, device=measurement_device(requirements), threads=threads)
        selection = select(original, requirements, task.model, task.example_input)
        seed_plan, reasons = selection.plan, [str(r) for r in selection.reasons]
        space = SearchSpace.for_model(original, requirements)
        art = Path(artifacts).absolute() if artifacts else artifact_dir(url, name)
    higher = original.metric.get("higher_is_better", True)
    directions = ["maximize" if higher else "minimize"] + ["minimize"] * len(objectives)
    already = len(finished_trials(existing)) if existing is not None else 0
    n_startup = min(10, max(3, trials // 3))
    sampler = _sampler(None if seed is None else seed + already, n_startup)
    art.mkdir(parents=True, exist_ok=True)
    # Workers sharing one storage file on this machine seed the study once: creating it, writing what was
    # measured and enqueueing the seeds happen under a lock in the artifact folder. (Workers on other machines
    # against PostgreSQL may race here; the first writer's measurements win, see below.)
    with _file_lock(art / ".seed.lock"):
        study = optuna.create_study(study_name=name, storage=backend, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        if [d.name.lower() for d in study.directions] != directions:
            found = [d.name.lower() for d in study.directions]
            raise StudyError(f"study {name!r} in {mask_url(url)} has directions {found}",
                             f"{directions} for objectives {objectives}", "use another --name")
        if ATTR not in study.user_attrs:
            study.set_user_attr(ATTR, {
                "schema_version": STUDY_SCHEMA_VERSION, "task": task.name, "task_ref": task_ref,
                "requirements": requirements.to_dict(), "objectives": objectives, "directions": directions,
                "metric": original.metric.get("name"), "original": original.to_dict(), "space": space.to_dict(),
                "seed_plan": seed_plan.to_dict(), "reasons": reasons, "artifacts": str(art),
                "original_widths": _arch.layer_widths(_arch.capture(task.model)),
            })
            seeds = [seed_plan, *neighbours(seed_plan)[:max(0, n_neighbours)]]
            for plan in seeds:
                study.enqueue_trial(trial_params_from_plan(plan, space), user_attrs={"seeded": plan is seed_plan})
            for params in enqueue:
                study.enqueue_trial(dict(params), user_attrs={"seeded": False})
            say(f"seeded trial 0 with the selector's plan: {seed_plan.summary()}")
    fail_dead_trials(study, say)
    # Whoever wrote the study's measurements first, every worker uses them (one original profile per study).
    meta = study.user_attrs[ATTR]
    original = Profile.from_dict(meta["original"])
    space = SearchSpace.from_dict(meta["space"])
    missing = trials - len(finished_trials(study))
    if missing <= 0:
        say(f"study {name!r} already has {len(finished_trials(study))} finished trials (--trials {trials} "
            "counts the total); nothing to run")
        return study
    teacher = None
    try:
        from .distillation import compute_teacher_outputs

        teacher = compute_teacher_outputs(task.model, task, device=device)
    except Exception as exc:  # no cache: each trial computes teacher outputs as it goes
        say(f"teacher outputs not cached ({describe_error(exc)})")
    ctx = StudyContext(task=task, requirements=requirements, objectives=objectives, original=original,
                       space=space, seed_plan=seed_plan, reasons=reasons, artifacts=art, device=device,
                       teacher_outputs=teacher, log=log)
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(
        trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED))]
    if on_trial is not None:
        callbacks.append(lambda s, t: on_trial(s, t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(make_objective(ctx), n_trials=missing, timeout=timeout, catch=(Exception,),
                       callbacks=callbacks)
    return study


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


# ============================================================================================ reading
def study_meta(study: Any) -> dict[str, Any]:
    meta = study.user_attrs.get(ATTR)
    if not meta:
        raise StudyError(f"study {study.study_name!r} was not created by autocompress", "an autocompress study",
                         "run `autocompress study` to create one")
    return meta


def trial_record(trial: Any) -> dict[str, Any]:
    """The stable JSON record of one trial."""
    attrs = trial.user_attrs
    complete = trial.state.name == "COMPLETE"
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "values": list(trial.values) if complete and trial.values is not None else None,
        "feasible": is_feasible(trial),
        "metric_drop": attrs.get("metric_drop"),
        "reduction": attrs.get("reduction"),
        "plan": attrs.get("plan"),
        "plan_summary": attrs.get("plan_summary"),
        "metrics": attrs.get("metrics"),
        "seconds": attrs.get("seconds"),
        "aborted": attrs.get("aborted"),
        "error": attrs.get("error"),
        "seeded": attrs.get("seeded"),
        "artifact_id": attrs.get("artifact_id"),
    }


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    pa = [s * v for s, v in zip(sign, a)]
    pb = [s * v for s, v in zip(sign, b)]
    return all(x <= y for x, y in zip(pa, pb)) and any(x < y for x, y in zip(pa, pb))


def pareto_front(records: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """The feasible completed trials that no other feasible completed trial dominates, by number."""
    pool = [r for r in records if r["state"] == "COMPLETE" and r["feasible"] and r["values"] is not None]
    return [r for r in pool if not any(dominates(o["values"], r["values"], directions) for o in pool if o is not r)]


def show(study: Any, storage_url: str) -> dict[str, Any]:
    """The stable JSON of ``autocompress study show``."""
    meta = study_meta(study)
    original = meta["original"]
    return {
        "schema_version": STUDY_SCHEMA_VERSION,
        "name": study.study_name,
        "storage": mask_url(storage_url),
        "task": meta["task"],
        "requirements": meta["requirements"],
        "objectives": {"metric": meta.get("metric"), "costs": meta["objectives"], "directions": meta["directions"],
                       "values": [meta.get("metric") or "metric", *meta["objectives"]]},
        "original": {"params": original["params"], "flops": original["flops"], "size_mb": original["size_mb"],
                     "latency_ms": original["latency_ms"], "energy_mj": original.get("energy_mj", {}),
                     "metric": original["metric"]},
        "seed_plan": meta["seed_plan"],
        "reasons": meta["reasons"],
        "artifacts": meta["artifacts"],
        "trials": [trial_record(t) for t in study.get_trials(deepcopy=False)],
    }


def pareto(study: Any, storage_url: str) -> dict[str, Any]:
    data = show(study, storage_url)
    data["front"] = pareto_front(data.pop("trials"), data["objectives"]["directions"])
    return data


PREFER_KEYS = {"size": "size", "flops": "flops", "latency": "latency", "energy": "energy"}


def pick_trial(study: Any, number: int | None = None, best: bool = False, prefer: str | None = None) -> Any:
    """Trial ``number``, or the feasible Pareto trial with the largest reduction of ``prefer``."""
    meta = study_meta(study)
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        found = [t for t in trials if t.number == number]
        if not found:
            raise StudyError(f"no trial {number} in study {study.study_name!r}",
                             f"a trial number in 0..{len(trials) - 1}", "see `autocompress study show`")
        trial = found[0]
    else:
        front = pareto_front([trial_record(t) for t in trials], meta["directions"])
        if not front:
            raise StudyError(f"study {study.study_name!r} has no feasible completed trial",
                             "at least one trial within the threshold", "run more trials, or pick one with --trial")
        key = prefer or meta["requirements"]["objective"]
        chosen = max(front, key=lambda r: ((r["reduction"] or {}).get(key) or 0.0, -(r["metric_drop"] or 0.0)))
        trial = next(t for t in trials if t.number == chosen["number"])
    if trial.state.name != "COMPLETE" or "artifact_id" not in trial.user_attrs:
        why = trial.user_attrs.get("error") or trial.state.name.lower()
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


__all__ = ["SearchSpace", "plan_from_trial", "trial_params_from_plan", "EarlyAbort", "run_study", "show", "pareto",
           "pareto_front", "pick_trial", "export_trial", "resolve_storage", "artifact_dir", "StudyError", "mask_url"]

# Export of a trial lives with export; these names stay importable from here.
from .export.trial import batch_like, download_trial_model, export_trial, trial_widths  # noqa: E402, F401
