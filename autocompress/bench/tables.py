"""A benchmark's results: its rows, the CSV and the markdown report."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .definition import BENCH_VERSION, BenchDefinition

NOT_RUN = "not run"  # a baseline row without a measured model (its run failed or produced nothing)


@dataclass
class Row:
    """One line of a table (and of the CSV). ``dominated`` is None for a row without a result."""

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
    # The full study's row: the estimate made before the study (autocompress.estimate), X-fold of the objective.
    estimate: float | None = None
    estimate_low: float | None = None
    estimate_high: float | None = None
    # The full study's row on the latency table: its best trial's batch-64 latency against the best other
    # baseline's, timed in one window (interleaved rounds; baseline ms ÷ study ms). Rows timed in separate
    # windows minutes apart differ by up to 15% on these shared machines, more than the gap being judged.
    latency_vs_best: float | None = None
    latency_vs_best_rounds: int | None = None
    # The compressed model behind a baseline row, kept in memory for that timing; never written out.
    model: Any = field(default=None, repr=False, compare=False)

    def reduction(self, key: str) -> float | None:
        return getattr(self, key)

    @property
    def measured(self) -> bool:
        """Whether the row holds a measured model (a metric); a baseline that did not run holds none."""
        return self.metric is not None


CSV_FIELDS = [f for f in Row.__dataclass_fields__ if f != "model"]


@dataclass
class BenchResult:
    definition: BenchDefinition
    rows: list[Row]
    machine: dict[str, Any]
    seconds: dict[str, float]
    timing: dict[str, Any]
    epochs: dict[str, int] = field(default_factory=dict)  # epochs trained per side-by-side study

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


def _x(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}×"


def _d(value: float | None) -> str:
    return "—" if value is None else f"{-value:+.2f}"


def markdown(result: BenchResult, source: Path | str) -> str:
    """The benchmark's report: machine and versions, then one table per section that ran."""
    d, rows = result.definition, result.rows
    m = result.machine
    lines = [f"# Benchmark `{d.name}`", "",
             f"Produced by `autocompress bench {source}` (benchmark format {BENCH_VERSION}). Seed {d.seed}, budget "
             f"`{d.budget}` for every study and baseline, backend `{d.backend}`; tasks: {', '.join(d.tasks)}.",
             f"Machine: {m['platform']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
             "Wall times: " + "; ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()) + ".",
             *(["Epochs trained (every trial's, stopped ones included): "
                + "; ".join(f"{k} {v}" for k, v in result.epochs.items()) + "."] if result.epochs else []), "",
             "Reductions are X-fold (original ÷ compressed): size of the serialized weights, MACs per sample, "
             "batch-64 CPU latency (median of 30 after 5 warm-ups). Metric changes are in points, compressed minus "
             "original (negative: points lost).", ""]
    lines += _preservation([r for r in rows if r.table == "preservation"])
    lines += _targets([r for r in rows if r.table == "targets"])
    lines += _baselines([r for r in rows if r.table == "baselines"])
    if result.timing:
        t = result.timing
        stages = [k for k in ("prune", "distill", "quantize", "measure", "export") if k in t]
        lines += ["## Where a trial's time goes", "",
                  f"Mean over the {t['trials']} completed trials of the size study in section 3.", "",
                  "| stage | " + " | ".join(stages) + " | total |", "|---|" + "---:|" * (len(stages) + 1),
                  "| seconds | " + " | ".join(f"{t[k]:.2f}" for k in stages) + f" | {t['total']:.2f} |", ""]
    return "\n".join(lines)


def _section(title: str, intro: str, header: str, align: str, rows: list[str]) -> list[str]:
    """A markdown section: its title, one paragraph, and a table (none at all without rows)."""
    return [title, "", intro, "", header, align, *rows, ""] if rows else []


def _preservation(pres: list[Row]) -> list[str]:
    return _section(
        "## 1. Performance preservation (thesis Tables 4–7)",
        "Per threshold, one study minimising size, FLOPs and latency together; the best feasible reduction of "
        "each (not necessarily from the same trial).",
        "| task | max drop (points) | size | FLOPs | latency | feasible trials | study s |",
        "|---|---:|---:|---:|---:|---|---:|",
        [f"| {r.task} | {r.threshold:g} | {_x(r.size)} | {_x(r.flops)} | {_x(r.latency)} | {r.plan} | "
         f"{r.seconds or 0:.0f} |" for r in pres])


