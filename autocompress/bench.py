"""Benchmarks: the thesis's tables for a task, against what a user would otherwise do, measured in one run.

A YAML definition (see ``studies/digits.yaml``) names the tasks, the training budget, the seed and three
sections; :func:`run_bench` runs them and writes a markdown report and a CSV:

1. **preservation** (thesis Tables 4–7): per threshold (1, 3, 5 points), one study minimising size, FLOPs and
   latency together; the best feasible X-fold reduction of each.
2. **targets** (thesis Tables 8–19): per objective and target, one study; the trial that reaches the target with
   the smallest drop (or, when none does, the largest feasible reduction), with its drop.
3. **baselines**, per objective at the same training budget and threshold: the Torch-Pruning recipe a user
   would write (global magnitude pruning to the target, then plain fine-tuning; also tried at half and a
   quarter of the target, the best kept), dynamic int8 alone, static int8 alone, the rule plan alone (the
   study's trial 0), a strong hand-written recipe (80% of the channels of every layer, distillation, static
   int8), and the full study. For each, the best reduction at ≤ max drop, and whether the study's feasible front
   dominates it (in metric and that reduction).

Every study and run of one benchmark uses the same seed and budget; the original model is measured by each
study, and each row's reductions are against the original measured in that study or run.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

BENCH_VERSION = 1
OBJECTIVE_KEYS = ("size", "flops", "latency")


class BenchError(ConfigError):
    """A benchmark definition that cannot be run."""


# ============================================================================================ definition
@dataclass(frozen=True)
class BenchDefinition:
    name: str
    tasks: tuple[str, ...]
    seed: int = 0
    budget: str = "high"
    max_drop: float = 1.0
    preservation: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)


def _fail(what: str, expected: str, fix: str) -> BenchError:
    return BenchError(what, expected, fix)


def load_definition(path: str | Path) -> BenchDefinition:
    """Parse and check a benchmark YAML file (``yaml.safe_load``: no Python objects)."""
    import yaml

    from ._io import safe_component

    path = Path(path)
    if not path.is_file():
        raise _fail(f"no benchmark file at {path}", "a YAML benchmark definition", "see studies/digits.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _fail(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "a YAML mapping",
                    "fix the file") from None
    if not isinstance(raw, dict):
        raise _fail(f"{path} holds a {type(raw).__name__}", "a YAML mapping with name, tasks and sections",
                    "see studies/digits.yaml")
    known = {"name", "tasks", "seed", "budget", "max_drop", "preservation", "targets", "baselines"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(f"unknown keys {unknown} in {path}", f"keys among {sorted(known)}", "remove or rename them")
    tasks = raw.get("tasks")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise _fail(f"tasks {tasks!r}", "a list of task references (digits, path/to/task.py, module:function)",
                    "add e.g. `tasks: [digits]`")
    definition = BenchDefinition(
        name=safe_component(raw.get("name") or path.stem), tasks=tuple(tasks), seed=int(raw.get("seed", 0)),
        budget=str(raw.get("budget", "high")), max_drop=float(raw.get("max_drop", 1.0)),
        preservation=dict(raw.get("preservation") or {}), targets=dict(raw.get("targets") or {}),
        baselines=dict(raw.get("baselines") or {}))
    from .requirements import Requirements

    Requirements(max_drop=definition.max_drop, budget=definition.budget)  # one-line errors for bad values
    for section in ("preservation", "targets", "baselines"):
        trials = getattr(definition, section).get("trials", 0)
        if getattr(definition, section) and (not isinstance(trials, int) or trials < 1):
            raise _fail(f"{section}.trials {trials!r}", "a number of trials ≥ 1", f"set {section}.trials")
    for key in definition.targets:
        if key not in (*OBJECTIVE_KEYS, "trials", "max_drop"):
            raise _fail(f"targets.{key}", f"targets per objective ({', '.join(OBJECTIVE_KEYS)}), trials, max_drop",
                        "rename the key")
    if not (definition.preservation or definition.targets or definition.baselines):
        raise _fail(f"{path} with no section", "at least one of preservation, targets, baselines",
                    "add a section")
    return definition


# ============================================================================================ rows
@dataclass
class Row:
    """One line of a table (and of the CSV)."""

    table: str
    task: str
    method: str
    objective: str = ""
    threshold: float | None = None
    target: float | None = None
    size: float | None = None
    flops: float | None = None
    latency: float | None = None
    metric: float | None = None
    drop: float | None = None
    feasible: bool | None = None
    met: bool | None = None
    dominated: bool | None = None
    trial: int | None = None
    plan: str = ""
    seconds: float | None = None

    def reduction(self, key: str) -> float | None:
        return getattr(self, key)


CSV_FIELDS = [f for f in Row.__dataclass_fields__]


@dataclass
class BenchResult:
    definition: BenchDefinition
    rows: list[Row]
    machine: dict[str, Any]
    seconds: dict[str, float]
    timing: dict[str, Any]

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(getattr(row, k)) for k in CSV_FIELDS})
        return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    return "" if value is None else value


# ============================================================================================ running
def machine_record() -> dict[str, Any]:
    import optuna
    import torch

    from . import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__,
                "autocompress": __version__}
    for name in ("torchvision", "torch_pruning", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # an optional package that is not there is simply not recorded
            pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "versions": versions}


class _Runner:
    def __init__(self, definition: BenchDefinition, storage_dir: Path, log: Callable[[str], None]) -> None:
        self.d = definition
        self.storage = f"sqlite:///{storage_dir / (definition.name + '.db')}"
        self.log = log
        self.rows: list[Row] = []
        self.seconds: dict[str, float] = {}
        self.timing: dict[str, Any] = {}
        self.counter = 0

    # ---------------------------------------------------------------------------------------- helpers
    def study(self, task_ref: str, objective: str, objectives: list[str], max_drop: float, target: float,
              trials: int) -> tuple[dict[str, Any], float]:
        from . import study as acs
        from .requirements import Requirements

        self.counter += 1
        name = f"{self.d.name}-{self.counter}-{objective}-{'-'.join(objectives)}-{max_drop:g}-{target:g}"
        requirements = Requirements(objective=objective, max_drop=max_drop, target=target, budget=self.d.budget)
        started = time.perf_counter()
        study = acs.run_study(task_ref, requirements, objectives, trials, name=name, storage=self.storage,
                              seed=self.d.seed)
        seconds = time.perf_counter() - started
        self.log(f"  study {name}: {trials} trials in {seconds:.0f}s")
        return acs.show(study, self.storage), seconds

    @staticmethod
    def feasible(data: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for t in data["trials"] if t["state"] == "COMPLETE" and t["feasible"]]

    @staticmethod
    def row_of(table: str, task: str, method: str, record: dict[str, Any] | None, **extra: Any) -> Row:
        row = Row(table=table, task=task, method=method, **extra)
        if record is not None:
            red = record.get("reduction") or {}
            row.size, row.flops, row.latency = red.get("size"), red.get("flops"), red.get("latency")
            row.metric = ((record.get("metrics") or {}).get("metric") or {}).get("value")
            row.drop, row.feasible = record.get("metric_drop"), record.get("feasible")
            row.trial, row.plan, row.seconds = record.get("number"), record.get("plan_summary") or "", \
                record.get("seconds")
        return row

    # ---------------------------------------------------------------------------------------- sections
    def preservation(self, task_ref: str, task_name: str) -> None:
        section = self.d.preservation
        for threshold in section.get("thresholds", [1, 3, 5]):
            data, seconds = self.study(task_ref, "size", list(section.get("objectives", OBJECTIVE_KEYS)),
                                       float(threshold), float(section.get("target", 30)), int(section["trials"]))
            feasible = self.feasible(data)
            row = Row(table="preservation", task=task_name, method="study", threshold=float(threshold),
                      seconds=seconds)
            for key in OBJECTIVE_KEYS:
                best = max(feasible, key=lambda t: (t["reduction"] or {}).get(key) or 0.0, default=None)
                setattr(row, key, (best["reduction"] or {}).get(key) if best else None)
            row.feasible = bool(feasible)
            row.plan = f"{len(feasible)} of {len(data['trials'])} trials feasible"
            self.rows.append(row)

    def targets(self, task_ref: str, task_name: str) -> None:
        section = self.d.targets
        max_drop = float(section.get("max_drop", self.d.max_drop))
        for objective in OBJECTIVE_KEYS:
            for target in section.get(objective, []):
                data, seconds = self.study(task_ref, objective, [objective], max_drop, float(target),
                                           int(section["trials"]))
                feasible = self.feasible(data)
                reaching = [t for t in feasible if ((t["reduction"] or {}).get(objective) or 0) >= float(target)]
                if reaching:
                    chosen = min(reaching, key=lambda t: (t["metric_drop"], -(t["reduction"][objective])))
                else:
                    chosen = max(feasible, key=lambda t: (t["reduction"] or {}).get(objective) or 0.0,
                                 default=None)
                row = self.row_of("targets", task_name, "study", chosen, objective=objective,
                                  threshold=max_drop, target=float(target))
                row.met = bool(reaching)
                row.seconds = seconds
                self.rows.append(row)

    def baselines(self, task_ref: str, task_name: str) -> None:
        from .task import load_task

        section = self.d.baselines
        max_drop = float(section.get("max_drop", self.d.max_drop))
        task = load_task(task_ref)
        for objective, target in (section.get("targets") or {}).items():
            if objective not in OBJECTIVE_KEYS:
                raise _fail(f"baselines.targets.{objective}", f"one of {', '.join(OBJECTIVE_KEYS)}",
                            "rename the key")
            target = float(target)
            data, seconds = self.study(task_ref, objective, [objective], max_drop, target, int(section["trials"]))
            if objective == "size":
                self.timing = trial_timing(data)
                self.seconds[f"{task_name}: study of {len(data['trials'])} trials (size)"] = seconds
            feasible = self.feasible(data)
            rows: list[Row] = []
            rows.extend(self.baseline_runs(task, data, objective, target, max_drop))
            seed = next((t for t in data["trials"] if t["seeded"]), None)
            rows.append(self.row_of("baselines", task_name, "rule plan alone (trial 0)", seed))
            best = max(feasible, key=lambda t: (t["reduction"] or {}).get(objective) or 0.0, default=None)
            study_row = self.row_of("baselines", task_name, "full study", best)
            study_row.seconds = seconds
            rows.append(study_row)
            higher = data["original"]["metric"].get("higher_is_better", True)
            for row in rows:
                row.objective, row.threshold, row.target = objective, max_drop, target
                if row.method != "full study":
                    row.dominated = front_dominates(feasible, row, objective, higher)
            self.rows.extend(rows)

    def baseline_runs(self, task: Any, data: dict[str, Any], objective: str, target: float,
                      max_drop: float) -> list[Row]:
        """The baselines that are single pipeline runs, at the study's training budget."""
        from .distillation import CombinedDistillation, DistillationConfig, FineTune
        from .pipeline import run_plan
        from .plan import Plan
        from .profile import Profile
        from .pruning import PruningConfig, solve_target
        from .quantization import quantization_config
        from .requirements import Requirements
        from .selection import BUDGET_EPOCHS, PRUNING_OBJECTIVE, SOLVER_TOLERANCE

        original = Profile.from_dict(_study_original(self.storage, data["name"]))
        requirements = Requirements(objective=objective, max_drop=max_drop, target=target, budget=self.d.budget)
        epochs = BUDGET_EPOCHS[self.d.budget]
        training = dict(stop="epochs", max_epochs=epochs, patience=3, lr=1e-3, seed=self.d.seed)

        def run(method: str, plan: Plan) -> Row:
            started = time.perf_counter()
            result = run_plan(task, plan, original, requirements=requirements, progress=False)
            record = {"reduction": result.reduction, "metric_drop": result.metric_drop, "feasible": result.feasible,
                      "metrics": {"metric": result.compressed.metric}, "plan_summary": plan.summary(),
                      "seconds": time.perf_counter() - started}
            return self.row_of("baselines", task.name, method, record)

        rows = []
        # The Torch-Pruning recipe: global magnitude pruning to the target (in the pruning objective: parameters
        # for size, MACs otherwise), plain fine-tuning; the best of the target, half and a quarter of it.
        recipe: list[Row] = []
        for fold in sorted({f for f in (target, target / 2, target / 4) if f >= 1.2}, reverse=True):
            solved = solve_target(task.model, task.example_input, "magnitude", "global",
                                  objective=PRUNING_OBJECTIVE[objective], target=fold * (1 + SOLVER_TOLERANCE),
                                  tolerance=SOLVER_TOLERANCE, progress=False)
            plan = Plan(pruning=PruningConfig(technique="magnitude", strategy="global", ratio=round(solved.ratio, 4)),
                        distillation=DistillationConfig(technique=FineTune(), **training),
                        quantization=quantization_config("none"))
            recipe.append(run(f"Torch-Pruning recipe ({fold:g}× {PRUNING_OBJECTIVE[objective]})", plan))
        rows.append(_best(recipe, objective, "Torch-Pruning recipe (magnitude/global + fine-tune)"))
        no_training = DistillationConfig(technique=FineTune(), stop="epochs", max_epochs=0, patience=None)
        for mode in ("dynamic", "static"):
            plan = Plan(pruning=PruningConfig(ratio=0.0), distillation=no_training,
                        quantization=quantization_config(mode))
            rows.append(run(f"{mode} int8 alone", plan))
        strong = Plan(pruning=PruningConfig(technique="magnitude", strategy="global", ratio=0.8, max_layer_ratio=0.8),
                      distillation=DistillationConfig(technique=CombinedDistillation(), **training),
                      quantization=quantization_config("static"))
        rows.append(run("hand recipe: 80% of every layer's channels, distillation, static int8", strong))
        return rows

    def run(self) -> None:
        from .task import load_task

        for task_ref in self.d.tasks:
            task_name = load_task(task_ref).name
            for section in ("preservation", "targets", "baselines"):
                if getattr(self.d, section):
                    self.log(f"{task_name}: {section}")
                    started = time.perf_counter()
                    getattr(self, section)(task_ref, task_name)
                    self.seconds[f"{task_name}: {section}"] = time.perf_counter() - started


