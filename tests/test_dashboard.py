"""The Streamlit dashboard: its data layer, the app under Streamlit's AppTest, and the real app in Chromium.

One small real study (digits, low budget, 3 trials) is made for the module. The browser test starts
`autocompress dashboard` on a free port and loads it in headless Chromium (Debian's, driven by Playwright);
a missing browser fails the test (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autocompress import study as acs

from .conftest import ROOT, run_cli

APP = ROOT / "dashboard" / "app.py"
REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low"]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dash")
    storage = f"sqlite:///{folder}/d.db"
    result = run_cli("study", *REQ, "--name", "dash", "--storage", storage, "--trials", "3", "--neighbours", "1",
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
    assert list(frame["trial"]) == [0, 1, 2]
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
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "autocompress", "dashboard", "--storage",
                               small_study["storage"], "--port", str(port)], cwd=small_study["folder"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"the dashboard did not start: {server.stdout.read().decode()[-2000:]}")
                time.sleep(0.5)
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
            download_button = page.locator("[data-testid=stDownloadButton] button")
            download_button.wait_for(timeout=120_000)
            with page.expect_download(timeout=60_000) as download:
                download_button.click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            import autocompress
            import torch

            assert saved.suffix == ".ts" and autocompress.load(saved)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
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
