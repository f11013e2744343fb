"""Bisection at the threshold's edge: the next trial's kept fraction, the near miss's repair, the callback's
limits. Hand-made trials in a real SQLite study; no model is trained."""

import math

import optuna
import pytest

from autocompress.study import CONSTRAINT_KEY
from autocompress.study.edge import EDGE_ATTR, MAX_SHARE, enqueue_edge_trial, next_edge_params

DIST = {"pruning.keep": optuna.distributions.FloatDistribution(0.05, 1.0, log=True),
        "pruning.steps": optuna.distributions.IntDistribution(1, 3),
        "distillation.technique": optuna.distributions.CategoricalDistribution(["finetune", "combined"])}
MAX_DROP = 1.0


def _trial(keep: float, cost: float, drop: float, technique: str = "finetune", steps: int = 1):
    params = {"pruning.keep": keep, "pruning.steps": steps, "distillation.technique": technique}
    return optuna.trial.create_trial(
        params=params, distributions={k: DIST[k] for k in params}, values=[0.99 - drop / 100, cost],
        constraints={CONSTRAINT_KEY: drop - MAX_DROP}, user_attrs={"metric_drop": drop})


def _study(tmp_path, trials):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/e.db", directions=["maximize", "minimize"])
    for t in trials:
        study.add_trial(t)
    return study


def test_the_next_trial_keeps_the_geometric_mean_of_the_best_feasible_and_the_infeasible_below_it(tmp_path):
    study = _study(tmp_path, [_trial(0.30, 10.0, 0.5), _trial(0.20, 6.0, 5.0), _trial(0.5, 20.0, 0.0)])
    params, record = next_edge_params(study.get_trials(), 1, 0.05)
    assert params["pruning.keep"] == pytest.approx(math.sqrt(0.30 * 0.20), abs=1e-4)
    assert params["distillation.technique"] == "finetune" and params["pruning.steps"] == 1
    assert record == {"anchor": 0, "below": 1, "keep": params["pruning.keep"]}


def test_with_nothing_infeasible_below_it_steps_further_but_not_past_the_floor(tmp_path):
    study = _study(tmp_path, [_trial(0.30, 10.0, 0.5)])
    assert next_edge_params(study.get_trials(), 1, 0.05)[0]["pruning.keep"] == pytest.approx(0.24)
    assert next_edge_params(study.get_trials(), 1, 0.28)[0]["pruning.keep"] == pytest.approx(0.28)
    assert next_edge_params(study.get_trials(), 1, 0.30) is None  # at the floor: nothing further


def test_a_resolved_edge_retries_its_near_miss_with_distillation_then_one_more_step(tmp_path):
    trials = [_trial(0.30, 10.0, 0.5), _trial(0.29, 9.0, 1.8), _trial(0.28, 8.0, 9.0)]  # 9 points: no near miss
    study = _study(tmp_path, trials)
    params, record = next_edge_params(study.get_trials(), 1, 0.05)
    assert params["pruning.keep"] == 0.29 and params["distillation.technique"] == "combined"
    assert params["distillation.temperature"] == 4.0 and params["distillation.alpha"] == 0.5
    assert record["repair_of"] == 1
    study.add_trial(_trial(0.29, 9.0, 1.5, technique="combined"))  # the repair missed too
    params, record = next_edge_params(study.get_trials(), 1, 0.05)
    assert params["pruning.steps"] == 2 and params["distillation.technique"] == "finetune"
    study.add_trial(_trial(0.29, 9.0, 1.2, steps=2))
    assert next_edge_params(study.get_trials(), 1, 0.05) is None  # every repair tried


def test_no_feasible_trial_no_edge(tmp_path):
    assert next_edge_params(_study(tmp_path, [_trial(0.3, 10.0, 3.0)]).get_trials(), 1, 0.05) is None


def test_the_callback_waits_for_queued_trials_and_keeps_edge_trials_to_a_share_of_the_study(tmp_path):
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    queued = _study(tmp_path / "a", [_trial(0.30, 10.0, 0.5)])
    queued.enqueue_trial({"pruning.keep": 0.9})
    assert enqueue_edge_trial(queued, 20, 1, 0.05) is None  # a start-up trial is still waiting
    study = _study(tmp_path / "b", [_trial(0.30, 10.0, 0.5)])
    record = enqueue_edge_trial(study, 20, 1, 0.05)
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert record and len(waiting) == 1 and waiting[0].user_attrs[EDGE_ATTR] == record
    assert waiting[0].system_attrs["fixed_params"]["pruning.keep"] == pytest.approx(0.24)
    assert enqueue_edge_trial(study, 20, 1, 0.05) is None  # one waiting at a time
    assert MAX_SHARE * 2 < 1  # a 2-trial study has room for no edge trial; a 3-trial one for one
    assert enqueue_edge_trial(_study(tmp_path / "c", [_trial(0.3, 10.0, 0.5)]), 2, 1, 0.05) is None
