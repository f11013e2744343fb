"""What one trial does and what it records: the objectives, the threshold constraint and the trial's artifacts.

- **Objectives.** Maximise the task metric (minimise it when lower is better) and minimise the compressed
  model's cost(s): ``size`` (MB), ``latency`` (batch-64 ms), ``flops`` (MACs), ``energy`` (batch-64 mJ).
  :func:`figures` and :func:`costs` are the one place a model's figures and cost values are read from a profile.
- **Constraint.** ``metric_drop - max_drop`` set with ``trial.set_constraint``: feasible when ≤ 0.
- **Per trial.** One ``pipeline.run_plan`` (no back-off). An epoch callback writes the metric after each epoch
  into the trial's ``curve`` attribute and stops distillation once the threshold is out of reach
  (:class:`~autocompress.study.abort.EarlyAbort`, the trial's own progress) or once the study's earlier trials
  say it cannot reach the threshold or the front (:class:`~autocompress.study.rungs.RungRule`, at rungs); such a
  trial is measured like any other, its ``aborted`` attribute says why. A trial that raises, or measures NaN,
  records its message and raises (the study marks it failed).
- **Artifacts.** Each completed trial's model is exported as an ``autocompress`` archive (``.acz``) into the
  study's artifact folder (an :class:`~autocompress.study.storage.AtomicArtifactStore`).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..metrics import metric_threshold
from ..report import figures
from ..threads import trial_threads, use_threads
from ..errors import describe_error
from ._common import StudyError
from .abort import EarlyAbort
from .rungs import CURVE_ATTR, PRUNED_ATTR, RUNGS, RungRule, structure_figures, structure_key
from .space import SearchSpace, plan_from_trial
from .storage import AtomicArtifactStore

COSTS = ("size", "flops", "latency", "energy")
# A cost objective's value in a trial's ``values`` and in the original model's figures, with its unit.
COST_UNITS = {"size": "MB", "flops": "MACs", "latency": "ms (batch 64)", "energy": "mJ (batch 64)"}
CONSTRAINT_KEY = "metric_drop_over_max"  # the trial's constraint: metric_drop - max_drop (feasible when ≤ 0)
WORKER_ATTR = "worker"  # {"host", "pid"} of the process running a trial, to tell a dead worker's trial


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


def costs(profile: Any, objectives: Sequence[str]) -> list[float]:
    """The cost values of ``objectives`` (names from :data:`COSTS`, in their units, see :data:`COST_UNITS`); NaN
    where one was not measured. ``profile`` is a Profile, its ``to_dict()`` or its :func:`figures`."""
    figs = figures(profile)
    by_name = {"size": figs["size_mb"], "flops": figs["flops"], "latency": figs["latency_ms"].get("batch_64"),
               "energy": figs["energy_mj"].get("batch_64")}
    return [float("nan") if by_name[o] is None else float(by_name[o]) for o in objectives]


def result_costs(result: Any, objectives: Sequence[str]) -> list[float]:
    """A pipeline result's cost values. Size and MACs as measured; latency and energy as the original's figure
    over the ratio measured side by side in the trial's own window (:mod:`autocompress.compare`), so that the
    machine's load when a trial ran does not move it on the Pareto front."""
    values = costs(result.compressed, objectives)
    original = costs(result.original, objectives)
    for i, name in enumerate(objectives):
        ratio = result.reduction.get(name)
        if name in ("latency", "energy") and result.side_by_side.get(name) and ratio and math.isfinite(ratio):
            values[i] = original[i] / ratio
    return values


def trial_constraints(trial: Any) -> dict[str, float]:
    """A trial's constraint values (``{CONSTRAINT_KEY: metric_drop - max_drop}``), from Optuna's record or, for
    studies made before it, the ``constraint`` attribute; empty when it has none."""
    constraints = dict(getattr(trial, "constraints", {}) or {})
    if not constraints and "constraint" in trial.user_attrs:
        constraints = {CONSTRAINT_KEY: trial.user_attrs["constraint"]}
    return constraints


def is_feasible(trial: Any) -> bool | None:
    """A completed trial's feasibility from its Optuna constraint; None for trials that did not complete."""
    if trial.state.name != "COMPLETE":
        return None
    constraints = trial_constraints(trial)
    return bool(constraints) and all(v <= 0 for v in constraints.values())


@dataclass
class StudyContext:
    """What every trial of this process needs: the task, what the study measured once, where models go.

    ``teacher_outputs``: the teacher's outputs on the training set; None to have the first trial that needs them
    compute them once for this process (see :class:`_TeacherOutputs`).
    """

    task: Any
    requirements: Any
    objectives: list[str]
    original: Any  # Profile
    space: SearchSpace
    artifacts: Path
    device: str = "auto"
    teacher_outputs: Any = None
    log: Callable[[str], None] | None = None
    threads: int | None = None  # --threads; None: see threads.trial_threads
    workers: Any = None  # a threads.WorkerRegistry of this study's workers on this machine
    rungs: tuple[int, ...] = RUNGS  # epochs at which the rung rule judges a trial; () turns it off


