"""How the search went and what mattered, computed without Streamlit: history, importances, parallel coordinates,
two trials compared, and the Pareto chart's default zoom.

These are the views an Optuna user opens first in optuna-dashboard, drawn from the same study record as the rest
of the page (``autocompress study show``'s JSON) plus, for importances, the Optuna trials themselves.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import DashboardDataError, axis_label, open_storage, trial_record, unit, widths_bars

FEASIBLE_COLOUR, INFEASIBLE_COLOUR, SEED_COLOUR = "#1f77b4", "#bbbbbb", "#d62728"
MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA's forest needs a few distinct plans before its ranking means anything


from .data import complete_trials as _complete


def best_so_far(data: dict[str, Any], index: int) -> list[tuple[int, float | None]]:
    """Per completed trial (in trial order): the best value ``index`` among the feasible trials so far (None until
    a feasible trial has finished)."""
    direction = data["objectives"]["directions"][index]
    better = max if direction == "maximize" else min
    best: float | None = None
    out = []
    for t in sorted(_complete(data), key=lambda t: t["number"]):
        if t["feasible"]:
            value = t["values"][index]
            best = value if best is None else better(best, value)
        out.append((t["number"], best))
    return out


def history_figure(data: dict[str, Any]) -> go.Figure:
    """One panel per objective (the metric, then each cost): every completed trial's value against its number
    (feasible: blue, infeasible: grey), the best feasible value so far as a step line, and the seed trial ringed."""
    names = data["objectives"]["values"]
    complete = _complete(data)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[f"{axis_label(data, i)} ({data['objectives']['directions'][i]})"
                                        for i in range(len(names))])
    seed = next((t for t in complete if t["seeded"]), None)
    for i in range(len(names)):
        row = i + 1
        for feasible in (True, False):
            group = [t for t in complete if bool(t["feasible"]) == feasible]
            fig.add_trace(go.Scatter(
                x=[t["number"] for t in group], y=[t["values"][i] for t in group], mode="markers",
                name="feasible" if feasible else "infeasible", legendgroup=str(feasible), showlegend=i == 0,
                marker=dict(color=FEASIBLE_COLOUR if feasible else INFEASIBLE_COLOUR, size=7,
                            symbol="circle" if feasible else "x"),
                customdata=[t["number"] for t in group],
                hovertext=[f"trial {t['number']}<br>{t['plan_summary']}" for t in group], hoverinfo="text"),
                row=row, col=1)
        steps = [(n, v) for n, v in best_so_far(data, i) if v is not None]
        fig.add_trace(go.Scatter(x=[n for n, _ in steps], y=[v for _, v in steps], mode="lines",
                                 line=dict(shape="hv", color=FEASIBLE_COLOUR), name="best feasible so far",
                                 legendgroup="best", showlegend=i == 0, hoverinfo="skip"), row=row, col=1)
        if seed is not None:
            fig.add_trace(go.Scatter(x=[seed["number"]], y=[seed["values"][i]], mode="markers",
                                     name=f"seed: trial {seed['number']} (rule plan)", legendgroup="seed",
                                     showlegend=i == 0, hoverinfo="skip",
                                     marker=dict(symbol="diamond-open", size=16, color=SEED_COLOUR,
                                                 line=dict(width=2))), row=row, col=1)
        if i:
            fig.update_yaxes(type="log", row=row, col=1)  # costs span orders of magnitude
    fig.update_xaxes(title_text="trial", row=len(names), col=1)
    fig.update_layout(height=260 * len(names), margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.08))
    return fig


def importances(url: str | None, name: str, data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per objective (the metric, then each cost): each searched parameter's importance from Optuna's fANOVA
    evaluator (seeded), over the completed trials with finite values. Empty when fewer than
    :data:`MIN_TRIALS_FOR_IMPORTANCE` trials have completed."""
    import optuna

    complete = {t["number"] for t in _complete(data)}
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    backend, _ = open_storage(url)
    stored = optuna.load_study(study_name=name, storage=backend)
    trials = [t for t in stored.get_trials(deepcopy=False) if t.number in complete]
    # A copy in memory with only these trials: importances must not see failed or non-finite ones.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory" on every refresh
    try:
        copy = optuna.create_study(directions=stored.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(trials)
    # Parameters every trial has (conditional ones, e.g. a distillation temperature, are left out by Optuna).
    out: dict[str, dict[str, float]] = {}
    for i, objective in enumerate(data["objectives"]["values"]):
        try:
            found = optuna.importance.get_param_importances(
                copy, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError) as exc:  # e.g. every trial has the same value: nothing to explain
            raise DashboardDataError(f"importances for {objective}: {exc}", "completed trials that differ",
                                     "wait for more trials") from exc
        out[objective] = {param: float(value) for param, value in found.items()}
    return out


def importance_figure(found: dict[str, dict[str, float]]) -> go.Figure:
    """One horizontal bar group per parameter, one bar per objective (the share of the variance it explains)."""
    objectives = list(found)
    params = sorted({p for values in found.values() for p in values},
                    key=lambda p: max(found[o].get(p, 0.0) for o in objectives))
    fig = go.Figure()
    for objective in objectives:
        fig.add_trace(go.Bar(y=params, x=[found[objective].get(p, 0.0) for p in params], orientation="h",
                             name=objective))
    fig.update_layout(barmode="group", height=max(300, 40 * len(params) * max(1, len(objectives)) // 2 + 120),
                      xaxis_title="importance (fANOVA, share of the variance)", margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def parallel_figure(data: dict[str, Any]) -> go.Figure:
    """Parallel coordinates of the plan parameters (and the metric), one line per completed trial, coloured by
    feasibility. Categorical parameters get one tick per choice."""
    complete = _complete(data)
    params = sorted({p for t in complete for p in t["params"]})
    dimensions = []
    for param in params:
        values = [t["params"].get(param) for t in complete]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
        if numeric:
            dimensions.append(dict(label=_two_lines(param), values=[float("nan") if v is None else v for v in values]))
        else:
            choices = sorted({str(v) for v in values})
            dimensions.append(dict(label=_two_lines(param), values=[choices.index(str(v)) for v in values],
                                   tickvals=list(range(len(choices))), ticktext=choices))
    metric = data["objectives"]["values"][0]
    dimensions.append(dict(label=metric, values=[t["values"][0] for t in complete]))
    colour = [1 if t["feasible"] else 0 for t in complete]
    fig = go.Figure(go.Parcoords(
        line=dict(color=colour, colorscale=[[0, INFEASIBLE_COLOUR], [1, FEASIBLE_COLOUR]], cmin=0, cmax=1),
        dimensions=dimensions, labelside="bottom"))  # two-line names below the axes, clear of their ranges
    fig.update_layout(height=460, margin=dict(l=60, r=60, t=70, b=70),
                      title=dict(text="blue: feasible, grey: over the max drop", font=dict(size=12), y=0.98))
    return fig


def _two_lines(param: str) -> str:
    # "distillation.temperature" on two lines: eleven axes' one-line names overlapped at 940 pixels wide
    return param.replace(".", "<br>", 1)


def compare_frame(data: dict[str, Any], first: int, second: int) -> pd.DataFrame:
    """Two trials side by side: their plan parameters, metric, drop and reductions (one row each), with a
    column saying where they differ."""
    a, b = trial_record(data, first), trial_record(data, second)
    rows: list[tuple[str, Any, Any]] = [("plan", a["plan_summary"], b["plan_summary"]),
                                        ("feasible", a["feasible"], b["feasible"])]
    for param in sorted(set(a["params"]) | set(b["params"])):
        rows.append((param, a["params"].get(param), b["params"].get(param)))
    metric = data["objectives"]["values"][0]
    metric_of = (lambda t: ((t["metrics"] or {}).get("metric") or {}).get("value"))
    rows.append((metric, metric_of(a), metric_of(b)))
    rows.append((f"drop ({unit(data)})", a["metric_drop"], b["metric_drop"]))
    for key in ("size", "flops", "latency", "energy"):
        rows.append((f"{key} ×", (a["reduction"] or {}).get(key), (b["reduction"] or {}).get(key)))
    rows.append(("seconds", a["seconds"], b["seconds"]))
    return pd.DataFrame([{"": name, f"trial {first}": _cell(x), f"trial {second}": _cell(y),
                          "differs": _cell(x) != _cell(y)} for name, x, y in rows])


def _cell(value: Any) -> Any:
    """Numbers rounded for reading; everything as text so that a column can mix kinds (Arrow needs one type)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def compare_widths_figure(widths: dict[int, dict[str, dict[str, int | None]]]) -> go.Figure:
    """Per conv/linear layer: the original width and each compared trial's (grouped bars, model order)."""
    numbers = list(widths)
    first = widths[numbers[0]]
    series = {"original": {n: w["original"] for n, w in first.items()}}
    series.update({f"trial {number}": {n: w.get("compressed") for n, w in widths[number].items()}
                   for number in numbers})
    return widths_bars(series)


def seed_trial(data: dict[str, Any]) -> int | None:
    return next((t["number"] for t in data["trials"] if t["seeded"]), None)
