"""The study issue's acceptance run: a 12-trial study on digits (objective size, max drop 1 point, target 30×).

Runs the CLI exactly as a user would (``autocompress study``, ``study show``, ``study pareto``,
``export --best``), in a fresh temporary storage, then checks each acceptance line and writes
``studies/results/study_acceptance.md`` (atomically):

- trial 0's params equal the selector's plan (``autocompress plan``);
- at least one feasible trial reaches ≥30× size;
- the study improves on its seed (best feasible size reduction > trial 0's, or some trial feasible where trial 0
  was not);
- the Pareto front JSON equals a recomputation from the trials' values;
- ``export --best`` writes a TorchScript model that reloads, and whose measured size and metric match the trial's
  stored values (size within 2 %, metric within 0.2 points).

    .venv/bin/python studies/study_acceptance.py [--trials 12] [--seed 0]

Exits 1 if any line fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

import autocompress
from autocompress import study as st
from autocompress._io import atomic_write
from autocompress.plan import Plan
from autocompress.profile import serialized_size_mb
from autocompress.task import load_task

OUT = Path(__file__).parent / "results" / "study_acceptance.md"
REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30"]


def cli(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "autocompress", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`autocompress {' '.join(args)}` failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def accuracy(model, task) -> float:
    correct = total = 0
    with torch.inference_mode():
        for x, y in task.eval_loader():
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        storage = f"sqlite:///{folder}/acceptance.db"
        started = time.perf_counter()
        cli("study", *REQ, "--trials", str(args.trials), "--seed", str(args.seed), "--name", "acceptance",
            "--storage", storage, cwd=folder)
        study_seconds = time.perf_counter() - started
        data = json.loads(cli("study", "show", "--name", "acceptance", "--storage", storage, "--json", cwd=folder))
        front_json = json.loads(cli("study", "pareto", "--name", "acceptance", "--storage", storage, "--json",
                                    cwd=folder))["front"]
        selector = Plan.load(json.loads(cli("plan", *REQ, "--json", cwd=folder))["plan"])
        exported = json.loads(cli("export", "--name", "acceptance", "--storage", storage, "--best", "--format",
                                  "torchscript", "--out", str(folder / "best.ts"), "--json", cwd=folder))
        archived = json.loads(cli("export", "--name", "acceptance", "--storage", storage, "--best", "--format",
                                  "autocompress", "--out", str(folder / "best.acz"), "--json", cwd=folder))
        task = load_task("digits")
        program = autocompress.load(folder / "best.ts")  # the TorchScript program, no autocompress module needed
        rebuilt = autocompress.load(folder / "best.acz", task.model)  # the real (int8) module from the archive
        # Size as the study measures it (the serialized state dict); a TorchScript module hides int8 weights in
        # packed objects its state_dict does not list, so it is measured on the rebuilt module.
        measured_size = serialized_size_mb(rebuilt)
        measured_metric = accuracy(program, task)
        rebuilt_metric = accuracy(rebuilt, task)

    trials = data["trials"]
    trial0 = trials[0]
    feasible = [t for t in trials if t["state"] == "COMPLETE" and t["feasible"]]
    best_size = max((t["reduction"]["size"] for t in feasible), default=None)
    recomputed = st.pareto_front(trials, data["objectives"]["directions"])
    stored = exported["metrics"]
    size_gap = abs(measured_size - stored["size_mb"]) / stored["size_mb"]
    metric_gap = 100 * max(abs(measured_metric - stored["metric"]["value"]),
                           abs(rebuilt_metric - stored["metric"]["value"]))
    checks = {
        "trial 0's params equal the selector's plan":
            trial0["params"] == st.trial_params_from_plan(selector)
            and Plan.load(trial0["plan"]) == st.canonical_plan(selector),  # hard distillation runs as finetune
        "a feasible trial reaches >= 30x size": best_size is not None and best_size >= 30,
        "the study improves on its seed":
            (best_size is not None and best_size > trial0["reduction"]["size"]) if trial0["feasible"]
            else bool(feasible),
        "the Pareto front JSON equals a recomputation":
            [t["number"] for t in front_json] == [t["number"] for t in recomputed] and bool(recomputed),
        "export --best: reloads and passes parity": exported["trial"] == archived["trial"]
            and exported["check"] == "max_abs_diff" and exported["value"] <= 1e-4,
        "export --best: size within 2 %, metric within 0.2 points": size_gap <= 0.02 and metric_gap <= 0.2,
    }

    lines = [
        "# Study acceptance: 12 trials on digits (size, max drop 1 point, target 30×)",
        "",
        "Produced by `.venv/bin/python studies/study_acceptance.py` "
        f"(seed {args.seed}, a fresh SQLite storage, default budget).",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, optuna {optuna.__version__}.",
        f"Study wall time: {study_seconds:.0f} s for {len(trials)} trials "
        f"({study_seconds / max(len(trials), 1):.1f} s per trial, measuring the original model included).",
        "",
        f"Original: {data['original']['size_mb']:.3f} MB, accuracy {100 * data['original']['metric']['value']:.2f} %.",
        "",
        "| trial | state | plan | accuracy % | drop (points) | size × | MACs × | latency b64 × | feasible | s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    front_numbers = {t["number"] for t in recomputed}
    for t in trials:
        red = t["reduction"] or {}
        acc = t["metrics"]["metric"]["value"] * 100 if t["metrics"] else float("nan")
        mark = " (front)" if t["number"] in front_numbers else ""
        note = f" — {t['aborted']}" if t.get("aborted") else (f" — {t['error']}" if t.get("error") else "")
        lines.append(
            f"| {t['number']}{mark} | {t['state']} | {t['plan_summary']}{note} | {acc:.2f} | "
            f"{t['metric_drop'] if t['metric_drop'] is None else format(t['metric_drop'], '.2f')} | "
            f"{red.get('size', float('nan')):.2f} | {red.get('flops', float('nan')):.2f} | "
            f"{red.get('latency', float('nan')):.2f} | {t['feasible']} | {t['seconds'] or 0:.1f} |")
    lines += [
        "",
        f"Pareto front (feasible, non-dominated in accuracy vs size): trials {sorted(front_numbers)}.",
        f"Best feasible size reduction: {best_size:.2f}× (trial 0: {trial0['reduction']['size']:.2f}×, "
        f"feasible {trial0['feasible']}).",
        "",
        f"`export --best`: trial {exported['trial']}, stored {stored['size_mb']:.4f} MB / "
        f"{100 * stored['metric']['value']:.2f} %. The TorchScript file reloads (check {exported['check']} = "
        f"{exported['value']:.3g} on 64 inputs) and scores {100 * measured_metric:.2f} %; the autocompress archive "
        f"rebuilt on the digits model measures {measured_size:.4f} MB ({100 * size_gap:.2f} % from the stored "
        f"size) and scores {100 * rebuilt_metric:.2f} % (largest gap {metric_gap:.2f} points).",
        "",
        "| acceptance line | met |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in checks.items()],
        "",
    ]
    text = "\n".join(lines)
    atomic_write(args.out, lambda fh: fh.write(text.encode()))
    print(text)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
