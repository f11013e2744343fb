"""Running a benchmark: its studies and baseline runs, one row each, then the report files.

The runner reads each study through the Study object :func:`~autocompress.study.run_study` returns and the
study package's records; it never reopens a storage (``study show`` masks passwords in the URL it reports).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .definition import OBJECTIVE_KEYS, BenchDefinition, _fail, load_definition
from .tables import BenchResult, Row, best_baseline, markdown

# The hand recipe a user would write, swept rather than guessed: uniform per-layer pruning from 50% to 90% in
# steps of 5 points, distillation at the study's epoch budget, static int8; the best feasible point is the row.
HAND_RECIPE_RATIOS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))
HAND_RECIPE = "hand recipe (uniform 50-90% sweep, distillation, static int8)"


def machine_record() -> dict[str, Any]:
    """Platform, CPUs, torch threads and the versions of the packages that made the numbers."""
    import optuna
    import torch

    from .. import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__,
                "autocompress": __version__}
    for name in ("torchvision", "torch_pruning", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):  # an optional package that is not there is simply not recorded
            pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "versions": versions}


@dataclass(frozen=True)
class _StudyRun:
    """A study the benchmark ran: the Optuna study, its trial records and its wall time."""

    study: Any
    records: list[Any]  # autocompress.study.TrialRecord
    seconds: float

    @property
    def feasible(self) -> list[Any]:
        return [t for t in self.records if t.complete and t.feasible]


class _Runner:
    def __init__(self, definition: BenchDefinition, storage_dir: Path, log: Callable[[str], None]) -> None:
        self.d = definition
        self.storage = f"sqlite:///{storage_dir / (definition.name + '.db')}"
        self.log = log
        self.rows: list[Row] = []
        self.seconds: dict[str, float] = {}
        self.epochs: dict[str, int] = {}  # epochs trained by each side-by-side study (rungs and aborts save some)
        self.timing: dict[str, Any] = {}
        self.counter = 0
        self.sweeps: dict[str, list[Row]] = {}  # task name -> the hand recipe's runs (see hand_recipe_sweep)
        from ..requirements import quantization_backend

        self.quantization_backend = quantization_backend(definition.backend)  # every baseline's int8 engine

    # ---------------------------------------------------------------------------------------- helpers
    def study(self, task_ref: str, objective: str, objectives: list[str], max_drop: float, target: float,
              trials: int) -> _StudyRun:
        from .. import study as acs
        from ..requirements import Requirements

        self.counter += 1
        name = f"{self.d.name}-{self.counter}-{objective}-{'-'.join(objectives)}-{max_drop:g}-{target:g}"
        requirements = Requirements(objective=objective, max_drop=max_drop, target=target, budget=self.d.budget,
                                    backend=self.d.backend)
        started = time.perf_counter()
        study = acs.run_study(task_ref, requirements, objectives, trials, name=name, storage=self.storage,
                              seed=self.d.seed)
        seconds = time.perf_counter() - started
        self.log(f"  study {name}: {trials} trials in {seconds:.0f}s")
        return _StudyRun(study, acs.trial_records(study), seconds)

    @staticmethod
    def row_of(table: str, task: str, method: str, record: Any | None, **extra: Any) -> Row:
        """A row from a study trial's record (``None``: a row without a result)."""
        row = Row(table=table, task=task, method=method, **extra)
        if record is not None:
            row.size, row.flops, row.latency = (record.reduction_of(k) for k in ("size", "flops", "latency"))
            row.metric, row.drop, row.feasible = record.metric_value, record.metric_drop, record.feasible
            row.trial, row.plan, row.seconds = record.number, record.plan_summary or "", record.seconds
        return row

    # ---------------------------------------------------------------------------------------- sections
    def preservation(self, task_ref: str, task_name: str) -> None:
        section = self.d.preservation
        for threshold in section.get("thresholds", [1, 3, 5]):
            run = self.study(task_ref, "size", list(section.get("objectives", OBJECTIVE_KEYS)), float(threshold),
                             float(section.get("target", 30)), int(section["trials"]))
            feasible = run.feasible
            row = Row(table="preservation", task=task_name, method="study", threshold=float(threshold),
                      seconds=run.seconds)
            for key in OBJECTIVE_KEYS:
                best = max(feasible, key=lambda t: t.reduction_of(key) or 0.0, default=None)
                setattr(row, key, best.reduction_of(key) if best else None)
            row.feasible = bool(feasible)
            row.plan = f"{len(feasible)} of {len(run.records)} trials feasible"
            self.rows.append(row)

    def targets(self, task_ref: str, task_name: str) -> None:
        section = self.d.targets
        max_drop = float(section.get("max_drop", self.d.max_drop))
        for objective in OBJECTIVE_KEYS:
            for target in section.get(objective, []):
                run = self.study(task_ref, objective, [objective], max_drop, float(target), int(section["trials"]))
                feasible = run.feasible
                reaching = [t for t in feasible if (t.reduction_of(objective) or 0) >= float(target)]
                if reaching:
                    chosen = min(reaching, key=lambda t: (t.metric_drop, -(t.reduction_of(objective) or 0.0)))
                else:
                    chosen = max(feasible, key=lambda t: t.reduction_of(objective) or 0.0, default=None)
                row = self.row_of("targets", task_name, "study", chosen, objective=objective,
                                  threshold=max_drop, target=float(target))
                row.met = bool(reaching)
                row.seconds = run.seconds
                self.rows.append(row)

    def baselines(self, task_ref: str, task_name: str) -> None:
        from .. import study as acs
        from ..profile import Profile
        from ..task import load_task

        section = self.d.baselines
        max_drop = float(section.get("max_drop", self.d.max_drop))
        task = load_task(task_ref)
        for objective, target in (section.get("targets") or {}).items():
            if objective not in OBJECTIVE_KEYS:
                raise _fail(f"baselines.targets.{objective}", f"one of {', '.join(OBJECTIVE_KEYS)}",
                            "rename the key")
            target = float(target)
            run = self.study(task_ref, objective, [objective], max_drop, target, int(section["trials"]))
            self.epochs[f"{task_name}: {objective} study of {len(run.records)} trials"] = \
                acs.results.study_epochs(run.study)
            if objective == "size":
                self.timing = trial_timing(run.study)
                self.seconds[f"{task_name}: study of {len(run.records)} trials (size)"] = run.seconds
            original = Profile.from_dict(acs.study_meta(run.study)["original"])
            rows = self.baseline_runs(task, original, objective, target, max_drop)
            seed = next((t for t in run.records if t.seeded), None)
            rows.append(self.row_of("baselines", task_name, "rule plan alone (trial 0)", seed))
            best = max(run.feasible, key=lambda t: t.reduction_of(objective) or 0.0, default=None)
            study_row = self.row_of("baselines", task_name, "full study", best)
            study_row.seconds = run.seconds
            guess = acs.study_meta(run.study).get("estimate")
            if guess:
                study_row.estimate, study_row.estimate_low, study_row.estimate_high = \
                    guess["point"], guess["low"], guess["high"]
            rows.append(study_row)
            higher = original.metric.get("higher_is_better", True)
            for row in rows:
                row.objective, row.threshold, row.target = objective, max_drop, target
                if row.method != "full study":
                    row.dominated = front_dominates(run.feasible, row, objective, higher)
            if objective == "latency" and best is not None:
                self.time_against_best(task, run.study, best, study_row, best_baseline(rows, objective))
            for row in rows:
                row.model = None  # the models were kept for the timing above only
            self.rows.extend(rows)

    def time_against_best(self, task: Any, study: Any, best: Any, study_row: Row, baseline: Row | None) -> None:
        """Time the study's best trial against the best other baseline in one window (see
        :attr:`Row.latency_vs_best`): each row's own latency was timed against the original minutes apart."""
        from ..compare import latency_side_by_side
        from ..export import load
        from ..export.trial import download_trial_model

        if baseline is None or baseline.model is None:
            return
        with tempfile.TemporaryDirectory() as folder:
            path = download_trial_model(study, study.trials[best.number], folder)
            mine = load(path, base_model=task.model)
        timed = latency_side_by_side(baseline.model, mine, task.example_input)
        study_row.latency_vs_best, study_row.latency_vs_best_rounds = timed["ratio"], timed["rounds"]
        self.log(f"{task.name}: study best (trial {best.number}) against {baseline.method}, one window: "
                 f"{timed['ratio']:.2f}× ({timed['original_ms']:.2f} ms vs {timed['compressed_ms']:.2f} ms)")

    def baseline_runs(self, task: Any, original: Any, objective: str, target: float, max_drop: float) -> list[Row]:
        """The baselines that are single pipeline runs, at the study's training budget."""
        from .. import transformer_route
        from ..distillation import DistillationConfig, FineTune
        from ..embeddings import EmbeddingConfig
        from ..pipeline import run_plan
        from ..plan import Plan
        from ..pruning import PruningConfig, solve_above
        from ..quantization import quantization_config
        from ..requirements import Requirements
        from ..selection import BUDGET_EPOCHS, PRUNING_OBJECTIVE

        requirements = Requirements(objective=objective, max_drop=max_drop, target=target, budget=self.d.budget,
                                    backend=self.d.backend)
        epochs = BUDGET_EPOCHS[self.d.budget]
        training = dict(stop="epochs", max_epochs=epochs, patience=3, lr=1e-3, seed=self.d.seed)

        def run(method: str, plan: Plan) -> Row:
            started = time.perf_counter()
            result = run_plan(task, plan, original, requirements=requirements, progress=False)
            red = result.reduction
            return Row(table="baselines", task=task.name, method=method, size=red.get("size"),
                       flops=red.get("flops"), latency=red.get("latency"), metric=result.compressed.metric.get("value"),
                       drop=result.metric_drop, feasible=result.feasible, plan=plan.summary(),
                       seconds=time.perf_counter() - started, model=result.model)

        rows = []
        # Transformers (on CPU, with a word embedding): Torch-Pruning's own recipe for them scores by group norm,
        # and their CPU int8 is dynamic; the embedding steps are baselines of their own.
        transformer = transformer_route.applies(original, requirements)
        technique = "group_norm" if transformer else "magnitude"
        if transformer:
            training["lr"] = transformer_route.FINETUNE_LR  # 1e-3 would erase a pretrained encoder
        # The Torch-Pruning recipe: global pruning to the target (in the pruning objective: parameters for size,
        # MACs otherwise), plain fine-tuning; the best of the target, half and a quarter of it.
        recipe: list[Row] = []
        for fold in sorted({f for f in (target, target / 2, target / 4) if f >= 1.2}, reverse=True):
            solved = solve_above(task.model, task.example_input, technique, "global", PRUNING_OBJECTIVE[objective],
                                 fold)
            plan = Plan(pruning=PruningConfig(technique=technique, strategy="global", ratio=round(solved.ratio, 4)),
                        distillation=DistillationConfig(technique=FineTune(), **training),
                        quantization=quantization_config("none", backend=self.quantization_backend))
            recipe.append(run(f"Torch-Pruning recipe ({fold:g}× {PRUNING_OBJECTIVE[objective]})", plan))
        rows.append(_best(recipe, objective, f"Torch-Pruning recipe ({technique}/global + fine-tune)"))
        no_training = DistillationConfig(technique=FineTune(), stop="epochs", max_epochs=0, patience=None)
        if transformer:
            dynamic = quantization_config("dynamic", backend=self.quantization_backend)
            for method, plan in (
                    ("dynamic int8 alone", Plan(pruning=PruningConfig(ratio=0.0), distillation=no_training,
                                                quantization=dynamic)),
                    ("int8 embeddings + dynamic int8 linears", Plan(
                        pruning=PruningConfig(ratio=0.0), distillation=no_training, quantization=dynamic,
                        embeddings=EmbeddingConfig(int8=True))),
                    ("vocabulary trimming alone", Plan(
                        pruning=PruningConfig(ratio=0.0), distillation=no_training,
                        quantization=quantization_config("none", backend=self.quantization_backend),
                        embeddings=EmbeddingConfig(trim_vocabulary=True)))):
                rows.append(run(method, plan))
            return rows
        for mode in ("dynamic", "static"):
            plan = Plan(pruning=PruningConfig(ratio=0.0), distillation=no_training,
                        quantization=quantization_config(mode, backend=self.quantization_backend))
            rows.append(run(f"{mode} int8 alone", plan))
        rows.append(_best(self.hand_recipe_sweep(task, run, training), objective, HAND_RECIPE))
        return rows

    def hand_recipe_sweep(self, task: Any, run: Callable[[str, Any], Row], training: dict[str, Any]) -> list[Row]:
        """The hand recipe at every uniform ratio of :data:`HAND_RECIPE_RATIOS`: the same share of every layer's
        channels (magnitude), distillation from the original at the study's epoch budget, static int8.

        The runs do not depend on the objective, so they are made once per task and each objective keeps its own
        best feasible point (:func:`_best` on copies).
        """
        import copy

        from ..distillation import CombinedDistillation, DistillationConfig
        from ..plan import Plan
        from ..pruning import PruningConfig
        from ..quantization import quantization_config

        if task.name not in self.sweeps:
            rows = []
            for ratio in HAND_RECIPE_RATIOS:
                plan = Plan(pruning=PruningConfig(technique="magnitude", strategy="uniform", ratio=ratio),
                            distillation=DistillationConfig(technique=CombinedDistillation(), **training),
                            quantization=quantization_config("static", backend=self.quantization_backend))
                rows.append(run(f"hand recipe, uniform {ratio:.0%}", plan))
            self.sweeps[task.name] = rows
        return [copy.copy(r) for r in self.sweeps[task.name]]

    def run(self) -> None:
        from ..task import load_task

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


