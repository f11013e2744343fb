"""The Streamlit dashboard: its data layer, the app under Streamlit's AppTest, and the real app in Chromium.

One small real study (digits, low budget, 4 trials: the fewest that importances take) is made for the module. The browser test starts
`autocompress dashboard` on a free port and loads it in headless Chromium (Debian's, driven by Playwright);
a missing browser fails the test (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress import study as acs
from autocompress.dashboard_server import free_port, wait_until_healthy

from .conftest import ROOT, run_cli

APP = ROOT / "dashboard" / "app.py"
REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low"]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dash")
    storage = f"sqlite:///{folder}/d.db"
    result = run_cli("study", *REQ, "--name", "dash", "--storage", storage, "--trials", "4", "--neighbours", "1",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    from dashboard import data

    return {"folder": folder, "storage": storage, "data": data.load(storage, "dash")}


# ------------------------------------------------------------------------------------------ data layer
def test_data_layer_tables_front_and_chart(small_study):
    from dashboard import data

    study = small_study["data"]
    assert data.study_names(small_study["storage"]) == ["dash"]
    frame = data.trials_frame(study)
    assert list(frame["trial"]) == [0, 1, 2, 3]
    assert frame.loc[0, "seed"] and not frame.loc[1:, "seed"].any()
    assert {"pruning.ratio", "distillation.technique", "drop (points)", "size ×", "seconds"} <= set(frame.columns)
    feasible = data.trials_frame(study, feasible_only=True)
    assert set(feasible["trial"]) == {t["number"] for t in study["trials"] if t["feasible"]}

    fig = data.pareto_figure(study, x=1, y=0)
    traces = {trace.name: trace for trace in fig.data}
    assert set(traces["feasible"].customdata) == {t["number"] for t in study["trials"] if t["feasible"]}
    front = acs.pareto_front(study["trials"], study["objectives"]["directions"])
    assert len(traces["feasible front"].x) == len(front)  # two objectives: the 2-D front is the study's front
    assert "original model" in traces and any(name.startswith("seed: trial 0") for name in traces)
    assert fig.layout.xaxis.type == "log"
    threshold = [shape for shape in fig.layout.shapes if shape.line.dash == "dash"]
    expected = study["original"]["metric"]["value"] - 0.01
    assert len(threshold) == 1 and abs(threshold[0].y0 - expected) < 1e-9

    record = data.trial_record(study, 1)
    table = data.comparison_frame(study, record)
    size = table[table[""] == "size (MB)"].iloc[0]
    assert abs(size["× reduction"] - record["reduction"]["size"]) < 1e-6 * record["reduction"]["size"]
    widths = data.trial_widths(small_study["storage"], "dash", 1)
    original = {name: w["original"] for name, w in widths.items()}
    assert original == {"features.0": 32, "features.3": 64, "features.7": 128, "classifier.0": 128,
                        "classifier.3": 10}  # the DigitsCNN widths, recorded once by the study
    assert all(w["compressed"] <= w["original"] for w in widths.values())
    assert widths["classifier.3"]["compressed"] == 10  # the output layer is never pruned


def test_history_importances_parallel_and_compare(small_study):
    import math

    from dashboard import data, search

    study = small_study["data"]
    complete = data.complete_trials(study)
    feasible = [t for t in complete if t["feasible"]]
    assert feasible, "the fixture study needs a feasible trial"
    # history: per objective, the best feasible value so far, step by step
    for i, direction in enumerate(study["objectives"]["directions"]):
        better = max if direction == "maximize" else min
        steps = search.best_so_far(study, i)
        assert [n for n, _ in steps] == sorted(t["number"] for t in complete)
        for number, best in steps:
            so_far = [t["values"][i] for t in feasible if t["number"] <= number]
            assert best == (better(so_far) if so_far else None)
    fig = search.history_figure(study)
    names = [trace.name for trace in fig.data]
    assert names.count("best feasible so far") == len(study["objectives"]["values"])
    assert any(name and name.startswith("seed: trial 0") for name in names)
    # importances: fANOVA over the completed trials, one ranking per objective, shares summing to 1
    found = search.importances(small_study["storage"], "dash", study)
    assert list(found) == study["objectives"]["values"]
    for shares in found.values():
        assert shares and abs(sum(shares.values()) - 1.0) < 1e-6
        assert set(shares) <= set(complete[0]["params"])
    few = dict(study, trials=study["trials"][:search.MIN_TRIALS_FOR_IMPORTANCE - 1])
    assert search.importances(small_study["storage"], "dash", few) == {}
    # parallel coordinates: one axis per plan parameter plus the metric, lines coloured by feasibility
    parallel = search.parallel_figure(study).data[0]
    params = sorted({p for t in complete for p in t["params"]})
    assert [d.label.replace("<br>", ".") for d in parallel.dimensions] == params + [study["objectives"]["values"][0]]
    assert all(d.label.count("<br>") == 1 for d in parallel.dimensions[:-1])  # "pruning<br>keep": no overlap
    assert list(parallel.line.color) == [1 if t["feasible"] else 0 for t in complete]
    # compare: two trials' plans and figures side by side, the differences flagged
    first, second = complete[0]["number"], complete[1]["number"]
    table = search.compare_frame(study, first, second).set_index("")
    assert list(table.columns) == [f"trial {first}", f"trial {second}", "differs"]
    assert table.loc["plan", f"trial {first}"] == complete[0]["plan_summary"]
    assert table.loc["plan", "differs"] == (complete[0]["plan_summary"] != complete[1]["plan_summary"])
    # the Pareto chart opens zoomed on the feasible trials with the original in view
    ranges = data.feasible_ranges(study, 1, 0)
    original = data.original_values(study)
    low, high = ranges["xaxis"]
    assert low <= math.log10(original[1]) <= high
    assert all(low <= math.log10(t["values"][1]) <= high for t in feasible)
    assert list(data.pareto_figure(study, 1, 0).layout.xaxis.range) == ranges["xaxis"]
    assert data.pareto_figure(study, 1, 0, zoom=False).layout.xaxis.range is None


def test_study_exports_as_one_self_contained_html_file(small_study, tmp_path):
    from dashboard import share

    study = small_study["data"]
    path = share.write_html(study, tmp_path / "study.html")
    text = path.read_text()
    assert text.count("<script>/**\n* plotly.js v") == 1  # plotly.js inlined, once: it opens offline
    assert "<script src=" not in text
    assert text.count('class="plotly-graph-div"') == 2  # the Pareto chart and the history
    assert f"autocompress study {study['name']}" in text and "<table" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.html"]  # no temporary file left behind


def test_study_cache_reads_again_only_when_a_trial_starts_or_finishes(small_study, tmp_path):
    import optuna

    from dashboard import data

    shutil.copy(Path(small_study["folder"]) / "d.db", tmp_path / "d.db")  # the module's study stays as it is
    url = f"sqlite:///{tmp_path}/d.db"
    reads = []
    cache = data.StudyCache(loader=lambda u, n: reads.append(n) or data.load(u, n))
    first = cache.get(url, "dash")
    assert cache.get(url, "dash") is first and reads == ["dash"]  # unchanged: no second read
    assert data.studies_frame(url, loader=cache.get)["trials"].tolist() == [4] and reads == ["dash"]
    study = optuna.load_study(study_name="dash", storage=url)
    trial = study.ask()  # a trial starts: read again
    second = cache.get(url, "dash")
    assert second is not first and len(second["trials"]) == 5 and len(reads) == 2
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # it fails: read again
    third = cache.get(url, "dash")
    assert third is not second and third["trials"][-1]["state"] == "FAIL" and len(reads) == 3
    stale = data.StudyCache(max_age=0.0)  # past its age a record is read again, but kept when it is the same
    kept = stale.get(url, "dash")
    assert stale.get(url, "dash") is kept


def test_missing_storage_is_a_message_not_a_file(tmp_path):
    from dashboard import data

    missing = f"sqlite:///{tmp_path}/none.db"
    with pytest.raises(data.DashboardDataError, match="no study storage at .*none.db"):
        data.study_names(missing)
    assert not (tmp_path / "none.db").exists()


# ------------------------------------------------------------------------------------------ AppTest
def _app(storage: str, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AUTOCOMPRESS_DASHBOARD_STORAGE", storage)
    at = AppTest.from_file(str(APP), default_timeout=180)
    return at.run()


def test_app_shows_table_front_detail_and_exports(small_study, monkeypatch, tmp_path):
    import autocompress
    from dashboard import data

    at = _app(small_study["storage"], monkeypatch)
    assert not at.exception, at.exception
    study = small_study["data"]
    trial_table = at.dataframe[1].value  # [0]: the study picker; [1]: the trials; [2]: original vs compressed
    assert list(trial_table["trial"]) == [t["number"] for t in study["trials"]]
    assert len(at.dataframe[0].value) == 1 and at.dataframe[0].value.iloc[0]["study"] == "dash"
    # the detail opens on the front's best trial
    best = data.default_trial(study)
    front = {t["number"] for t in acs.pareto_front(study["trials"], study["objectives"]["directions"])}
    assert best in front
    detail = next(s for s in at.selectbox if s.label == "trial")
    assert detail.value == best
    # filtering to feasible trials
    at.checkbox[0].check().run()
    assert set(at.dataframe[1].value["trial"]) == {t["number"] for t in study["trials"] if t["feasible"]}
    # export: the same export as the CLI, offered for download; the bytes reload as a working model
    at.button(key=f"export-{best}").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("reload check" in s.value for s in at.success)
    filename, payload, figures = at.session_state[f"export:dash:{best}:torchscript"]
    path = tmp_path / filename
    path.write_bytes(payload)
    model = autocompress.load(path)
    import torch

    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 10) and figures["trial"] == best


def test_app_shows_how_the_search_went_compares_and_shares(small_study, monkeypatch):
    from dashboard import data

    at = _app(small_study["storage"], monkeypatch)
    assert not at.exception, at.exception
    assert [tab.label for tab in at.tabs] == ["Optimisation history", "Parameter importances",
                                             "Parallel coordinates"]
    # only the open tab's chart is built: the Pareto chart, the trial's widths, the history, the compared widths
    keys = [c.key for c in at.get("plotly_chart")]
    assert keys == ["pareto-dash", f"widths-{data.default_trial(small_study['data'])}", "history",
                    keys[-1]] and keys[-1].startswith("compare-widths-"), keys
    for tab, chart in (("Parameter importances", "importances"), ("Parallel coordinates", "parallel")):
        at.session_state["search-view"] = tab  # what a click on the tab sets (on_change="rerun")
        at.run()
        assert not at.exception, at.exception
        keys = [c.key for c in at.get("plotly_chart")]
        assert chart in keys and "history" not in keys, (tab, keys)
        assert not at.info or all("Importances need" not in i.value for i in at.info)
    study = small_study["data"]
    compare = next(d.value for d in at.dataframe if "differs" in d.value.columns)
    best, seed = data.default_trial(study), 0
    expected = [f"trial {best}", f"trial {seed if seed != best else 1}", "differs"]
    assert list(compare.columns)[1:] == expected
    at.selectbox(key="compare-second").select(next(n for n in range(4) if n not in (best, seed))).run()
    assert not at.exception, at.exception
    assert len(at.get("download_button")) >= 1  # the study as one HTML file


def test_app_on_missing_and_empty_storage(monkeypatch, tmp_path):
    at = _app(f"sqlite:///{tmp_path}/absent.db", monkeypatch)
    assert not at.exception
    assert "no study storage at" in at.info[0].value and "make demo" in at.info[0].value
    assert not (tmp_path / "absent.db").exists()
    import optuna

    optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/empty.db")  # a storage with no study in it
    at = _app(f"sqlite:///{tmp_path}/empty.db", monkeypatch)
    assert not at.exception and "holds no study yet" in at.info[0].value


def test_dashboard_command_errors_in_one_line(tmp_path, small_study):
    bad = run_cli("dashboard", "--storage", "nonsense")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "storage 'nonsense'" in bad.stderr
    missing = run_cli("dashboard", "--storage", small_study["storage"], "--name", "nope")
    assert missing.returncode == 2 and "no study named 'nope'" in missing.stderr and "dash" in missing.stderr


# ------------------------------------------------------------------------------------------ a real browser
def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed; the browser test needs it (apt-get install chromium; .ci/run "
                    "installs it)")
    return found


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def test_dashboard_in_headless_chromium(small_study, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "autocompress", "dashboard", "--storage",
                               small_study["storage"], "--port", str(port)], cwd=small_study["folder"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        if not wait_until_healthy(port, server):
            pytest.fail(f"the dashboard did not start: {server.stdout.read().decode()[-2000:]}")
        # It listens on 127.0.0.1 only (no --host given): the kernel's table of listening TCP sockets says so.
        listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")]
        assert listening == [f"0100007F:{port:04X}"], listening
        complete = [t for t in small_study["data"]["trials"] if t["state"] == "COMPLETE"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".js-plotly-plot", timeout=90_000)
            page.wait_for_selector("[data-testid=stDataFrame]", timeout=90_000, state="attached")
            page.get_by_text("Trial detail").wait_for(timeout=90_000)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            assert page.locator("[data-testid=stException]").count() == 0
            assert page.get_by_text("Pareto view").count() == 1
            # the Pareto chart: one marker per completed trial, plus the seed ring and the original star
            points = page.locator(".js-plotly-plot").first.locator(".scatterlayer .point").count()
            assert points == len(complete) + 2
            # the trial table (the second data frame; the first lists the studies) is on the page
            assert page.locator("[data-testid=stDataFrame]").nth(1).is_visible()
            # export in the browser: the button runs the export, the download hands over a model that reloads
            page.get_by_role("button", name="Export", exact=True).click()
            download_button = page.locator("[data-testid=stDownloadButton] button").filter(has_text=".ts")
            download_button.wait_for(timeout=120_000)
            with page.expect_download(timeout=60_000) as download:
                download_button.click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            import autocompress
            import torch

            assert saved.suffix == ".ts" and autocompress.load(saved)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
            # how the search went: each tab's chart renders (plotly draws a parcoords view for the last one)
            for tab, drawn in (("Optimisation history", ".scatterlayer .point"),
                               ("Parameter importances", ".barlayer .point"), ("Parallel coordinates", ".parcoords")):
                page.get_by_role("tab", name=tab).click()
                panel = page.locator("[role=tabpanel]:visible")
                panel.locator(drawn).first.wait_for(timeout=60_000, state="attached")  # a 0-width bar is hidden
                assert panel.locator(drawn).count() > 0
            assert page.get_by_text("Compare two trials").count() == 1
            compare = page.locator("[data-testid=stDataFrame]").nth(3)  # studies, trials, one trial, compare
            compare.scroll_into_view_if_needed()
            assert compare.is_visible()
            # the study as one HTML file: it opens in the browser, offline, and shows the Pareto chart
            with page.expect_download(timeout=60_000) as shared:
                page.get_by_role("button", name="Download this study as one HTML file").click()
            html_file = tmp_path / shared.value.suggested_filename
            shared.value.save_as(html_file)
            offline = browser.new_page()
            offline.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                          else route.continue_())
            offline.goto(html_file.as_uri())
            offline.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            assert offline.locator(".js-plotly-plot").first.locator(".scatterlayer .point").count() == \
                len(complete) + 2
            offline.close()
            # a study still running: one more trial appears without reloading the page
            trials_shown = page.locator("[data-testid=stMetricValue]").first  # the "trials" figure
            before = len(small_study["data"]["trials"])
            assert trials_shown.inner_text() == str(before)
            more = run_cli("study", *REQ, "--name", "dash", "--storage", small_study["storage"], "--trials",
                           str(before + 1), cwd=small_study["folder"])
            assert more.returncode == 0, more.stderr
            deadline = time.time() + 60
            while trials_shown.inner_text() != str(before + 1):
                assert time.time() < deadline, "the new trial did not appear without a reload"
                page.wait_for_timeout(500)
            assert page.locator("[data-testid=stException]").count() == 0
            browser.close()
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)
