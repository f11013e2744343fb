"""The Optuna study: seeded by the selector's plan, multi-objective under the threshold constraint, resumable.

One module per concept:

- :mod:`~autocompress.study.space`: the search space and its one-to-one mapping onto plans;
- :mod:`~autocompress.study.abort`: the early-abort rule for trials that cannot reach the threshold;
- :mod:`~autocompress.study.storage`: storage URLs, opening them, the trial models' artifact store;
- :mod:`~autocompress.study.objective`: one trial: objectives, constraint, figures and costs, artifacts;
- :mod:`~autocompress.study.run`: creating, seeding, resuming and running a study;
- :mod:`~autocompress.study.results`: reading a study: trial records, ``study show``/``pareto``, the best trial.

Every name below is importable from ``autocompress.study`` itself.
"""

from __future__ import annotations

from ._common import ATTR, STUDY_SCHEMA_VERSION, StudyError
from ..export.trial import batch_like, download_trial_model, export_trial, trial_widths
from .abort import ABORT_OPTIMISM, ABORT_WINDOW, EarlyAbort
from .objective import (
    CONSTRAINT_KEY,
    COST_UNITS,
    COSTS,
    WORKER_ATTR,
    StudyContext,
    costs,
    figures,
    is_feasible,
    make_objective,
    parse_objectives,
)
from .results import (
    TrialRecord,
    best_trial,
    dominates,
    dumps,
    epochs_summary,
    pareto,
    pareto_front,
    pick_trial,
    show,
    study_epochs,
    study_meta,
    trial_epochs,
    trial_records,
)
from .rungs import CURVE_ATTR, PRUNED_ATTR, RUNGS, RungRule
from .run import FINISHED, fail_dead_trials, finished_trials, run_study
from .space import (
    ALPHA_RANGE,
    DISTILLATION_TECHNIQUES,
    LR_RANGE,
    RATIO_RANGE,
    ROUND_TO_CHOICES,
    STEPS_RANGE,
    TEMPERATURE_RANGE,
    SearchSpace,
    canonical_plan,
    edge_design,
    hand_recipe,
    keep_range_around,
    neighbours,
    plan_from_trial,
    proposable_quantization,
    trial_params_from_plan,
)
from .storage import (
    DEFAULT_STORAGE,
    HEARTBEAT_GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    AtomicArtifactStore,
    artifact_dir,
    load_study,
    mask_url,
    resolve_storage,
    storage_file,
)

__all__ = [
    "CURVE_ATTR", "PRUNED_ATTR", "RUNGS", "RungRule", "epochs_summary", "study_epochs", "trial_epochs",
    "ABORT_OPTIMISM", "ABORT_WINDOW", "ALPHA_RANGE", "ATTR", "AtomicArtifactStore", "CONSTRAINT_KEY", "COSTS",
    "COST_UNITS", "DEFAULT_STORAGE", "DISTILLATION_TECHNIQUES", "EarlyAbort", "FINISHED", "HEARTBEAT_GRACE_SECONDS",
    "HEARTBEAT_SECONDS", "LR_RANGE", "RATIO_RANGE", "ROUND_TO_CHOICES", "STEPS_RANGE", "STUDY_SCHEMA_VERSION",
    "SearchSpace", "StudyContext", "StudyError", "TEMPERATURE_RANGE", "TrialRecord", "WORKER_ATTR", "artifact_dir",
    "batch_like", "best_trial", "canonical_plan", "costs", "dominates", "download_trial_model", "dumps", "edge_design", "hand_recipe",
    "export_trial", "fail_dead_trials", "figures", "finished_trials", "is_feasible", "keep_range_around", "load_study",
    "make_objective", "mask_url", "neighbours", "parse_objectives", "pareto", "pareto_front", "pick_trial",
    "plan_from_trial", "proposable_quantization", "resolve_storage", "run_study", "show", "storage_file", "study_meta",
    "trial_params_from_plan", "trial_records", "trial_widths",
]