class _EpochWatch:
    """The trial's one epoch callback: writes its ``curve`` as epochs finish (other workers' rung rules read it)
    and asks every stop rule each epoch (EarlyAbort keeps per-epoch state); the first reason given stops it."""

    def __init__(self, trial: Any, rules: Sequence[Callable[[int, float], str | None]]) -> None:
        self.trial, self.rules = trial, list(rules)
        self.curve: list[float | None] = []
        self.reason: str | None = None

    def __call__(self, epoch: int, value: float) -> str | None:
        self.curve.append(float(value) if math.isfinite(value) else None)
        self.trial.set_user_attr(CURVE_ATTR, list(self.curve))
        verdicts = [rule(epoch, value) for rule in self.rules]
        self.reason = self.reason or next((v for v in verdicts if v), None)
        return self.reason


class _TeacherOutputs:
    """The teacher's outputs on the training set, computed by the first trial that runs, once per process.

    A cache that cannot be made (training data without indexable samples or with random transforms, more than
    the cache's byte limit: :class:`~autocompress.distillation.TeacherCacheRefused`) is logged and the trials
    run the teacher on every batch instead. Any other error is the teacher failing on the training data: it is
    that trial's failure (each later trial tries again, and fails the same way if it must).
    """

    def __init__(self, ctx: StudyContext) -> None:
        self.ctx = ctx
        self.done = ctx.teacher_outputs is not None
        self.outputs = ctx.teacher_outputs

    def get(self) -> Any:
        if self.done:
            return self.outputs
        from ..distillation import TeacherCacheRefused, compute_teacher_outputs

        task = self.ctx.task
        try:  # the same checks as distillation's own cache: no random transforms, the size cap
            self.outputs = compute_teacher_outputs(task.model, task, device=self.ctx.device)
        except TeacherCacheRefused as exc:
            self._say(f"teacher outputs not cached ({describe_error(exc)})")
        self.done = True
        return self.outputs

    def _say(self, message: str) -> None:
        if self.ctx.log:
            self.ctx.log(message)


def worker() -> dict[str, Any]:
    """This process, as a trial records its worker: host name and pid."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def make_objective(ctx: StudyContext) -> Callable[[Any], list[float]]:
    """The objective: one pipeline run per trial, its figures in the trial's user attributes."""
    from optuna.artifacts import upload_artifact

    from .._arch import capture, layer_widths
    from ..export import export_model
    from ..export.trial import ARTIFACT_FORMAT_ATTR, WIDTHS_ATTR
    from ..pipeline import run_plan
    from ..profile import runtime_program_bytes
    from ..pruning import PruningWarning

    ctx.artifacts.mkdir(parents=True, exist_ok=True)
    store = AtomicArtifactStore(ctx.artifacts)
    teacher = _TeacherOutputs(ctx)
    req = ctx.requirements
    metric = ctx.original.metric
    higher = metric.get("higher_is_better", True)
    target = metric_threshold(metric, req.max_drop)

    def objective(trial: Any) -> list[float]:
        started = time.perf_counter()
        trial.set_user_attr(WORKER_ATTR, worker())
        # Re-checked every trial: a worker (or any busy process) that started or stopped since shifts this one's
        # share of the cores.
        threads = use_threads(trial_threads(ctx.workers, ctx.threads))
        trial.set_user_attr("threads", threads)
        try:
            plan = plan_from_trial(trial, ctx.space)
            trial.set_user_attr("plan", plan.to_dict())
            trial.set_user_attr("plan_summary", plan.summary())
            abort = _stop_rules(trial, ctx, plan, target, higher)
            teacher_started = time.perf_counter()
            teacher_outputs = teacher.get()
            teacher_seconds = time.perf_counter() - teacher_started
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PruningWarning)  # the trial's `notes` attribute keeps them
                result = run_plan(ctx.task, plan, ctx.original, requirements=req, device=ctx.device,
                                  teacher_outputs=teacher_outputs, epoch_callback=abort, progress=False,
                                  threads=threads)
            ran = time.perf_counter() - started
            trial_costs = _record(trial, ctx, result, abort, plan)
            value = result.compressed.metric.get("value")
            program = runtime_program_bytes(result.model)
            with tempfile.TemporaryDirectory() as folder:
                if program is not None:
                    # The ONNX Runtime engine: the stored model is the .onnx file the trial was measured with.
                    path = Path(folder) / f"trial-{trial.number}.onnx"
                    path.write_bytes(program)
                    size_bytes, mimetype = len(program), "application/octet-stream"
                    trial.set_user_attr(ARTIFACT_FORMAT_ATTR, "onnx")
                    if result.float_model is not None:
                        trial.set_user_attr(WIDTHS_ATTR, layer_widths(capture(result.float_model)))
                else:
                    path = Path(folder) / f"trial-{trial.number}.acz"
                    size_bytes = export_model(result.model, "autocompress", path, ctx.task.example_input,
                                              check_inputs=ctx.task.eval_loader(), plan=plan.to_dict(),
                                              base_model=ctx.task.model).size_bytes
                    mimetype = "application/zip"
                artifact_id = upload_artifact(study_or_trial=trial, file_path=str(path), artifact_store=store,
                                              mimetype=mimetype)
            trial.set_user_attr("artifact_id", artifact_id)
            trial.set_user_attr("artifact_bytes", size_bytes)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            timing = {**{k: round(v, 4) for k, v in result.timing.items()}, "pipeline": ran - teacher_seconds,
                      "distillation": result.distillation.get("seconds"),
                      "export": time.perf_counter() - started - ran}
            if teacher_seconds > 0.01:  # the trial that cached the teacher's outputs for the others
                timing["teacher_cache"] = teacher_seconds
            trial.set_user_attr("timing", timing)
            trial.set_constraint(CONSTRAINT_KEY, float(result.metric_drop) - req.max_drop)
            return [float(value), *trial_costs]
        # Not a catch: whatever a user's model or task raises is recorded as the trial's reason, then re-raised
        # for study.optimize to mark the trial failed.
        except Exception as exc:
            trial.set_user_attr("error", describe_error(exc))
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise

    return objective


