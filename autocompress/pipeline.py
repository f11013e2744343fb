"""The one-shot pipeline: prune → distil (QAT inside the loop) → quantize → measure, under the threshold.

:func:`run_plan` runs one plan once. :func:`run` runs a plan under the user's requirements: when the result
loses more than ``max_drop`` points it backs off (a smaller pruning ratio, then a milder quantization mode);
when it holds the threshold but misses the target it prunes harder, within a bounded number of attempts. It
returns the best attempt that holds the threshold, or the original model when none does, and says so.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import metrics
from .distillation import DistillationConfig, distill
from .embeddings import EmbeddingConfig, apply_embeddings, oov_rate
from .errors import AutocompressError, ConfigError
from .plan import Plan
from .profile import Profile, profile_model, profile_task
from .quantization import convert, engine_name, prepare_qat, quantization_config, quantize
from .requirements import TIMED_OBJECTIVES, Requirements
from .pruning import SOLVER_TOLERANCE, prune, solve_above
from .selection import PRUNING_OBJECTIVE
from .task import Task

MAX_ATTEMPTS = 4
# Timed objectives move between measuring windows: the reviews encoder's batch-64 ratio moved by about 5% between
# runs of one model (2.81x at 21% of MLP channels pruned, 2.76x at 34%). A smaller step than that toward a
# timed target cannot be told from noise, so the pipeline never steps by less.
TIMED_MIN_STEP = 1.05
MILDER_QUANTIZATION = {"qat": "dynamic", "static": "dynamic", "dynamic": "none", "none": None}
REDUCTION_KEYS = ("size", "flops", "latency", "energy")


def check_attempts(attempts: int) -> None:
    """At least one pipeline run: with none, nothing would be compressed."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(f"--attempts {attempts}", "at least 1 pipeline run",
                          f"pass e.g. --attempts {MAX_ATTEMPTS} (the default)")


def measurement_device(requirements: Requirements | None) -> str:
    """Compressed and original models are measured on the deployment backend, like for like."""
    return "cuda" if requirements is not None and requirements.backend == "gpu" else "cpu"


def metric_drop(original: Profile, compressed: Profile) -> float:
    """The drop from ``original`` to ``compressed`` (points, or the metric's units: see
    :func:`autocompress.metrics.metric_drop`); negative when the compressed model is better."""
    return metrics.metric_drop(original.metric, compressed.metric["value"])


def reductions(original: Profile, compressed: Profile, side_by_side: dict[str, Any] | None = None) -> dict[
        str, float]:
    """X-fold reductions (original / compressed) of size, MACs, batch-64 latency and batch-64 energy.

    Latency and energy come from ``side_by_side`` (both models measured in one window, see
    :mod:`autocompress.compare`) when given: a ratio of two profiles taken at different times measures the
    machine's load as much as the model.
    """

    def fold(a: float | None, b: float | None) -> float:
        return float(a) / float(b) if a and b else float("nan")

    same_window = side_by_side or {}
    return {
        "size": fold(original.size_mb, compressed.size_mb),
        "flops": fold(original.flops, compressed.flops),
        "latency": (same_window["latency"]["ratio"] if same_window.get("latency") else
                    fold(original.latency_ms["batch_64"], compressed.latency_ms["batch_64"])),
        "energy": (same_window["energy"]["ratio"] if same_window.get("energy") else
                   fold((original.energy_mj or {}).get("batch_64"), (compressed.energy_mj or {}).get("batch_64"))),
    }


def measure_side_by_side(task: Task, candidate: nn.Module, original: Profile, compressed: Profile,
                         device: str, threads: int) -> dict[str, Any]:
    """The original and ``candidate`` measured in one window: batch-64 latency, and energy on CPU."""
    from .compare import energy_side_by_side, latency_side_by_side

    latency = latency_side_by_side(task.model, candidate, task.example_input, device=device, threads=threads)
    energy = None
    if device == "cpu":
        energy = energy_side_by_side(task.model, candidate, task.example_input, (original.flops, compressed.flops),
                                     latency, threads=threads)
    return {"latency": latency, "energy": energy}


