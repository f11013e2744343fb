"""The autocompress dashboard: browse a study's trade-offs, inspect a trial, export its model.

Start it with ``autocompress dashboard [--storage URL] [--port P]``. It reads the study storage named in the
environment variable ``AUTOCOMPRESS_DASHBOARD_STORAGE`` (the command sets it; a URL in the environment stays out
of the process list) and the trials' stored archives. It never imports or runs a task file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import streamlit as st

try:
    from dashboard import data, search, share
except ImportError:  # started with `streamlit run dashboard/app.py` from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dashboard import data, search, share

from autocompress.errors import AutocompressError
from autocompress.study import mask_url

STORAGE_ENV = "AUTOCOMPRESS_DASHBOARD_STORAGE"
STUDY_ENV = "AUTOCOMPRESS_DASHBOARD_STUDY"


def storage_url() -> str | None:
    return os.environ.get(STORAGE_ENV) or None


def show_study_picker(url: str | None, names: list[str]) -> str:
    with st.sidebar:
        st.header("Study")
        wanted = os.environ.get(STUDY_ENV)
        name = st.selectbox("study", names, index=names.index(wanted) if wanted in names else 0,
                            label_visibility="collapsed")
        st.caption(f"storage: `{mask_url(url or data.acs.DEFAULT_STORAGE)}`")
        live = st.toggle("Refresh while the study runs", value=True,
                         help="new trials appear without reloading the page")
        every = st.slider("every (seconds)", 2, 60, 5, disabled=not live)
    with st.expander(f"All studies in this storage ({len(names)})", expanded=len(names) > 1):
        st.dataframe(data.studies_frame(url, loader=cached_study), hide_index=True, width="stretch")
    st.session_state["refresh_seconds"] = every if live else None
    return name


def show_pareto(study: dict, chart_key: str) -> int | None:
    st.subheader("Pareto view")
    values = study["objectives"]["values"]
    labels = {i: data.axis_label(study, i) for i in range(len(values))}
    left, right = st.columns(2)
    x = left.selectbox("x axis", list(labels), index=1 if len(values) > 1 else 0, format_func=labels.get,
                       key=f"x-{chart_key}")
    y = right.selectbox("y axis", list(labels), index=0, format_func=labels.get, key=f"y-{chart_key}")
    zoom = st.toggle("zoom on the feasible trials (the original stays in view)", value=True, key=f"zoom-{chart_key}")
    event = st.plotly_chart(data.pareto_figure(study, x, y, zoom=zoom), key=f"pareto-{chart_key}", on_select="rerun",
                            selection_mode="points", width="stretch")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    for point in points:  # clicking a trial's marker opens its detail below
        number = point.get("customdata")
        if isinstance(number, list):
            number = number[0] if number else None
        if isinstance(number, (int, float)):
            return int(number)
    return None


def show_table(study: dict) -> None:
    st.subheader("Trials")
    feasible_only = st.checkbox("feasible trials only", value=False)
    frame = data.trials_frame(study, feasible_only=feasible_only)
    st.caption(f"{len(frame)} trials shown; click a column header to sort.")
    st.dataframe(frame, hide_index=True, width="stretch", key="trials-table")


def show_detail(url: str | None, study: dict, clicked: int | None) -> None:
    st.subheader("Trial detail")
    complete = [t["number"] for t in study["trials"] if t["state"] == "COMPLETE"]
    if not complete:
        st.info("No trial has completed yet.")
        return
    default = clicked if clicked in complete else data.default_trial(study)
    number = st.selectbox("trial", complete, index=complete.index(default) if default in complete else 0,
                          format_func=lambda n: f"trial {n}: {data.trial_record(study, n)['plan_summary']}")
    record = data.trial_record(study, number)
    verdict = "feasible" if record["feasible"] else "infeasible"
    drop = record["metric_drop"]
    st.markdown(f"**{record['plan_summary']}** — {verdict}, drop {drop:.2f} {data.unit(study)}"
                + (f" — _{record['aborted']}_" if record["aborted"] else ""))
    left, right = st.columns(2)
    with left:
        st.markdown("Original vs compressed")
        st.dataframe(data.comparison_frame(study, record), hide_index=True, width="stretch")
        with st.expander("Plan (JSON)"):
            st.json(record["plan"])
        with st.expander("The selector's reasons for the seed plan (trial 0)", expanded=bool(record["seeded"])):
            st.markdown("\n".join(f"- {reason}" for reason in study["reasons"]))
    with right:
        st.markdown("Layer widths before and after pruning")
        try:
            widths = cached_widths(url, study["name"], number)
            if not any(w["original"] for w in widths.values()):
                st.caption("This study did not record the original widths (made by an older autocompress).")
            st.plotly_chart(data.widths_figure(widths), width="stretch", key=f"widths-{number}")
        except AutocompressError as exc:
            st.warning(str(exc))
    show_export(url, study, record)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_widths(url: str | None, name: str, number: int) -> dict:
    return data.trial_widths(url, name, number)


def show_export(url: str | None, study: dict, record: dict) -> None:
    st.markdown("Export")
    formats = list(data.export_formats(record))
    left, right = st.columns([2, 1])
    fmt = left.selectbox("format", formats, key=f"format-{record['number']}")
    key = f"export:{study['name']}:{record['number']}:{fmt}"
    if right.button("Export", key=f"export-{record['number']}", type="primary"):
        with st.spinner(f"exporting trial {record['number']} as {fmt} and checking the reloaded file"):
            try:
                with tempfile.TemporaryDirectory() as folder:
                    path, figures = data.export(url, study["name"], record["number"], fmt, folder)
                    st.session_state[key] = (path.name, path.read_bytes(), figures)
            except AutocompressError as exc:
                st.error(str(exc))
    if key in st.session_state:
        filename, payload, figures = st.session_state[key]
        st.success(f"{filename}: {len(payload) / 1e3:.1f} kB, reload check {figures['check']} = "
                   f"{figures['value']:.3g}")
        st.download_button(f"Download {filename}", payload, file_name=filename, mime="application/octet-stream",
                           key=f"download-{record['number']}-{fmt}")


def show_search(url: str | None, study: dict) -> None:
    """How the search went and what mattered: history, importances, parallel coordinates."""
    st.subheader("How the search went")
    # Only the open tab's chart is built and sent: drawing the parallel coordinates (WebGL, in software on a
    # machine without a GPU) took 3 of a 200-trial page's 8 seconds, hidden or not.
    history, importance, parallel = st.tabs(["Optimisation history", "Parameter importances",
                                            "Parallel coordinates"], key="search-view", on_change="rerun")
    with history:
        if history.open:
            st.caption("Each objective's value per trial; the line is the best feasible value so far; the ringed "
                       "diamond is the seed (the rule plan).")
            st.plotly_chart(search.history_figure(study), width="stretch", key="history")
    with importance:
        if importance.open:
            show_importances(url, study)
    with parallel:
        if parallel.open:
            st.plotly_chart(search.parallel_figure(study), width="stretch", key="parallel")


def show_importances(url: str | None, study: dict) -> None:
    complete = len(data.complete_trials(study))
    try:
        found = cached_importances(url, study["name"], complete)
    except AutocompressError as exc:
        found = {}
        st.warning(str(exc))
    if found:
        st.caption(f"Optuna's fANOVA importance evaluator over the {complete} completed trials: the share of "
                   "each objective's variance a plan parameter explains (parameters every trial has).")
        st.plotly_chart(search.importance_figure(found), width="stretch", key="importances")
    else:
        st.info(f"Importances need at least {search.MIN_TRIALS_FOR_IMPORTANCE} completed trials "
                f"({complete} so far).")


@st.cache_data(show_spinner=False, max_entries=16)
def cached_importances(url: str | None, name: str, complete: int) -> dict:
    # Keyed on the number of completed trials: a new trial recomputes, a refresh without one does not.
    return search.importances(url, name, cached_study(url, name))


def show_compare(url: str | None, study: dict) -> None:
    st.subheader("Compare two trials")
    complete = [t["number"] for t in data.complete_trials(study)]
    if len(complete) < 2:
        st.info("Comparing needs two completed trials.")
        return
    best = data.default_trial(study)
    left, right = st.columns(2)
    first = left.selectbox("first trial", complete, index=complete.index(best) if best in complete else 0,
                           key="compare-first")
    others = [n for n in complete if n != first]
    seed = search.seed_trial(study)
    second = right.selectbox("second trial", others, index=others.index(seed) if seed in others else 0,
                             key="compare-second")
    st.dataframe(search.compare_frame(study, first, second), hide_index=True, width="stretch", key="compare-table")
    try:
        widths = {n: cached_widths(url, study["name"], n) for n in (first, second)}
        st.plotly_chart(search.compare_widths_figure(widths), width="stretch", key=f"compare-widths-{first}-{second}")
    except AutocompressError as exc:
        st.warning(str(exc))


def show_share(study: dict) -> None:
    complete = len(data.complete_trials(study))
    st.download_button("Download this study as one HTML file", cached_html(study["name"], len(study["trials"]),
                                                                           complete, study),
                       file_name=f"{study['name']}.html", mime="text/html", key="share-html",
                       help="self-contained (opens offline): the Pareto chart, the history and the trial table, "
                            "for people who do not run Streamlit")


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs={dict: lambda _: 0})
def cached_html(name: str, trials: int, complete: int, study: dict) -> bytes:
    # Rendering the page's figures as HTML (plotly.js inlined) costs about a second for 200 trials: once per
    # trial count, not on every refresh. The study record itself is not hashed (keyed by the counts).
    return share.study_html(study).encode()


@st.cache_resource(show_spinner=False)
def study_cache() -> data.StudyCache:
    return data.StudyCache()


def cached_study(url: str | None, name: str) -> dict:
    # One record per study for every session and refresh, read again only when a trial started, finished or
    # failed (a check of about 20 ms; reading 200 trials takes about 0.3 s). The record is shared, so
    # nothing here may change it.
    return study_cache().get(url, name)


def show_study(url: str | None, name: str) -> int | None:
    """Draws the study's page; returns the identity of the record it drew (None if it drew none)."""
    try:
        study = cached_study(url, name)
    except AutocompressError as exc:
        st.warning(str(exc))
        return None
    trials = study["trials"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    feasible = [t for t in complete if t["feasible"]]
    req = study["requirements"]
    st.markdown(f"**{name}** — task `{study['task']}`, {req['objective']} {req['target']:g}× within "
                f"{req['max_drop']:g} {data.unit(study)}; objectives: {', '.join(study['objectives']['values'])}")
    cols = st.columns(5)
    cols[0].metric("trials", len(trials))
    cols[1].metric("complete", len(complete))
    cols[2].metric("feasible", len(feasible))
    for col, key in zip(cols[3:], ("size", "latency")):
        best = max(((t["reduction"] or {}).get(key) or 0.0 for t in feasible), default=0.0)
        col.metric(f"best {key} ×", f"{best:.1f}×" if best else "—")
    if not complete:
        st.info("No trial has completed yet; this page refreshes as trials finish.")
        return id(study)
    show_share(study)
    clicked = show_pareto(study, name)
    show_table(study)
    show_detail(url, study, clicked)
    show_search(url, study)
    show_compare(url, study)
    return id(study)


def main() -> None:
    st.set_page_config(page_title="autocompress dashboard", layout="wide")
    st.title("autocompress")
    url = storage_url()
    try:
        names = data.study_names(url)
    except AutocompressError as exc:
        st.info(str(exc))
        return
    if not names:
        st.info("This storage holds no study yet. Run `make demo`, or `autocompress study --task ... --name NAME`, "
                "then reload this page.")
        return
    name = show_study_picker(url, names)
    shown = show_study(url, name)
    if st.session_state.get("refresh_seconds"):
        st.fragment(run_every=st.session_state["refresh_seconds"])(rerun_when_changed)(url, name, shown)


def rerun_when_changed(url: str | None, name: str, shown: int | None) -> None:
    # Live refresh checks the study (about 20 ms) and redraws the page only when a trial started,
    # finished or failed: redrawing an unchanged page of 200 trials every few seconds kept the browser busy.
    try:
        if id(cached_study(url, name)) != shown:
            st.rerun(scope="app")
    except AutocompressError:
        pass  # the next full run shows the error


main()
