"""How fast the dashboard's page renders for a study of 200 trials, in the real browser (headless Chromium).

The study is real but cheap: this file is also its task (``task()`` below: a small MLP on 400 of scikit-learn's
bundled digits, trained in a second), run with ``autocompress study --trials 200`` into a temporary SQLite
storage (or reused with ``--storage``). Then ``autocompress dashboard`` serves it and Chromium loads the page
``LOADS`` times after a warm-up load; a load counts as rendered when the Pareto chart has drawn one marker per
completed trial, the trial table is attached and every tab of "How the search went" has its chart. The median
load is the figure; the goal is 5 s on 2 cores (issue 16).

Writes ``studies/results/dashboard_speed.md`` atomically:

    .venv/bin/python studies/dashboard_speed.py [--trials 200] [--storage URL] [--loads 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "studies" / "results" / "dashboard_speed.md"
STUDY = "speed"
LOADS = 5
GOAL_SECONDS = 5.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def task() -> Any:
    """A cheap real task: a 64-48-10 MLP on 300 training and 100 evaluation digits, trained for 30 epochs."""
    import autocompress
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:400], dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target[:400])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x[:300]), y[:300]).backward()
        optimiser.step()
    return autocompress.Task(name="speed-mlp", model=model.eval(), train_data=TensorDataset(x[:300], y[:300]),
                             eval_data=TensorDataset(x[300:], y[300:]), example_input=x[:1])


def make_study(storage: str, trials: int, folder: Path) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "autocompress", "study", "--task", str(Path(__file__).resolve()),
               "--objective", "size", "--max-drop", "2", "--target", "4", "--budget", "low", "--name", STUDY,
               "--storage", storage, "--trials", str(trials)]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode not in (0, 3):
        raise SystemExit(f"the study failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_loads(storage: str, loads: int, complete: int, folder: Path) -> list[float]:
    """Seconds from navigation to a rendered page, for a warm-up load and then ``loads`` more."""
    import shutil

    from playwright.sync_api import sync_playwright

    from autocompress.dashboard_server import wait_until_healthy

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "autocompress", "dashboard", "--storage", storage, "--name",
                               STUDY, "--port", str(port)], cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        if not wait_until_healthy(port, server):
            raise SystemExit("the dashboard did not start")
        seconds = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for _ in range(loads + 1):
                page = browser.new_page(viewport={"width": 1400, "height": 2200})
                started = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/")
                pareto = page.locator(".js-plotly-plot").first
                pareto.wait_for(timeout=120_000)
                while pareto.locator(".scatterlayer .point").count() < complete:
                    page.wait_for_timeout(50)
                page.locator("[data-testid=stDataFrame]").nth(1).wait_for(timeout=120_000, state="attached")
                for drawn in (".parcoords", ".barlayer"):  # the last tabs' charts (drawn while hidden)
                    page.locator(drawn).first.wait_for(timeout=120_000, state="attached")
                seconds.append(time.perf_counter() - started)
                page.close()
            browser.close()
        return seconds[1:]  # the first load warms the server's caches
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--storage", default=None, help="an existing storage holding study 'speed' (default: "
                        "make one in a temporary folder)")
    parser.add_argument("--loads", type=int, default=LOADS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from autocompress._io import atomic_write
    from dashboard import data

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        storage = args.storage or f"sqlite:///{folder}/speed.db"
        made = None if args.storage else make_study(storage, args.trials, folder)
        study = data.load(storage, STUDY)
        complete = len(data.complete_trials(study))
        seconds = time_loads(storage, args.loads, complete, folder)
    median = statistics.median(seconds)
    verdict = "meets" if median <= GOAL_SECONDS else "misses"
    text = "\n".join([
        "# Dashboard speed", "",
        f"Produced by `.venv/bin/python studies/dashboard_speed.py` (one run). Machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs. A study of {len(study['trials'])} trials ({complete} complete) of a cheap real "
        "task (this script's `task()`: an MLP on scikit-learn's digits)"
        + (f", made in {made:.0f} s" if made else "") + ", served by `autocompress dashboard` and loaded in "
        "headless Chromium: a load is rendered when the Pareto chart has one marker per completed trial, the "
        "trial table is attached and the history, importance and parallel-coordinates charts are drawn.", "",
        "| | seconds |", "|---|---:|",
        *[f"| load {i + 1} (after a warm-up load) | {s:.2f} |" for i, s in enumerate(seconds)],
        f"| **median** | **{median:.2f}** |", "",
        f"The median load {verdict} the goal of {GOAL_SECONDS:g} s.", ""])
    atomic_write(args.out, lambda fh: fh.write(text.encode()))
    print(f"median {median:.2f} s over {len(seconds)} loads; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