def front_dominates(front: Sequence[Any], row: Row, objective: str, higher_is_better: bool) -> bool | None:
    """Whether some feasible study trial (a :class:`~autocompress.study.TrialRecord`) is at least as good in the
    metric and in ``objective``'s reduction, and better in one of them; None for a row without a result (a
    baseline that did not run is not dominated, it is missing)."""
    mine = row.reduction(objective)
    if row.metric is None or mine is None:
        return None
    sign = 1.0 if higher_is_better else -1.0
    for t in front:
        metric, fold = t.metric_value, t.reduction_of(objective)
        if metric is None or fold is None:
            continue
        at_least = sign * metric >= sign * row.metric - 1e-12 and fold >= mine - 1e-12
        better = sign * metric > sign * row.metric + 1e-12 or fold > mine + 1e-12
        if at_least and better:
            return True
    return False


def trial_timing(study: Any) -> dict[str, Any]:
    """Mean seconds per trial by stage (from each trial's ``timing``), over the study's completed trials."""
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and t.user_attrs.get("timing"):
            records.append(dict(t.user_attrs["timing"], total=t.user_attrs.get("seconds") or 0.0))
    if not records:
        return {}
    keys = sorted({k for r in records for k in r if isinstance(r[k], (int, float))})
    return {"trials": len(records), **{k: sum(r.get(k) or 0.0 for r in records) / len(records) for k in keys}}


