"""The ONNX Runtime backend's study acceptance run: a 12-trial ``study --backend onnxruntime`` on digits.

Runs the CLI as a user would (``autocompress study`` and ``export --best --format onnx``) in a fresh temporary
storage, then checks each acceptance line and writes ``studies/results/onnxruntime_study.md`` (atomically):

- every completed trial stored an ``.onnx`` file that ONNX Runtime loads;
- the metric measured on that file in ONNX Runtime equals the trial's stored metric within 0.2 points;
- ``export --best --format onnx`` returns the best trial's stored file bit for bit;
- the dashboard's data layer lists the trial with ``onnx`` as its only format and exports the same bytes.

    .venv/bin/python studies/onnxruntime_study.py [--trials 12] [--seed 0]

Exits 1 if any line fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

import autocompress
from autocompress import study as acs
from autocompress._io import atomic_write
from autocompress.plan import Plan
from autocompress.task import load_task

sys.path.insert(0, str(Path(__file__).parent))
from study_acceptance import accuracy, cli  # noqa: E402  (the same CLI runner and accuracy as the CPU study's)

OUT = Path(__file__).parent / "results" / "onnxruntime_study.md"
REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low",
       "--backend", "onnxruntime"]
TOLERANCE_POINTS = 0.2


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from dashboard import data

    task = load_task("digits")
    samples = sum(len(y) for _, y in task.eval_loader())
    lines: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        storage = f"sqlite:///{work}/ort.db"
        started = time.perf_counter()
        cli("study", *REQ, "--name", "ort", "--storage", storage, "--trials", str(args.trials),
            "--seed", str(args.seed), cwd=work)
        seconds = time.perf_counter() - started
        study = acs.load_study("ort", storage)
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        rows = []
        all_onnx = all_close = True
        for trial in done:
            path = acs.download_trial_model(study, trial, work / f"t{trial.number}")
            is_onnx = path.suffix == ".onnx" and trial.user_attrs.get("artifact_format") == "onnx"
            model = autocompress.load(path)  # an ONNX Runtime session around the file
            measured = accuracy(model, task)
            stored = trial.user_attrs["metrics"]["metric"]["value"]
            gap = abs(100 * measured - 100 * stored)
            all_onnx &= is_onnx
            all_close &= gap <= TOLERANCE_POINTS
            plan = Plan.load(trial.user_attrs["plan"])
            rows.append(f"| {trial.number} | {path.stat().st_size:,} | {plan.quantization_mode} | "
                        f"{100 * stored:.2f} | {100 * measured:.2f} | {gap:.2f} | "
                        f"{'yes' if trial.user_attrs.get('feasible', True) else 'no'} |")
        lines.append((f"every completed trial ({len(done)} of {len(study.trials)}) is an .onnx file ONNX Runtime "
                      "loads", all_onnx and bool(done), ""))
        lines.append((f"measured metric equals the stored one within {TOLERANCE_POINTS} points", all_close, ""))
        out = work / "best.onnx"
        info = json.loads(cli("export", "--name", "ort", "--storage", storage, "--best", "--format", "onnx",
                              "--out", str(out), "--json", cwd=work))
        best = study.trials[info["trial"]]
        stored_best = acs.download_trial_model(study, best, work / "best_stored")
        identical = sha(out) == sha(stored_best)
        lines.append(("`export --best --format onnx` returns the stored file bit for bit",
                      identical and info["check"] == "unchanged", f"trial {best.number}, sha256 {sha(out)[:16]}…"))
        loaded = data.load(storage, "ort")
        record = next(t for t in loaded["trials"] if t["number"] == best.number)
        dashboard_path, figures = data.export(storage, "ort", best.number, "onnx", work / "dashboard")
        shown = data.export_formats(record) == ("onnx",)
        lines.append(("the dashboard lists the trial (onnx only) and exports the same bytes",
                      shown and sha(dashboard_path) == sha(stored_best) and figures["check"] == "unchanged", ""))
    ok = all(passed for _, passed, _ in lines)
    text = "\n".join([
        "# A 12-trial study on the ONNX Runtime backend (digits)",
        "",
        f"Produced by `.venv/bin/python studies/onnxruntime_study.py --trials {args.trials} --seed {args.seed}`, which "
        f"runs `autocompress study {' '.join(REQ)} --trials {args.trials}` and `autocompress export --best --format "
        "onnx` in a temporary storage.",
        f"Machine: {platform.platform()}, {torch.get_num_threads()} torch threads; onnxruntime "
        f"{onnxruntime.__version__}, torch {torch.__version__}, autocompress {autocompress.__version__}. "
        f"Study wall time {seconds:.0f} s.",
        "",
        "| acceptance line | met | detail |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if passed else '**no**'} | {detail} |" for name, passed, detail in lines],
        "",
        f"Every completed trial, its stored `.onnx` file reloaded in ONNX Runtime and evaluated on the {samples} "
        "evaluation digits (accuracy in %):",
        "",
        "| trial | .onnx bytes | int8 mode | stored | measured | gap (points) | feasible |",
        "|---:|---:|---|---:|---:|---:|---|",
        *rows,
        "",
    ])
    atomic_write(OUT, lambda f: f.write(text.encode()))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
