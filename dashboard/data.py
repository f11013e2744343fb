"""What the dashboard shows, computed without Streamlit: study lists, trial tables, the Pareto chart, details.

Everything here reads the study storage and the trials' stored archives only. No task file is imported or run:
the original model's figures come from the study's records, a trial's model from its archive.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from autocompress import study as acs
from autocompress.errors import AutocompressError
from autocompress.metrics import drop_unit, metric_threshold


class DashboardDataError(AutocompressError):
    """The storage cannot be shown (missing, empty, malformed)."""


def open_storage(url: str | None) -> tuple[Any, str]:
    """The Optuna storage at ``url``, opened for reading: a missing SQLite or journal file is an error here
    (opening it would create an empty one)."""
    url = url or acs.DEFAULT_STORAGE
    path = acs.storage_file(url) if isinstance(url, str) else None
    if path and path != ":memory:" and not Path(path).is_file():
        raise DashboardDataError(f"no study storage at {path}", "a storage that `autocompress study` wrote",
                                 "run `make demo` or `autocompress study ...` first, or pass --storage")
    return acs.resolve_storage(url)


def study_names(url: str | None) -> list[str]:
    backend, _ = open_storage(url)
    return [s.study_name for s in backend.get_all_studies()]  # names only: no trial is read


def load(url: str | None, name: str) -> dict[str, Any]:
    """``autocompress study show``'s record of study ``name`` (trials, objectives, original figures)."""
    import optuna

    backend, masked = open_storage(url)
    study = optuna.load_study(study_name=name, storage=backend)
    if acs.ATTR not in study.user_attrs:
        raise DashboardDataError(f"study {name!r} has no autocompress record", "a study written by autocompress",
                                 "pick another study")
    data = acs.show(study, masked)
    data["original_widths"] = acs.study_meta(study).get("original_widths")
    return data


def summary_row(data: dict[str, Any]) -> dict[str, Any]:
    """One line of the study picker: objectives, threshold, target, trials and the best feasible reductions."""
    trials = data["trials"]
    feasible = [t for t in trials if t["state"] == "COMPLETE" and t["feasible"]]
    req = data["requirements"]
    row: dict[str, Any] = {
        "study": data["name"], "task": data["task"], "objectives": ", ".join(data["objectives"]["values"]),
        f"max drop ({unit(data)})": req["max_drop"], "target ×": req["target"], "objective": req["objective"],
        "trials": len(trials), "complete": sum(t["state"] == "COMPLETE" for t in trials), "feasible": len(feasible),
    }
    for key in ("size", "flops", "latency"):
        best = max(((t["reduction"] or {}).get(key) or 0.0 for t in feasible), default=None)
        row[f"best {key} ×"] = round(best, 2) if best else None
    return row


def active_trials(url: str | None, name: str) -> tuple[int, ...]:
    """The numbers of study ``name``'s running and waiting trials (only those trials are read)."""
    backend, _ = open_storage(url)
    return _active(backend, backend.get_study_id_from_name(name))


def _active(backend: Any, study_id: int) -> tuple[int, ...]:
    from optuna.trial import TrialState

    running = backend.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    return tuple(t.number for t in running)


def change_stamp(url: str | None, name: str, known_trials: int) -> tuple[tuple[int, ...], bool]:
    """What a change to study ``name`` changes, read without loading its trials: its running and waiting trials,
    and whether a trial numbered ``known_trials`` exists (the study has grown past a record of ``known_trials``
    trials). A trial that starts, finishes or fails changes one or the other."""
    backend, _ = open_storage(url)
    study_id = backend.get_study_id_from_name(name)
    try:
        backend.get_trial_id_from_study_id_trial_number(study_id, known_trials)
        grown = True
    except KeyError:
        grown = False
    return _active(backend, study_id), grown


