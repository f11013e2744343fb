"""Epoch time on the real encoder: batches padded to the maximum length vs cut to their longest sequence.

    .venv/bin/python studies/padding_compare.py [--epochs 1] [--rounds 3]

Fine-tunes the `reviews` task's model (all-MiniLM-L6-v2, 2,000 snippets, batch 32) for one epoch with each
setting, alternating the two (median of ``--rounds`` after a warm-up batch), and times the evaluation pass over
the 1,000 evaluation snippets the same way. Writes studies/results/padding_compare.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from autocompress._io import atomic_write
from autocompress.distillation import DistillationConfig, FineTune, distill
from autocompress.profile import evaluate
from autocompress.task import load_task

OUT = Path(__file__).parent / "results" / "padding_compare.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = load_task("reviews")
    tasks = {"padded to 48 tokens": dataclasses.replace(base, pad_to_longest=False),
             "cut to the longest in each batch": dataclasses.replace(base, pad_to_longest=True)}
    config = DistillationConfig(technique=FineTune(), stop="epochs", max_epochs=args.epochs, patience=None, lr=5e-5)
    train: dict[str, list[float]] = {k: [] for k in tasks}
    evals: dict[str, list[float]] = {k: [] for k in tasks}
    metrics: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, task in tasks.items():
            result = distill(task.model, task, config, teacher=task.model, progress=False)
            train[name].append(result.seconds)
            started = time.perf_counter()
            metrics[name] = evaluate(task.model, task.eval_loader(), task.resolved_metric)
            evals[name].append(time.perf_counter() - started)
    names = list(tasks)
    lines = ["# Padding: fixed length vs each batch cut to its longest sequence (reviews task)", "",
             f"all-MiniLM-L6-v2, 2,000 training / 1,000 evaluation snippets, batch {base.batch_size}, 2 threads; "
             f"median of {args.rounds} alternating rounds. `distill` time includes its per-epoch evaluation.", "",
             "| batches | fine-tune, 1 epoch + eval (s) | evaluation pass (s) | accuracy of the original |",
             "| --- | ---: | ---: | ---: |"]
    for name in names:
        lines.append(f"| {name} | {statistics.median(train[name]):.1f} | {statistics.median(evals[name]):.2f} | "
                     f"{metrics[name]:.4f} |")
    ratio_train = statistics.median(a / b for a, b in zip(train[names[0]], train[names[1]]))
    ratio_eval = statistics.median(a / b for a, b in zip(evals[names[0]], evals[names[1]]))
    lines += ["", f"Cutting the padding: **{ratio_train:.2f}×** faster epochs, **{ratio_eval:.2f}×** faster evaluation "
              "(per-round ratios, median). The metric is the same: the model's outputs do not depend on padding.",
              "", "Reproduce: `.venv/bin/python studies/padding_compare.py`", ""]
    atomic_write(OUT, lambda fh: fh.write("\n".join(lines).encode("utf-8")))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