def run_bench(path: str | Path, out_dir: str | Path | None = None, storage_dir: str | Path | None = None,
              log: Callable[[str], None] | None = None, backend: str | None = None) -> tuple[BenchResult, Path, Path]:
    """Run the benchmark defined in ``path``; write ``<name>.md`` and ``<name>.csv`` into ``out_dir``
    (default: ``results/`` beside the definition), atomically. Returns the result and the two paths.

    ``backend`` overrides the definition's (``cpu`` unless it says otherwise); a benchmark on another backend
    than its file's is named ``<name>-<backend>``, so its tables do not replace the file's own."""
    import dataclasses

    from .._io import atomic_write
    from ..requirements import Requirements

    definition = load_definition(path)
    command = str(Path(path))  # the arguments that reproduce the tables, as they will say
    if backend is not None and backend != definition.backend:
        Requirements(backend=backend)  # a one-line error for an unknown backend
        definition = dataclasses.replace(definition, backend=backend, name=f"{definition.name}-{backend}")
        command += f" --backend {backend}"
    out = Path(out_dir) if out_dir else Path(path).parent / "results"
    say = log or (lambda message: None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = _Runner(definition, Path(storage_dir) if storage_dir else Path(tmp), say)
        runner.run()
    runner.seconds["total"] = time.perf_counter() - started
    result = BenchResult(definition, runner.rows, machine_record(), runner.seconds, runner.timing, runner.epochs)
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{definition.name}.md", out / f"{definition.name}.csv"
    text = markdown(result, command)
    atomic_write(csv_path, lambda fh: fh.write(result.csv().encode()))
    atomic_write(md_path, lambda fh: fh.write(text.encode()))
    return result, md_path, csv_path