class StudyCache:
    """Study records kept between page loads and refreshes, reloaded only when the study changed.

    Reading 200 trials takes about 0.3 s and a page reads every study of the storage (the picker's summary
    table) on every refresh; checking for a change (``change_stamp``) takes about 20 ms, mostly opening the
    storage. ``max_age`` bounds how stale a record can get through a change the stamp does not see (an
    attribute rewritten). A record is replaced by a new object only when it changed, so a page can tell by
    identity."""

    def __init__(self, max_age: float = 60.0, loader: Callable[[str | None, str], dict[str, Any]] | None = None):
        self.max_age = max_age
        self._load = loader or load
        self._records: dict[tuple[str | None, str], tuple[float, tuple, int, dict[str, Any]]] = {}
        self._lock = threading.Lock()  # Streamlit runs each browser session in its own thread

    def get(self, url: str | None, name: str) -> dict[str, Any]:
        key = (url, name)
        with self._lock:
            cached = self._records.get(key)
        if cached is not None:
            at, stamp, known, record = cached
            if time.monotonic() - at < self.max_age and change_stamp(url, name, known) == stamp:
                return record
        active = active_trials(url, name)  # read before the trials: a change during the read shows next time
        record = self._load(url, name)
        if cached is not None and record == cached[3]:
            record = cached[3]  # the same object: a page showing it has nothing to redraw
        with self._lock:
            self._records[key] = (time.monotonic(), (active, False), len(record["trials"]), record)
        return record


def studies_frame(url: str | None, loader: Callable[[str | None, str], dict[str, Any]] = load) -> pd.DataFrame:
    rows = []
    for name in study_names(url):
        try:
            rows.append(summary_row(loader(url, name)))
        except DashboardDataError:
            continue  # a study another tool wrote into the same storage
    return pd.DataFrame(rows)


def trials_frame(data: dict[str, Any], feasible_only: bool = False) -> pd.DataFrame:
    """One row per trial: state, feasibility, plan parameters, metric, drop, X-fold reductions and time."""
    metric_name = data["objectives"]["metric"] or "metric"
    rows = []
    for t in data["trials"]:
        if feasible_only and not (t["state"] == "COMPLETE" and t["feasible"]):
            continue
        red = t["reduction"] or {}
        metric = ((t["metrics"] or {}).get("metric") or {}).get("value")
        row: dict[str, Any] = {"trial": t["number"], "state": t["state"], "feasible": t["feasible"],
                               "seed": bool(t["seeded"]), "plan": t["plan_summary"] or ""}
        row.update({name: value for name, value in t["params"].items()})
        if "pruning.keep" in row:  # searched as the kept fraction; shown as the ratio users think in, beside it
            row["pruning.ratio"] = round(1.0 - float(row["pruning.keep"]), 4)
        row.update({metric_name: metric, f"drop ({unit(data)})": t["metric_drop"], "size ×": red.get("size"),
                    "FLOPs ×": red.get("flops"), "latency ×": red.get("latency"), "energy ×": red.get("energy"),
                    "seconds": t["seconds"], "note": t["aborted"] or t["error"] or ""})
        rows.append(row)
    return pd.DataFrame(rows)


def original_values(data: dict[str, Any]) -> list[float]:
    """The original model in the study's value space: [metric, *costs] (NaN where a cost was not measured)."""
    o = data["original"]
    return [o["metric"]["value"], *acs.costs(o, data["objectives"]["costs"])]


def axis_label(data: dict[str, Any], index: int) -> str:
    name = data["objectives"]["values"][index]
    return name if index == 0 else f"{name} ({acs.COST_UNITS.get(name, '')})"


def front_2d(points: list[tuple[int, float, float]], directions: tuple[str, str]) -> list[int]:
    """The trial numbers of the non-dominated points in two chosen values, sorted along the x axis."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    keep = [p for p in points if not any(acs.dominates((q[1], q[2]), (p[1], p[2]), directions) for q in points
                                         if q is not p)]
    return [p[0] for p in sorted(keep, key=lambda p: signs[0] * p[1])]


def complete_trials(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The completed trials whose values are all finite numbers (what the charts can place)."""
    return [t for t in data["trials"] if t["state"] == "COMPLETE" and t["values"] is not None
            and all(v is not None and math.isfinite(v) for v in t["values"])]


def feasible_ranges(data: dict[str, Any], x: int, y: int, pad: float = 0.08) -> dict[str, list[float]] | None:
    """The Pareto chart's default zoom: axis ranges around the feasible trials and the original model (which
    stays visible), padded; log axes (the costs) in log10 units as plotly wants. None without a feasible trial."""
    feasible = [t for t in complete_trials(data) if t["feasible"]]
    if not feasible:
        return None
    original, threshold = original_values(data), threshold_value(data)
    out = {}
    for index, axis in ((x, "xaxis"), (y, "yaxis")):
        values = [t["values"][index] for t in feasible]
        if math.isfinite(original[index]):
            values.append(original[index])
        if index == 0 and threshold is not None:
            values.append(threshold)  # the threshold line stays in view too
        if index:  # a log axis
            values = [math.log10(v) for v in values if v > 0]
            if not values:
                continue
        low, high = min(values), max(values)
        span = (high - low) or (abs(high) or 1.0) * 0.1
        out[axis] = [low - pad * span, high + pad * span]
    return out


