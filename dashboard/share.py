"""A study as one self-contained HTML file, for people who do not run Streamlit: the Pareto chart, the
optimisation history and the trial table, with plotly's JavaScript inlined once (it opens offline).

Written atomically (a temporary file, then a rename) by :func:`write_html`; the dashboard offers the same bytes
as a download.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from autocompress._io import atomic_write

from . import data as views
from .search import history_figure


def study_html(data: dict[str, Any]) -> str:
    """The page: a heading with the study's requirements, the Pareto chart (metric against the first cost),
    the history of every objective and the trial table."""
    req = data["requirements"]
    complete = views.complete_trials(data)
    feasible = [t for t in complete if t["feasible"]]
    title = f"autocompress study {data['name']}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>task <code>{html.escape(str(data['task']))}</code>; {html.escape(req['objective'])} "
             f"{req['target']:g}× within {req['max_drop']:g} {views.unit(data)}; objectives: "
             f"{html.escape(', '.join(data['objectives']['values']))}; {len(data['trials'])} trials, "
             f"{len(complete)} complete, {len(feasible)} feasible.</p>"]
    x = 1 if len(data["objectives"]["values"]) > 1 else 0
    figures = [("Pareto view", views.pareto_figure(data, x=x, y=0)), ("Optimisation history", history_figure(data))]
    for i, (heading, fig) in enumerate(figures):
        parts.append(f"<h2>{heading}</h2>")
        # plotly.js once, inline: the file must open without a network
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"figure-{i}"))
    table = views.trials_frame(data)
    parts += ["<h2>Trials</h2>", table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                                classes="trials", border=0)]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table.trials{border-collapse:collapse;"
             "font-size:13px}table.trials td,table.trials th{padding:2px 8px;border-bottom:1px solid #ddd}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_html(data: dict[str, Any], path: str | Path) -> Path:
    """:func:`study_html` written to ``path`` atomically; returns the path."""
    path = Path(path)
    text = study_html(data).encode()
    atomic_write(path, lambda fh: fh.write(text))
    return path
