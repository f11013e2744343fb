"""Study wall time with one worker, two workers on one journal file, and one worker beside a busy process.

    .venv/bin/python studies/workers_compare.py [--trials 12] [--out studies/results/workers_compare.md]

Each set-up runs the same digits study (size 30×, max drop 1, seed 0) into a fresh journal file, one after the
other (never two set-ups at once: they would slow each other). The busy process is another torch job: a
matrix-multiply loop with torch's default threads, started before the study and stopped after it. Every command
is the CLI a user types; the per-trial seconds and threads come from the study's trials.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY = ("import torch, time\n"
        "a = torch.rand(512, 512)\n"
        "end = time.time() + 3600\n"
        "while time.time() < end:\n"
        "    a = torch.tanh(a @ a)\n")


def study_command(storage: str, trials: int) -> list[str]:
    return [sys.executable, "-m", "autocompress", "study", "--task", "digits", "--objective", "size", "--max-drop",
            "1", "--target", "30", "--trials", str(trials), "--seed", "0", "--name", "workers",
            "--storage", storage]


def trial_figures(storage: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "autocompress", "study", "show", "--name", "workers",
                          "--storage", storage, "--json"], capture_output=True, text=True, check=True)
    trials = json.loads(out.stdout)["trials"]
    seconds = [t["seconds"] for t in trials if t.get("seconds")]
    return {"finished": len(trials), "mean_trial_s": statistics.mean(seconds) if seconds else float("nan"),
            "median_trial_s": statistics.median(seconds) if seconds else float("nan")}


def run_setup(name: str, workers: int, busy: bool, trials: int, folder: Path) -> dict:
    storage = f"journal:///{folder}/{name}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
    try:
        if neighbour:
            time.sleep(3)  # the neighbour is up to speed before the study starts
        started = time.perf_counter()
        procs = []
        for i in range(workers):
            procs.append(subprocess.Popen(study_command(storage, trials), cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            if i == 0 and workers > 1:
                time.sleep(1)  # the first worker creates and seeds the study
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"{name}: a worker exited {proc.returncode}: {err[-2000:]}")
        wall = time.perf_counter() - started
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()
    return {"setup": name, "workers": workers, "busy_neighbour": busy, "wall_s": wall,
            **trial_figures(storage)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "studies" / "results" / "workers_compare.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: the digits model is trained and cached on first use; that must not count for the first set-up.
        subprocess.run([sys.executable, "-m", "autocompress", "profile", "--task", "digits", "--json"], cwd=ROOT,
                       capture_output=True, check=True)
        for name, workers, busy in (("one worker", 1, False), ("two workers, one journal", 2, False),
                                    ("one worker beside a busy process", 1, True)):
            row = run_setup(name.replace(" ", "_").replace(",", ""), workers, busy, args.trials, Path(folder))
            row["setup"] = name
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"# Study wall time: workers and a busy neighbour ({args.trials}-trial digits study)", "",
             f"`{' '.join(['.venv/bin/python', 'studies/workers_compare.py', '--trials', str(args.trials)])}` on "
             f"{platform.node()} ({os.cpu_count()} cores, {platform.python_version()}), "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| set-up | workers | busy neighbour | wall (s) | finished trials | mean trial (s) | median trial (s) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setup']} | {r['workers']} | {'yes' if r['busy_neighbour'] else 'no'} | "
                     f"{r['wall_s']:.1f} | {r['finished']} | {r['mean_trial_s']:.2f} | {r['median_trial_s']:.2f} |")
    lines += ["", "Mean and median trial seconds are per trial; two workers run two trials at a time, so the "
              "wall time is what a user waits for. Threads per trial: `autocompress.threads`."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