def _targets(targ: list[Row]) -> list[str]:
    rows = []
    for r in targ:
        trial = "" if r.trial is None else r.trial
        rows.append(f"| {r.task} | {r.objective} | {r.target:g}× | {_x(r.reduction(r.objective))} | {_d(r.drop)} | "
                    f"{'yes' if r.met else 'no'} | {trial} | {r.plan} | {r.seconds or 0:.0f} |")
    intro = ("Per objective and target, one study; the trial reaching the target with the smallest drop, or "
             "(target missed) the largest feasible reduction.")
    header = "| task | objective | target | achieved | metric change (points) | met | trial | plan | study s |"
    return _section("## 2. Targets (thesis Tables 8–19)", intro, header, "|---|---|---:|---:|---:|---|---:|---|---:|",
                    rows)


def best_baseline(group: list[Row], objective: str) -> Row | None:
    """The feasible baseline (not the study, not its own seed) with the largest reduction of ``objective``."""
    others = [r for r in group if r.method not in ("full study", "rule plan alone (trial 0)") and
              r.feasible and r.reduction(objective)]
    return max(others, key=lambda r: r.reduction(objective) or 0.0, default=None)


def _baselines(base: list[Row]) -> list[str]:
    if not base:
        return []
    lines = ["## 3. Side by side, same training budget (one run)", "",
             "Best reduction of the objective at ≤ the max drop; `dominated`: some feasible trial of the study "
             f"is at least as good in the metric and in this reduction, and better in one; `{NOT_RUN}`: the "
             "baseline produced no measured model.", ""]
    for task in dict.fromkeys(r.task for r in base):
        for objective in dict.fromkeys(r.objective for r in base if r.task == task):
            group = [r for r in base if r.task == task and r.objective == objective]
            lines += [f"### {task}: {objective} (target {group[0].target:g}×, max drop {group[0].threshold:g})",
                      "", f"| method | {objective} × at ≤ max drop | size × | FLOPs × | latency × | "
                      "metric change | feasible | dominated by the study | plan | s |",
                      "|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
            lines += [_baseline_line(r, objective) for r in group]
            study = next((r for r in group if r.method == "full study"), None)
            best = best_baseline(group, objective)
            if study and study.reduction(objective) and best:
                lines += ["", f"Study ÷ best other baseline ({best.method}): "
                          f"{(study.reduction(objective) or 0.0) / (best.reduction(objective) or 1.0):.2f}×."]
                if objective == "latency" and study.latency_vs_best:
                    lines[-1] += (f" Timed side by side in one window (batch 64, {study.latency_vs_best_rounds} "
                                  f"interleaved rounds, median): **{study.latency_vs_best:.2f}×**.")
            if study and study.estimate:
                lines += ["", _estimate_line(study, objective)]
            lines.append("")
    return lines


ESTIMATE_TOLERANCE = 0.30  # the goal: the estimate within ±30% of what the study then found


def _estimate_line(study: Row, objective: str) -> str:
    found = study.reduction(objective) if study.feasible else None
    said = (f"Estimate before the study: {study.estimate:.2f}× ({_x(study.estimate_low)}–{_x(study.estimate_high)})"
            f"; the study found {_x(found)}")
    if not found:
        return said + "."
    off = study.estimate / found - 1.0
    return said + f": {off:+.0%} ({'within' if abs(off) <= ESTIMATE_TOLERANCE else 'outside'} ±30%)."


def _baseline_line(r: Row, objective: str) -> str:
    if not r.measured:  # the full study's row holds no result when no trial was feasible
        at = "no feasible trial" if r.method == "full study" else NOT_RUN
        feasible = "—"
    else:
        at = _x(r.reduction(objective)) if r.feasible else f"— ({_x(r.reduction(objective))} over)"
        feasible = "yes" if r.feasible else "no"
    if r.method == "full study":
        dom = ""
    else:
        dom = NOT_RUN if r.dominated is None else ("yes" if r.dominated else "**no**")
    return (f"| {r.method} | {at} | {_x(r.size)} | {_x(r.flops)} | {_x(r.latency)} | {_d(r.drop)} | {feasible} | "
            f"{dom} | {r.plan} | {r.seconds or 0:.1f} |")