def _best(rows: list[Row], objective: str, method: str) -> Row:
    """The feasible row with the largest reduction of ``objective`` (else the one with the smallest drop)."""
    feasible = [r for r in rows if r.feasible]
    best = max(feasible, key=lambda r: r.reduction(objective) or 0.0) if feasible else \
        min(rows, key=lambda r: r.drop if r.drop is not None else math.inf)
    best.plan = f"{best.method}: {best.plan}"
    best.method = method
    return best


def _study_original(storage: str, name: str) -> dict[str, Any]:
    import optuna

    from . import study as acs

    return optuna.load_study(study_name=name, storage=storage).user_attrs[acs.ATTR]["original"]


def front_dominates(front: Sequence[dict[str, Any]], row: Row, objective: str, higher_is_better: bool) -> bool:
    """Whether some feasible study trial is at least as good in the metric and in ``objective``'s reduction,
    and better in one of them."""
    if row.metric is None or row.reduction(objective) is None:
        return True
    sign = 1.0 if higher_is_better else -1.0
    for t in front:
        metric = ((t.get("metrics") or {}).get("metric") or {}).get("value")
        fold = (t.get("reduction") or {}).get(objective)
        if metric is None or fold is None:
            continue
        at_least = sign * metric >= sign * row.metric - 1e-12 and fold >= row.reduction(objective) - 1e-12
        better = sign * metric > sign * row.metric + 1e-12 or fold > row.reduction(objective) + 1e-12
        if at_least and better:
            return True
    return False