@dataclass(frozen=True)
class PipelineResult:
    """A compressed model, the plan that made it, and how it measures against the original."""

    model: nn.Module
    plan: Plan
    original: Profile
    compressed: Profile
    metric_drop: float
    reduction: dict[str, float]
    feasible: bool | None = None  # drop ≤ max_drop (None without requirements)
    target_met: bool | None = None
    seconds: float = 0.0
    distillation: dict[str, Any] = field(default_factory=dict)
    pruning: dict[str, Any] = field(default_factory=dict)
    attempts: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    timing: dict[str, float] = field(default_factory=dict)  # seconds per stage: prune, distill, quantize, measure
    side_by_side: dict[str, Any] = field(default_factory=dict)  # the same-window figures behind latency/energy
    embeddings: dict[str, Any] = field(default_factory=dict)  # ids kept and bytes saved, OOV rate, int8 rows
    # Where ``model`` runs outside torch (the ONNX Runtime engine): the pruned, trained torch model it was made from.
    float_model: nn.Module | None = None

    def report(self, reasons: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """The stable report: ``original``, ``compressed``, ``reduction``, ``metric_drop``, ``plan``, ``reasons``."""

        from .report import figures

        return {
            "original": figures(self.original),
            "compressed": figures(self.compressed),
            "reduction": dict(self.reduction),
            "metric_drop": self.metric_drop,
            "feasible": self.feasible,
            "target_met": self.target_met,
            "plan": self.plan.to_dict(),
            "plan_summary": self.plan.summary(),
            "reasons": list(reasons),
            "attempts": list(self.attempts),
            "notes": list(self.notes),
            "side_by_side": dict(self.side_by_side),
            "embeddings": dict(self.embeddings),
            "seconds": self.seconds,
        }


def run_plan(task: Task, plan: Plan, original: Profile | None = None, *, requirements: Requirements | None = None,
             device: str = "auto", teacher_outputs: Any = None,
             epoch_callback: Callable[[int, float], Any] | None = None, progress: bool = True,
             threads: int | None = None) -> PipelineResult:
    """Run ``plan`` once on a copy of the task's model and measure the result against ``original``.

    The user's model is never modified: pruning, training and quantization work on copies. ``threads``: CPU
    threads for measuring (default: the original profile's).
    """
    started = time.perf_counter()
    measure_on = measurement_device(requirements)
    if original is None:
        original = profile_task(task, device=measure_on)
    notes: list[str] = []
    timing: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timing[stage] = timing.get(stage, 0.0) + now - mark
        mark = now

    lap("original")
    student: nn.Module
    pruning_info: dict[str, Any] = {}
    embedding_info: dict[str, Any] = {}
    source = task.model
    if plan.embeddings.trim_vocabulary:
        # First, so pruning and fine-tuning work on the compact table (its rows stay trainable).
        trimmed = apply_embeddings(task.model, plan.embeddings.replace(int8=False), task.train_loader(shuffle=False),
                                   **task.token_ids())
        source = trimmed.model
        embedding_info["trim"] = trimmed.trim.to_dict() if trimmed.trim else None
        embedding_info["oov"] = oov_rate(trimmed.model, task.eval_loader()).to_dict()
        lap("trim")
    if plan.pruning.ratio > 0:
        pruned = prune(source, task.example_input, plan.pruning, progress=progress)
        student = pruned.model
        pruning_info = {"params_before": pruned.params_before, "params_after": pruned.params_after,
                        "flops_before": pruned.flops_before, "flops_after": pruned.flops_after,
                        "notes": list(pruned.notes)}
        notes.extend(pruned.notes)
    else:
        student = copy.deepcopy(source) if source is task.model else source

    lap("prune")
    mode = plan.quantization_mode
    if mode == "qat":
        student = prepare_qat(student, plan.quantization, task.example_input)
    lap("quantize")

    distil_info: dict[str, Any] = {}
    config: DistillationConfig = plan.distillation
    if config.max_epochs > 0:
        measure = None
        if config.stop == "threshold" and config.target_metric is None and requirements is not None:
            # Aim halfway into the allowed drop, in the metric's direction and units.
            target = metrics.metric_threshold(original.metric, requirements.max_drop / 2)
            config = config.replace(target_metric=target)
        if config.stop == "threshold" and mode in ("static", "dynamic"):
            # The threshold is about the delivered model: int8 after training costs points of its own (ONNX
            # Runtime's dynamic int8 cost the reviews encoder 2.2), so every epoch is judged quantized.
            measure = _deployed_metric(task, plan)
        result = distill(student, task, config, teacher=task.model, device=device, callback=epoch_callback,
                         teacher_outputs=teacher_outputs, progress=progress, measure=measure)
        student = result.model
        distil_info = result.to_dict()
    lap("distill")

    student, structure, int8_rows = _deploy(student, plan, task, progress)
    if int8_rows is not None:
        embedding_info["int8"] = int8_rows
    lap("quantize")

    threads = threads or original.threads
    compressed = profile_model(student, task.example_input, task.eval_loader(), task.resolved_metric,
                               device=measure_on, threads=threads, task_name=task.name, structure=structure)
    side_by_side = measure_side_by_side(task, student, original, compressed, measure_on, threads)
    lap("measure")
    drop = metric_drop(original, compressed)
    reduction = reductions(original, compressed, side_by_side)
    feasible = target_met = None
    if requirements is not None:
        feasible = drop <= requirements.max_drop + 1e-9
        target_met = reduction[requirements.objective] >= requirements.target * (1 - 1e-9)
    return PipelineResult(model=student, plan=plan, original=original, compressed=compressed, metric_drop=drop,
                          reduction=reduction, feasible=feasible, target_met=target_met,
                          seconds=time.perf_counter() - started, distillation=distil_info, pruning=pruning_info,
                          notes=tuple(notes), timing=timing, side_by_side=side_by_side, embeddings=embedding_info,
                          float_model=structure)


def _deploy(student: nn.Module, plan: Plan, task: Task, progress: bool) -> tuple[nn.Module, nn.Module | None,
                                                                                dict[str, Any] | None]:
    """The steps after training: (the model as delivered, the torch model an ONNX Runtime program was made from
    or None, the int8 embedding record or None)."""
    int8_rows = None
    if plan.embeddings.int8:
        # Weight-only int8 rows: after training (the int8 table has no parameters), and before the int8 linears,
        # so that the quantization record's float architecture holds them and an archive rebuilds them.
        quantized_rows = apply_embeddings(student.cpu(), EmbeddingConfig(int8=True))
        student = quantized_rows.model
        int8_rows = quantized_rows.int8.to_dict() if quantized_rows.int8 else None
    # The ONNX Runtime engine makes every trial an ONNX program, float ones too (what is measured is what runs
    # there); ``structure`` keeps the torch model it was made from.
    mode = plan.quantization_mode
    structure = student.cpu() if engine_name(plan.quantization) == "onnxruntime" else None
    if mode == "qat":
        student = convert(student, calibration_loader=task.train_loader(shuffle=False), progress=progress,
                          example_input=task.example_input)
    elif mode in ("static", "dynamic") or structure is not None:
        student = quantize(student.cpu(), plan.quantization, task.train_loader(shuffle=False),
                           task.example_input, progress=progress).model
    return student, structure, int8_rows


def _deployed_metric(task: Task, plan: Plan) -> Callable[[nn.Module], float]:
    """The metric of a copy of a model in training after :func:`_deploy`, on the evaluation set as the final
    measurement reads it (dynamic int8's activation ranges depend on the batch)."""
    from .profile import evaluate

    def measure(model: nn.Module) -> float:
        delivered, _, _ = _deploy(copy.deepcopy(model).cpu().eval(), plan, task, progress=False)
        return float(evaluate(delivered, task.eval_loader(), task.resolved_metric, "cpu"))
    return measure


def _attempt_record(result: PipelineResult, objective: str) -> dict[str, Any]:
    return {"plan": result.plan.summary(), "ratio": result.plan.pruning.ratio,
            "quantization": result.plan.quantization_mode, "metric_drop": round(result.metric_drop, 3),
            "reduction": round(result.reduction[objective], 3), "feasible": result.feasible,
            "target_met": result.target_met, "seconds": round(result.seconds, 2)}




def _pruning_fold(result: PipelineResult, objective: str) -> float:
    """The reduction that pruning alone achieved, in the pruning objective (params or MACs)."""
    info = result.pruning
    if not info:
        return 1.0
    key = PRUNING_OBJECTIVE[objective]
    return info[f"{key}_before"] / max(info[f"{key}_after"], 1)


def pruning_source(task: Task, plan: Plan) -> nn.Module:
    """The model that ``plan`` prunes: the task's, with its vocabulary trimmed first when the plan says so (the
    pruning fold is counted on it)."""
    if not plan.embeddings.trim_vocabulary:
        return task.model
    config = plan.embeddings.replace(int8=False)
    return apply_embeddings(task.model, config, task.train_loader(shuffle=False), **task.token_ids()).model


def _with_pruning_fold(task: Task, plan: Plan, objective: str, fold: float, progress: bool) -> Plan:
    """``plan`` with the pruning ratio that the target solver finds for ``fold`` (aiming just above it)."""
    if fold <= 1.0 + 1e-6:
        return plan.replace(pruning=plan.pruning.replace(ratio=0.0))
    # The plan's head ratio is held (the transformer route prunes MLP channels before heads): solving with the
    # heads following the ratio instead found ratios whose pruned model fell short of the fold asked.
    solved = solve_above(pruning_source(task, plan), task.example_input, plan.pruning.technique, plan.pruning.strategy,
                         PRUNING_OBJECTIVE[objective], fold, round_to=plan.pruning.round_to, progress=progress,
                         head_ratio=plan.pruning.head_ratio)
    return plan.replace(pruning=plan.pruning.replace(ratio=round(solved.ratio, 4), strategy=solved.config.strategy,
                                                     head_ratio=solved.config.head_ratio))


def run(task: Task, plan: Plan, requirements: Requirements, *, original: Profile | None = None,
        device: str = "auto", max_attempts: int = MAX_ATTEMPTS, progress: bool = True,
        log: Callable[[str], None] | None = None) -> PipelineResult:
    """Run ``plan`` under ``requirements``, adjusting the pruning and quantization between attempts.

    Each adjustment is made in pruning-fold space (params for size, MACs otherwise) and turned into a ratio
    by the target solver. Over the threshold: go halfway (geometrically) back to the last fold that held it,
    or to no pruning; once that step is small, keep the whole vocabulary (if it was trimmed), then switch to a
    milder quantization mode (for size, only while no attempt has held the threshold). Under the threshold but
    short of the target: prune harder by the measured shortfall, never past a fold that broke the threshold.
    Returns the attempt with the largest reduction that holds the threshold; if none does, the original
    model, measured, with a note.
    """
    check_attempts(max_attempts)
    started = time.perf_counter()
    original = original or profile_task(task, device=measurement_device(requirements))
    objective = requirements.objective
    attempts: list[dict[str, Any]] = []
    best: PipelineResult | None = None
    held_fold = 1.0  # largest pruning fold known to hold the threshold at the current quantization
    broken_fold: float | None = None  # smallest pruning fold known to break it
    current = plan
    for attempt in range(max_attempts):
        try:
            result = run_plan(task, current, original, requirements=requirements, device=device, progress=progress)
        except AutocompressError as exc:
            attempts.append({"plan": current.summary(), "error": str(exc)})
            if log:
                log(f"attempt {attempt + 1}: {current.summary()} failed: {exc}")
            break
        attempts.append(_attempt_record(result, objective))
        if log:
            log(f"attempt {attempt + 1}: {current.summary()} → drop {result.metric_drop:.2f} points, "
                f"{result.reduction[objective]:.2f}× {objective}")
        if attempt == max_attempts - 1:
            if result.feasible and (best is None or result.reduction[objective] > best.reduction[objective]):
                best = result
            break
        fold = _pruning_fold(result, objective)
        if result.feasible:
            if best is None or result.reduction[objective] > best.reduction[objective]:
                best = result
            if result.target_met:
                break
            held_fold = max(held_fold, fold)
            # The measured shortfall, plus a small margin so that the next attempt lands past the target.
            proposed = fold * requirements.target / max(result.reduction[objective], 1e-9) * (1 + SOLVER_TOLERANCE)
            if objective in TIMED_OBJECTIVES:
                proposed = max(proposed, fold * TIMED_MIN_STEP)
            if broken_fold is not None:
                proposed = min(proposed, math.sqrt(fold * broken_fold))
            if proposed / fold < 1.01:
                break  # no room left between what holds and what breaks
            current = _with_pruning_fold(task, current, objective, proposed, progress)
        else:
            broken_fold = fold if broken_fold is None else min(broken_fold, fold)
            proposed = math.sqrt(held_fold * fold)
            if fold / proposed >= 1.03:
                current = _with_pruning_fold(task, current, objective, proposed, progress)
                continue
            if current.embeddings.trim_vocabulary:
                # Trimming costs the ids the training data never shows: keep the whole vocabulary before
                # giving up int8.
                current = current.replace(embeddings=current.embeddings.replace(trim_vocabulary=False))
                continue
            milder = MILDER_QUANTIZATION.get(current.quantization_mode)
            if milder is None or (best is not None and objective == "size"):
                break  # a milder mode stores more bytes: it cannot beat a size already held at this mode
            current = current.replace(quantization=quantization_config(milder, backend=current.quantization.backend))
            broken_fold = None  # a milder mode may hold the threshold where the harsher one broke
    notes: list[str] = []
    if best is None:
        notes.append(f"no attempt held the {requirements.max_drop:g}-point threshold; returning the original model")
        model = copy.deepcopy(task.model)
        best = PipelineResult(model=model, plan=plan.replace(pruning=plan.pruning.replace(ratio=0.0),
            quantization=quantization_config("none", backend=plan.quantization.backend),
            distillation=plan.distillation.replace(max_epochs=0)), original=original, compressed=original,
            metric_drop=0.0, reduction={k: 1.0 for k in REDUCTION_KEYS}, feasible=True,
            target_met=requirements.target <= 1.0)
    elif not best.target_met:
        notes.append(f"the threshold held but the {requirements.target:g}× {objective} target was not reached: "
                     f"best {best.reduction[objective]:.2f}× at {best.metric_drop:.2f} points")
    return PipelineResult(model=best.model, plan=best.plan, original=original, compressed=best.compressed,
                          metric_drop=best.metric_drop, reduction=best.reduction, feasible=best.feasible,
                          target_met=best.target_met, seconds=time.perf_counter() - started,
                          distillation=best.distillation, pruning=best.pruning, attempts=tuple(attempts),
                          notes=tuple(list(best.notes) + notes), side_by_side=best.side_by_side,
                          embeddings=best.embeddings, timing=best.timing)
