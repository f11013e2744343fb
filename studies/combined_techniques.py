"""Thesis Table 2, small: the metric drop of pruning, pruning + distillation, and all three techniques.

On the built-in digits task, for a size target (2× as in the thesis, and 10× and 30× where the differences show), three
action sets are run once each in one process, on the same training budget (15 epochs, patience 3, Adam 1e-3,
seed 0):

- pruning: pruned to the whole target, then plain fine-tuning on the labels;
- pruning + distillation: the same pruning, recovered with combined distillation (T=4, α=0.5) from the original;
- pruning + distillation + quantization: quantization-aware training inside the same distillation, so pruning
  only has to reach the target over the int8 gain (the selector's estimate, 4×).

Writes ``studies/results/combined_techniques.md`` (atomically).

    .venv/bin/python studies/combined_techniques.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

import autocompress
from autocompress._io import atomic_write
from autocompress.distillation import CombinedDistillation, DistillationConfig, FineTune
from autocompress.pipeline import run_plan
from autocompress.plan import Plan
from autocompress.pruning import PruningConfig, solve_target
from autocompress.quantization import quantization_config
from autocompress.requirements import Requirements
from autocompress.selection import INT8_SIZE_GAIN

OUT = Path(__file__).parent / "results" / "combined_techniques.md"
TARGETS = (2.0, 10.0, 30.0)
BUDGET = dict(stop="epochs", max_epochs=15, patience=3, lr=1e-3, seed=0)


def _pruning(task: autocompress.Task, fold: float) -> PruningConfig:
    if fold <= 1.0:
        return PruningConfig(technique="lamp", strategy="global", ratio=0.0)
    solved = solve_target(task.model, task.example_input, "lamp", "global", objective="params", target=fold,
                          tolerance=0.02, progress=False)
    return solved.config


def main() -> int:
    started = time.perf_counter()
    task = autocompress.load_task("digits")
    original = autocompress.profile_task(task, device="cpu")
    rows = []
    for target in TARGETS:
        requirements = Requirements(objective="size", max_drop=1, target=target)
        full = _pruning(task, target)
        with_quant = _pruning(task, target / INT8_SIZE_GAIN)
        action_sets = {
            "pruning": Plan(pruning=full, distillation=DistillationConfig(technique=FineTune(), **BUDGET)),
            "pruning + distillation": Plan(pruning=full, distillation=DistillationConfig(
                technique=CombinedDistillation(temperature=4.0, alpha=0.5), **BUDGET)),
            "pruning + distillation + quantization": Plan(pruning=with_quant, distillation=DistillationConfig(
                technique=CombinedDistillation(temperature=4.0, alpha=0.5), **BUDGET),
                quantization=quantization_config("qat")),
        }
        for name, plan in action_sets.items():
            result = run_plan(task, plan, original, requirements=requirements, device="cpu", progress=False)
            rows.append((target, name, plan.pruning.ratio, result.reduction["size"], result.reduction["flops"],
                         result.metric_drop, result.seconds))
            print(f"{target:g}x {name}: ratio {plan.pruning.ratio:.3f}, {result.reduction['size']:.2f}x size, "
                  f"drop {result.metric_drop:.2f} points", file=sys.stderr)
    lines = [
        "# Combining techniques (thesis Table 2, small)", "",
        f"Task `digits` (450 eval images: one image is 0.22 points); original accuracy "
        f"{100 * original.metric['value']:.2f}%. Same budget for every row: at most 15 epochs, patience 3, "
        "Adam at 1e-3, seed 0. Pruning: LAMP, global, ratio from the target solver (measured params).", "",
        "| size target | action set | pruning ratio | size reduction | MACs reduction | accuracy drop (points) "
        "| seconds |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target, name, ratio, size, flops, drop, seconds in rows:
        lines.append(f"| {target:g}× | {name} | {ratio:.3f} | {size:.2f}× | {flops:.2f}× | {drop:+.2f} | "
                     f"{seconds:.1f} |")
    lines += ["", "A negative drop is a gain. With int8 quantization-aware training, pruning only has to reach the "
              "target over the 4× int8 estimate, so the model keeps more channels for the same size goal.", "",
              f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, Python "
              f"{platform.python_version()}, torch {torch.__version__}. Wall time "
              f"{time.perf_counter() - started:.0f} s. Reproduce: `.venv/bin/python studies/combined_techniques.py`."]
    atomic_write(OUT, lambda fh: fh.write(("\n".join(lines) + "\n").encode()))
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