def _stop_rules(trial: Any, ctx: StudyContext, plan: Any, target: float, higher: bool) -> _EpochWatch:
    """EarlyAbort and, when the trial belongs to a study, the rung rule, on one epoch callback."""
    name = ctx.original.metric.get("name") or "metric"
    epochs = plan.distillation.max_epochs
    rules: list[Callable[[int, float], str | None]] = [EarlyAbort(target, higher, epochs, metric_name=name)]
    study = getattr(trial, "study", None)
    if ctx.rungs and study is not None:
        key = structure_key(plan)

        def structure() -> dict[str, int] | None:
            # Only asked for when another trial could dominate this one; it prunes a copy once more. A plan that
            # cannot be pruned here was pruned by the pipeline already, so this is not expected to fail.
            from ..errors import AutocompressError

            try:
                figures_now = structure_figures(ctx.task, plan)
            except AutocompressError:
                return None
            trial.set_user_attr(PRUNED_ATTR, {**figures_now, **key})
            return figures_now

        rules.append(RungRule(study, trial.number, target, higher, epochs, key=key, structure=structure,
                              seeded=bool(trial.user_attrs.get("seeded")), rungs=ctx.rungs, metric_name=name))
    return _EpochWatch(trial, rules)


def _pruned_record(ctx: StudyContext, result: Any, plan: Any) -> dict[str, Any]:
    """The trial's pruned structure for later trials' rung rules: from the pipeline's pruning record, or (no
    pruning) the parameters and MACs of the model it trained."""
    info = result.pruning
    if info and "params_after" in info and "flops_after" in info:
        counted = {"params": int(info["params_after"]), "flops": int(info["flops_after"])}
    else:
        counted = structure_figures(ctx.task, plan)
    return {**counted, **structure_key(plan)}


def _record(trial: Any, ctx: StudyContext, result: Any, abort: _EpochWatch, plan: Any) -> list[float]:
    """Check a pipeline result can be a trial's values, store its figures in the trial's user attributes, and
    return its cost values."""
    if result.distillation.get("stopped_because") == "diverged":
        raise RuntimeError(f"training diverged ({result.distillation.get('stop_detail') or 'NaN loss'})")
    value = result.compressed.metric.get("value")
    if value is None or not math.isfinite(float(value)):
        raise RuntimeError(f"the compressed model's metric is {value} (training diverged)")
    trial_costs = result_costs(result, ctx.objectives)
    if not all(math.isfinite(c) for c in trial_costs):
        raise RuntimeError(f"a cost is not finite: {dict(zip(ctx.objectives, trial_costs))}")
    drop = float(result.metric_drop)
    trial.set_user_attr("metrics", figures(result.compressed))
    trial.set_user_attr("metric_drop", drop)
    trial.set_user_attr("reduction", {k: (None if math.isnan(v) else float(v)) for k, v in result.reduction.items()})
    trial.set_user_attr("feasible", bool(result.feasible))
    trial.set_user_attr("constraint", drop - ctx.requirements.max_drop)
    trial.set_user_attr("distillation", {k: result.distillation.get(k) for k in
                                         ("epochs_run", "best_epoch", "best_metric", "stopped_because",
                                          "stop_detail") if k in result.distillation})
    trial.set_user_attr(PRUNED_ATTR, _pruned_record(ctx, result, plan))
    # Only a stop the callback made: distillation's own threshold stop wins when both come in the same epoch.
    if abort.reason and result.distillation.get("stopped_because") == "callback":
        trial.set_user_attr("aborted", abort.reason)
    if result.notes:
        trial.set_user_attr("notes", list(result.notes))
    # The original's figure from the trial's own window, beside the candidate's (the ratios come from these).
    trial.set_user_attr("side_by_side", result.side_by_side)
    return trial_costs