def trial_timing(data: dict[str, Any]) -> dict[str, Any]:
    """Mean seconds per trial by stage (from each trial's ``timing``), over the study's completed trials."""
    import optuna

    records = []
    study = optuna.load_study(study_name=data["name"], storage=data["storage"])
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and t.user_attrs.get("timing"):
            records.append(dict(t.user_attrs["timing"], total=t.user_attrs.get("seconds") or 0.0))
    if not records:
        return {}
    keys = sorted({k for r in records for k in r if isinstance(r[k], (int, float))})
    return {"trials": len(records), **{k: sum(r.get(k) or 0.0 for r in records) / len(records) for k in keys}}


def run_bench(path: str | Path, out_dir: str | Path | None = None, storage_dir: str | Path | None = None,
              log: Callable[[str], None] | None = None) -> tuple[BenchResult, Path, Path]:
    """Run the benchmark defined in ``path``; write ``<name>.md`` and ``<name>.csv`` into ``out_dir``
    (default: ``results/`` beside the definition), atomically. Returns the result and the two paths."""
    from ._io import atomic_write

    definition = load_definition(path)
    out = Path(out_dir) if out_dir else Path(path).parent / "results"
    say = log or (lambda message: None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = _Runner(definition, Path(storage_dir) if storage_dir else Path(tmp), say)
        runner.run()
    runner.seconds["total"] = time.perf_counter() - started
    result = BenchResult(definition, runner.rows, machine_record(), runner.seconds, runner.timing)
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{definition.name}.md", out / f"{definition.name}.csv"
    text = markdown(result, Path(path))
    atomic_write(csv_path, lambda fh: fh.write(result.csv().encode()))
    atomic_write(md_path, lambda fh: fh.write(text.encode()))
    return result, md_path, csv_path


# ============================================================================================ report
def _x(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}×"


def _d(value: float | None) -> str:
    return "—" if value is None else f"{-value:+.2f}"


def markdown(result: BenchResult, source: Path) -> str:
    d, rows = result.definition, result.rows
    m = result.machine
    lines = [f"# Benchmark `{d.name}`", "",
             f"Produced by `autocompress bench {source}` (benchmark format {BENCH_VERSION}). Seed {d.seed}, budget "
             f"`{d.budget}` for every study and baseline; tasks: {', '.join(d.tasks)}.",
             f"Machine: {m['platform']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
             "Wall times: " + "; ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()) + ".", "",
             "Reductions are X-fold (original ÷ compressed): size of the serialized weights, MACs per sample, "
             "batch-64 CPU latency (median of 30 after 5 warm-ups). Drops are in metric points (negative: better "
             "than the original).", ""]
    pres = [r for r in rows if r.table == "preservation"]
    if pres:
        lines += ["## 1. Performance preservation (thesis Tables 4–7)", "",
                  "Per threshold, one study minimising size, FLOPs and latency together; the best feasible reduction "
                  "of each (not necessarily from the same trial).", "",
                  "| task | max drop (points) | size | FLOPs | latency | feasible trials | study s |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        lines += [f"| {r.task} | {r.threshold:g} | {_x(r.size)} | {_x(r.flops)} | {_x(r.latency)} | {r.plan} | "
                  f"{r.seconds or 0:.0f} |" for r in pres]
        lines.append("")
    targ = [r for r in rows if r.table == "targets"]
    if targ:
        lines += ["## 2. Targets (thesis Tables 8–19)", "",
                  "Per objective and target, one study; the trial reaching the target with the smallest drop, or "
                  "(target missed) the largest feasible reduction.", "",
                  "| task | objective | target | achieved | metric change (points) | met | trial | plan | study s |",
                  "|---|---|---:|---:|---:|---|---:|---|---:|"]
        lines += [f"| {r.task} | {r.objective} | {r.target:g}× | {_x(r.reduction(r.objective))} | {_d(r.drop)} | "
                  f"{'yes' if r.met else 'no'} | {'' if r.trial is None else r.trial} | {r.plan} | "
                  f"{r.seconds or 0:.0f} |" for r in targ]
        lines.append("")
    base = [r for r in rows if r.table == "baselines"]
    if base:
        lines += ["## 3. Side by side, same training budget (one run)", "",
                  "Best reduction of the objective at ≤ the max drop; `dominated`: some feasible trial of the study "
                  "is at least as good in the metric and in this reduction, and better in one.", ""]
        for task in dict.fromkeys(r.task for r in base):
            for objective in dict.fromkeys(r.objective for r in base if r.task == task):
                group = [r for r in base if r.task == task and r.objective == objective]
                lines += [f"### {task}: {objective} (target {group[0].target:g}×, max drop {group[0].threshold:g})",
                          "", f"| method | {objective} × at ≤ max drop | size × | FLOPs × | latency × | metric change "
                          "| feasible | dominated by the study | plan | s |",
                          "|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
                for r in group:
                    at = _x(r.reduction(objective)) if r.feasible else f"— ({_x(r.reduction(objective))} over)"
                    dom = "" if r.method == "full study" else ("yes" if r.dominated else "**no**")
                    lines.append(f"| {r.method} | {at} | {_x(r.size)} | {_x(r.flops)} | {_x(r.latency)} | "
                                 f"{_d(r.drop)} | {'yes' if r.feasible else 'no'} | {dom} | {r.plan} | "
                                 f"{r.seconds or 0:.1f} |")
                study = next((r for r in group if r.method == "full study"), None)
                others = [r for r in group if r.method not in ("full study", "rule plan alone (trial 0)") and
                          r.feasible and r.reduction(objective)]
                if study and study.reduction(objective) and others:
                    best = max(others, key=lambda r: r.reduction(objective))
                    lines += ["", f"Study ÷ best other baseline ({best.method}): "
                              f"{study.reduction(objective) / best.reduction(objective):.2f}×."]
                lines.append("")
    if result.timing:
        t = result.timing
        stages = [k for k in ("prune", "distill", "quantize", "measure", "export") if k in t]
        lines += ["## Where a trial's time goes", "",
                  f"Mean over the {t['trials']} completed trials of the size study in section 3.", "",
                  "| stage | " + " | ".join(stages) + " | total |", "|---|" + "---:|" * (len(stages) + 1),
                  "| seconds | " + " | ".join(f"{t[k]:.2f}" for k in stages) + f" | {t['total']:.2f} |", ""]
    return "\n".join(lines)


__all__ = ["BenchDefinition", "BenchResult", "Row", "load_definition", "run_bench", "front_dominates"]
