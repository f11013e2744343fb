"""Benchmarks: the thesis's tables for a task, against what a user would otherwise do, measured in one run.

A YAML definition (see ``studies/digits.yaml``) names the tasks, the training budget, the seed and three
sections; :func:`run_bench` runs them and writes a markdown report and a CSV:

1. **preservation** (thesis Tables 4–7): per threshold (1, 3, 5 points), one study minimising size, FLOPs and
   latency together; the best feasible X-fold reduction of each.
2. **targets** (thesis Tables 8–19): per objective and target, one study; the trial that reaches the target with
   the smallest drop (or, when none does, the largest feasible reduction), with its drop.
3. **baselines**, per objective at the same training budget and threshold: the Torch-Pruning recipe a user
   would write (global magnitude pruning to the target, then plain fine-tuning; also tried at half and a
   quarter of the target, the best kept), dynamic int8 alone, static int8 alone, the rule plan alone (the
   study's trial 0), a strong hand-written recipe (80% of the channels of every layer, distillation, static
   int8), and the full study. For each, the best reduction at ≤ max drop, and whether the study's feasible front
   dominates it (in metric and that reduction); a baseline without a result is reported as not run.

Every study and run of one benchmark uses the same seed and budget; the original model is measured by each
study, and each row's reductions are against the original measured in that study or run.

Modules: :mod:`~autocompress.bench.definition` (the YAML file), :mod:`~autocompress.bench.runner` (studies and
baseline runs), :mod:`~autocompress.bench.tables` (rows, CSV, markdown).
"""

from __future__ import annotations

from .definition import BENCH_VERSION, OBJECTIVE_KEYS, BenchDefinition, BenchError, load_definition
from .runner import HAND_RECIPE, HAND_RECIPE_RATIOS, front_dominates, machine_record, run_bench, trial_timing
from .tables import CSV_FIELDS, NOT_RUN, BenchResult, Row, markdown

__all__ = ["BENCH_VERSION", "BenchDefinition", "BenchError", "BenchResult", "CSV_FIELDS", "HAND_RECIPE",
           "HAND_RECIPE_RATIOS", "NOT_RUN",
           "OBJECTIVE_KEYS", "Row", "front_dominates", "load_definition", "machine_record", "markdown",
           "run_bench", "trial_timing"]
