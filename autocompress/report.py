"""Reports of a compression run: the stable JSON and a markdown table in the thesis's style."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import atomic_write


def figures(profile: Any) -> dict[str, Any]:
    """A model's figures as reports and studies store them: params, MACs, size (MB), latency and energy by batch,
    and the metric. ``profile`` is a :class:`~autocompress.profile.Profile` or its ``to_dict()``."""
    get = profile.get if isinstance(profile, Mapping) else lambda key, default=None: getattr(profile, key, default)
    return {"params": get("params"), "flops": get("flops"), "size_mb": get("size_mb"),
            "latency_ms": dict(get("latency_ms") or {}), "energy_mj": dict(get("energy_mj") or {}),
            "metric": dict(get("metric") or {})}


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def report_markdown(report: dict[str, Any], title: str = "Compression report") -> str:
    """Original vs compressed with X-fold reductions, then the plan and the selector's reasons."""
    o, c, red = report["original"], report["compressed"], report["reduction"]
    metric = o["metric"].get("name") or "metric"
    energy_method = (o.get("energy_mj") or {}).get("method", "estimate")
    rows = [
        ("Parameters", o["params"], c["params"], None),
        ("MACs (per sample)", o["flops"], c["flops"], red.get("flops")),
        ("Size (MB)", o["size_mb"], c["size_mb"], red.get("size")),
        ("Latency batch 1 (ms)", o["latency_ms"]["batch_1"], c["latency_ms"]["batch_1"],
         o["latency_ms"]["batch_1"] / c["latency_ms"]["batch_1"]),
        ("Latency batch 64 (ms)", o["latency_ms"]["batch_64"], c["latency_ms"]["batch_64"], red.get("latency")),
        (f"Energy batch 64 (mJ, {energy_method})", (o.get("energy_mj") or {}).get("batch_64"),
         (c.get("energy_mj") or {}).get("batch_64"), red.get("energy")),
        (f"{metric}", o["metric"]["value"], c["metric"]["value"], None),
    ]
    lines = [f"# {title}", "", "| | Original | Compressed | X-fold |", "| --- | ---: | ---: | ---: |"]
    params_fold = o["params"] / c["params"] if c["params"] else None
    for name, a, b, fold in rows:
        if name == "Parameters":
            fold = params_fold
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {_fmt(fold, 2) + '×' if fold else ''} |")
    lines += ["", f"Metric drop: **{report['metric_drop']:.2f} points** "
              f"(threshold held: {report.get('feasible')}, target met: {report.get('target_met')}).", "",
              f"Plan: `{report['plan_summary']}`", ""]
    if report.get("reasons"):
        lines += ["Why this plan:", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    if report.get("attempts"):
        lines += ["Attempts:", "", "| # | plan | drop (points) | reduction | threshold held |",
                  "| ---: | --- | ---: | ---: | --- |"]
        for i, a in enumerate(report["attempts"], 1):
            if "error" in a:
                lines.append(f"| {i} | {a['plan']} | error: {a['error']} | | |")
            else:
                lines.append(f"| {i} | {a['plan']} | {a['metric_drop']:.2f} | {a['reduction']:.2f}× | {a['feasible']} |")
        lines.append("")
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines.append("MACs are multiply-accumulates for one sample; energy is labelled with how it was obtained "
                 "(`rapl` = measured, `estimate` = derived from latency and MACs).")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, report: dict[str, Any], title: str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` atomically into ``directory``."""
    json_path = atomic_write(directory / "report.json",
                             lambda fh: fh.write(json.dumps(report, indent=2, default=float).encode()))
    md_path = atomic_write(directory / "report.md", lambda fh: fh.write(report_markdown(report, title).encode()))
    return json_path, md_path