def pareto_figure(data: dict[str, Any], x: int = 1, y: int = 0, zoom: bool = True) -> go.Figure:
    """Value ``y`` against value ``x`` (indices into the study's values: 0 is the metric, then the costs).

    Feasible trials are filled circles, infeasible ones grey crosses; the feasible front in these two values is a
    line; the original model is a star and the seed trial (the rule plan) a ringed diamond; the threshold (the
    lowest metric the max drop allows) is a dashed line when the metric is on an axis. ``zoom``: the axes start on
    the feasible trials, the original and the threshold (:func:`feasible_ranges`); the rest is a zoom-out away.
    """
    directions = data["objectives"]["directions"]
    complete = complete_trials(data)
    fig = go.Figure()

    def hover(t: dict[str, Any]) -> str:
        values = ", ".join(f"{name} {v:.4g}" for name, v in zip(data["objectives"]["values"], t["values"]))
        drop = "" if t["metric_drop"] is None else f"drop {t['metric_drop']:.2f} {unit(data)}<br>"
        return f"trial {t['number']}<br>{t['plan_summary']}<br>{values}<br>{drop}"

    for feasible, style in ((True, dict(symbol="circle", size=10, color="#1f77b4")),
                            (False, dict(symbol="x", size=9, color="#999999"))):
        group = [t for t in complete if bool(t["feasible"]) == feasible]
        fig.add_trace(go.Scatter(
            x=[t["values"][x] for t in group], y=[t["values"][y] for t in group], mode="markers",
            name="feasible" if feasible else "infeasible (over the max drop)", marker=style,
            customdata=[t["number"] for t in group], hovertext=[hover(t) for t in group], hoverinfo="text"))
    feasible = [(t["number"], t["values"][x], t["values"][y]) for t in complete if t["feasible"]]
    front = front_2d(feasible, (directions[x], directions[y]))
    by_number = {t["number"]: t for t in complete}
    fig.add_trace(go.Scatter(x=[by_number[n]["values"][x] for n in front], y=[by_number[n]["values"][y] for n in front],
                             mode="lines", name="feasible front", line=dict(color="#1f77b4", width=2),
                             hoverinfo="skip"))
    seed = next((t for t in complete if t["seeded"]), None)
    if seed is not None:
        fig.add_trace(go.Scatter(x=[seed["values"][x]], y=[seed["values"][y]], mode="markers",
                                 name=f"seed: trial {seed['number']} (rule plan)",
                                 marker=dict(symbol="diamond-open", size=18, color="#d62728", line=dict(width=2)),
                                 hovertext=[hover(seed)], hoverinfo="text"))
    original = original_values(data)
    if math.isfinite(original[x]) and math.isfinite(original[y]):
        fig.add_trace(go.Scatter(x=[original[x]], y=[original[y]], mode="markers", name="original model",
                                 marker=dict(symbol="star", size=16, color="#2ca02c"),
                                 hovertext=[f"original model<br>{data['objectives']['values'][0]} {original[0]:.4g}"],
                                 hoverinfo="text"))
    threshold = threshold_value(data)
    if threshold is not None and y == 0:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"threshold: −{data['requirements']['max_drop']:g} {unit(data)}")
    elif threshold is not None and x == 0:
        fig.add_vline(x=threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"threshold: −{data['requirements']['max_drop']:g} {unit(data)}")
    for index, axis in ((x, "xaxis"), (y, "yaxis")):
        # Costs on a log axis: compressed models sit 10-100× below the original, which a linear axis squashes.
        fig.update_layout({axis: dict(title=axis_label(data, index), type="log" if index else "linear")})
    ranges = feasible_ranges(data, x, y) if zoom else None
    for axis, bounds in (ranges or {}).items():
        fig.update_layout({axis: dict(range=bounds)})
    fig.update_layout(height=480, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def unit(data: dict[str, Any]) -> str:
    """What the study's drops are counted in: ``points`` (a fraction metric) or ``units`` (a raw one)."""
    return drop_unit(data["original"]["metric"])


def threshold_value(data: dict[str, Any]) -> float | None:
    """The lowest (or highest, for lower-is-better metrics) metric value the max drop allows."""
    return metric_threshold(data["original"]["metric"], data["requirements"]["max_drop"])


def trial_record(data: dict[str, Any], number: int) -> dict[str, Any]:
    found = [t for t in data["trials"] if t["number"] == number]
    if not found:
        raise DashboardDataError(f"trial {number}", f"a trial number in 0..{len(data['trials']) - 1}",
                                 "pick a trial from the table")
    return found[0]


def comparison_frame(data: dict[str, Any], record: dict[str, Any]) -> pd.DataFrame:
    """Original vs compressed: params, FLOPs, size, latency, metric, and the X-fold of each."""
    o, c = data["original"], record["metrics"] or {}
    if not c:
        return pd.DataFrame()
    metric_name = o["metric"].get("name", "metric")
    rows = [("parameters", o["params"], c["params"]), ("FLOPs (MACs per sample)", o["flops"], c["flops"]),
            ("size (MB)", o["size_mb"], c["size_mb"]),
            ("latency batch 1 (ms)", o["latency_ms"].get("batch_1"), c["latency_ms"].get("batch_1")),
            ("latency batch 64 (ms)", o["latency_ms"].get("batch_64"), c["latency_ms"].get("batch_64")),
            (metric_name, o["metric"]["value"], c["metric"]["value"])]
    out = []
    for name, before, after in rows:
        fold = None
        if name != metric_name and before and after:
            fold = before / after
        out.append({"": name, "original": before, "compressed": after, "× reduction": fold})
    return pd.DataFrame(out)


WIDTH_COLOURS = ("#aaaaaa", "#1f77b4", "#ff7f0e")  # the original, then each model shown beside it


def widths_bars(series: dict[str, dict[str, int | None]]) -> go.Figure:
    """Grouped bars, one group per conv/linear layer (the first series' order), one bar per named series."""
    names = list(next(iter(series.values())))
    fig = go.Figure()
    for (label, widths), colour in zip(series.items(), WIDTH_COLOURS):
        fig.add_trace(go.Bar(name=label, x=names, y=[widths.get(n) for n in names], marker_color=colour))
    fig.update_layout(barmode="group", height=360, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis_title="output channels / features", legend=dict(orientation="h", y=-0.3))
    return fig


def widths_figure(widths: dict[str, dict[str, int | None]]) -> go.Figure:
    """Per conv/linear layer, its output width before and after pruning (grouped bars, model order)."""
    return widths_bars({"original": {n: w["original"] for n, w in widths.items()},
                        "compressed": {n: w["compressed"] for n, w in widths.items()}})


def _study_and_trial(url: str | None, name: str, number: int) -> tuple[Any, Any]:
    import optuna

    backend, _ = open_storage(url)
    study = optuna.load_study(study_name=name, storage=backend)
    return study, acs.pick_trial(study, number=number)


def trial_widths(url: str | None, name: str, number: int) -> dict[str, dict[str, int | None]]:
    """Per conv/linear layer, its width in the original and in trial ``number``'s model (from its archive)."""
    study, trial = _study_and_trial(url, name, number)
    return acs.trial_widths(study, trial)


def export_formats(record: dict[str, Any]) -> tuple[str, ...]:
    """The formats that can hold this trial's model (by its quantization mode); a trial of the ONNX Runtime
    engine stored the .onnx program it was measured with, which is exported as it is."""
    from autocompress.export import formats_for_mode

    if ((record.get("plan") or {}).get("quantization") or {}).get("backend") == "onnxruntime":
        return ("onnx",)

    return formats_for_mode((record["params"] or {}).get("quantization.mode", "none"))


def export(url: str | None, name: str, number: int, fmt: str, folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """The same export as ``autocompress export --trial N --format F`` (with its reload check), into ``folder``."""
    from autocompress._io import safe_component
    from autocompress.export import SUFFIXES

    study, trial = _study_and_trial(url, name, number)
    path = Path(folder) / f"{safe_component(name)}-trial-{int(number)}.{SUFFIXES[fmt]}"
    return path, acs.export_trial(study, trial, fmt, path, overwrite=True)


def default_trial(data: dict[str, Any]) -> int | None:
    """The trial to show first: the study's best trial for its primary objective (``autocompress.study.best_trial``,
    the one ``export --best`` picks), else the first completed trial."""
    best = acs.best_trial(data["trials"], data["objectives"]["directions"], data["requirements"]["objective"])
    if best is not None:
        return best["number"]
    complete = [t["number"] for t in data["trials"] if t["state"] == "COMPLETE"]
    return complete[0] if complete else None
