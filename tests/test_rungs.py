"""The rung rule: trials judged at fixed epochs against the study's other trials, read from the storage.

Fast tests use hand-made trials in a real SQLite study (optuna.create_study + add_trial); one runs a 2-trial
digits study to check what a real trial records (``curve``, ``pruned``) and the epochs summary.
"""

import math

import optuna
import pytest

from autocompress.study import CONSTRAINT_KEY, results
from autocompress.study.rungs import CURVE_ATTR, PRUNED_ATTR, RungRule

KEY = {"quantization": "none", "embeddings": "float"}
TARGET = 0.97  # the metric the threshold needs (higher is better)


def _trial(final: float, curve: list[float], *, feasible: bool = True, stopped: str = "max_epochs",
           pruned: dict | None = None, aborted: str | None = None, state=optuna.trial.TrialState.COMPLETE):
    attrs = {CURVE_ATTR: curve, "distillation": {"epochs_run": len(curve), "stopped_because": stopped}}
    if pruned is not None:
        attrs[PRUNED_ATTR] = {**pruned, **KEY}
    if aborted:
        attrs["aborted"] = aborted
    complete = state == optuna.trial.TrialState.COMPLETE
    return optuna.trial.create_trial(
        state=state, values=[final, 1.0] if complete else None, user_attrs=attrs,
        constraints={CONSTRAINT_KEY: -0.5 if feasible else 0.5} if complete else None)


def _study(tmp_path, name: str = "r"):
    storage = f"sqlite:///{tmp_path}/r.db"
    return optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                               load_if_exists=True), storage


def _rule(study, **kw):
    defaults = dict(number=99, target=TARGET, higher_is_better=True, max_epochs=5, key=KEY)
    defaults.update(kw)
    return RungRule(study, **defaults)


def _three_full_trials(study, gain: float = 0.06, start: float = 0.90):
    """Three trials that trained to their end, at ``start`` .. ``start`` + 0.02 after epoch 1; each gained
    ``gain`` (at most) from epoch 1 to its final metric."""
    for first, g in [(start, gain), (start + 0.01, gain / 2), (start + 0.02, gain / 3)]:
        study.add_trial(_trial(first + g, [first, first + 0.01, first + 0.02, first + g, first + g]))


def test_a_trial_that_cannot_reach_the_threshold_stops_at_the_first_rung_with_the_figures(tmp_path):
    study, _ = _study(tmp_path)
    _three_full_trials(study, start=0.80)  # largest epoch-1 gain 0.06, x1.5 = 0.09
    rule = _rule(study)
    reason = rule(1, 0.85)  # at most 0.85 + 0.09 = 0.94 < 0.97
    assert reason and reason == rule.reason
    assert "epoch 1" in reason and "0.8500" in reason and "0.9400" in reason and "0.9700" in reason
    assert "3 completed trials that stood no higher" in reason


def test_the_gains_of_trials_that_stood_higher_do_not_stop_a_lower_trial(tmp_path):
    # Mild trials at 0.90-0.92 after epoch 1 gained at most 0.06; a heavily pruned trial at 0.80 may gain more
    # (on digits one went from 0.80 to 0.99): without three finished trials that stood as low, no threshold stop.
    study, _ = _study(tmp_path)
    _three_full_trials(study)
    rule = _rule(study)
    assert rule(1, 0.80) is None
    assert rule.checks == [{"rung": 1, "best": 0.80, "trials_with_gains": 3, "trials_no_higher": 0,
                            "optimistic": pytest.approx(0.89)}]


def test_a_trial_that_can_reach_it_goes_on_and_is_judged_only_at_rungs(tmp_path):
    study, _ = _study(tmp_path)
    _three_full_trials(study)
    rule = _rule(study)
    assert rule(1, 0.95) is None  # 0.95 + 0.09 = 1.04 >= 0.97
    assert rule(2, 0.50) is None  # epoch 2 is not a rung
    # best so far 0.95 (the distillation keeps its best weights) + 1.5 x 0.04 (the largest epoch-3 gain) = 1.01
    assert rule(3, 0.51) is None
    assert rule.reason is None and [c["rung"] for c in rule.checks] == [1, 3]
    assert rule.checks[1]["reach"] == pytest.approx(1.01)


def test_lower_is_better_metrics_are_judged_in_their_direction(tmp_path):
    study, _ = _study(tmp_path)
    for first in (0.40, 0.42, 0.44):  # a loss: falls by 0.05 from epoch 1 to the end
        study.add_trial(_trial(first - 0.05, [first, first - 0.05]))
    assert _rule(study, target=0.30, higher_is_better=False)(1, 0.40) is not None  # 0.40 - 0.075 > 0.30
    assert _rule(study, target=0.30, higher_is_better=False)(1, 0.37) is None  # 0.37 - 0.075 <= 0.30


def test_stopped_and_threshold_stopped_trials_do_not_set_the_gain_and_too_few_trials_never_stop(tmp_path):
    study, _ = _study(tmp_path)
    study.add_trial(_trial(0.96, [0.90, 0.96]))
    study.add_trial(_trial(0.91, [0.90], stopped="callback", aborted="rung stop at epoch 1: ..."))
    study.add_trial(_trial(0.97, [0.96, 0.97], stopped="target_reached"))
    study.add_trial(_trial(0.5, [0.5, 0.5], state=optuna.trial.TrialState.FAIL))
    rule = _rule(study)
    assert rule(1, 0.10) is None  # one full-length trial only: nothing to go on, no stop
    assert rule.checks == [{"rung": 1, "best": 0.10, "trials_with_gains": 1, "trials_no_higher": 0}]


def test_the_seed_trial_is_never_stopped_by_rungs(tmp_path):
    study, _ = _study(tmp_path)
    _three_full_trials(study, start=0.05)
    assert _rule(study)(1, 0.10) is not None
    seed = _rule(study, number=0, seeded=True)
    assert seed(1, 0.10) is None and seed(3, 0.10) is None and seed.reason is None


def test_the_rule_reads_trials_another_process_wrote_to_the_storage(tmp_path):
    study, storage = _study(tmp_path)
    rule = _rule(study)
    assert rule(1, 0.80) is None  # the study is empty: no stop
    # Another worker's storage connection writes three finished trials while this one trains.
    other = optuna.load_study(study_name="r", storage=optuna.storages.RDBStorage(storage))
    _three_full_trials(other, start=0.70)
    reason = rule(3, 0.82)
    assert reason and "epoch 3" in reason and "0.9700" in reason


def test_rungs_at_or_past_the_epoch_budget_are_skipped(tmp_path):
    study, _ = _study(tmp_path)
    _three_full_trials(study)
    rule = _rule(study, max_epochs=3)
    assert rule.rungs == (1,)
    assert rule(1, 0.90) is None and rule(3, 0.10) is None  # epoch 3 is the last: stopping there saves nothing


SMALL = {"params": 1_000, "flops": 10_000}
LARGE = {"params": 5_000, "flops": 50_000}


def _front_study(tmp_path, pruned: dict):
    study, _ = _study(tmp_path)
    _three_full_trials(study)  # gains up to 0.06 (x1.5: 0.09), finals 0.96, 0.94, 0.94
    study.add_trial(_trial(0.995, [0.98, 0.99, 0.995], stopped="patience", pruned=pruned))  # trial 3
    return study


def test_a_trial_that_a_smaller_feasible_trial_dominates_is_stopped_naming_it(tmp_path):
    study = _front_study(tmp_path, SMALL)
    asked = []
    rule = _rule(study, structure=lambda: asked.append(1) or LARGE)
    reason = rule(1, 0.90)  # at most 0.99 <= trial 3's 0.995, and trial 3 is smaller
    assert reason and "trial 3" in reason and "0.9950" in reason and "1,000 params" in reason
    assert "5,000 params" in reason and asked == [1]


@pytest.mark.parametrize("mine,key", [(SMALL, KEY), (dict(params=5_000, flops=5_000), KEY),
                                      (LARGE, {**KEY, "quantization": "dynamic"})])
def test_no_front_stop_against_a_larger_or_differently_quantized_trial(tmp_path, mine, key):
    study = _front_study(tmp_path, LARGE)
    assert _rule(study, structure=lambda: mine, key=key)(1, 0.90) is None


def test_the_pruned_figures_are_computed_only_when_a_trial_could_dominate(tmp_path):
    study = _front_study(tmp_path, SMALL)
    asked = []
    assert _rule(study, structure=lambda: asked.append(1) or LARGE)(1, 0.93) is None  # may reach 1.02 > 0.995
    assert asked == []


MID = {"params": 3_000, "flops": 30_000}


def test_rank_rule_stops_the_bottom_third_that_cannot_beat_a_smaller_feasible_trial(tmp_path):
    study, _ = _study(tmp_path)
    # Five full-length trials gaining 0.01 .. 0.05 from epoch 1: the largest gain x1.5 is 0.075, the likely one
    # (the 2/3 quantile, 0.04) x1.5 is 0.06. Trial 3 (final 1.00) is smaller than this trial's MID structure.
    for i, first in enumerate([0.93, 0.94, 0.95, 0.96, 0.97]):
        gain = 0.01 * (i + 1)
        study.add_trial(_trial(first + gain, [first, first + gain], pruned=SMALL if i == 3 else LARGE))
    front = _rule(study, structure=lambda: MID)
    assert front(1, 0.92) and "trial 3" in front.reason and "same quantization" in front.reason  # at most 0.995
    ranked = _rule(study, structure=lambda: MID)
    # 0.935: better than 1 of the 5 at epoch 1; at most 1.01 (only trial 4, larger, beats that) but likely 0.995
    assert ranked(1, 0.935) and "only 1 of the 5 trials" in ranked.reason and "trial 3" in ranked.reason
    assert _rule(study, structure=lambda: MID)(1, 0.945) is None  # better than 2 of 5: not the bottom third


def test_study_epochs_sums_the_finished_trials(tmp_path):
    study, storage = _study(tmp_path)
    study.add_trial(_trial(0.9, [0.8, 0.85, 0.9]))  # 3 epochs
    study.add_trial(_trial(0.9, [0.8]))  # 1 epoch (stopped)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,  # failed after 2 epochs
                                              user_attrs={CURVE_ATTR: [0.8, 0.8]}))
    study.add_trial(_trial(0.9, [0.8, 0.8, 0.8, 0.8], state=optuna.trial.TrialState.RUNNING))  # not finished
    assert results.study_epochs(study) == 6
    assert results.epochs_summary(study) == {"total": 6, "trials": {"0": 3, "1": 1, "2": 2}}


@pytest.mark.slow
def test_a_real_study_records_curves_pruned_structures_and_epochs(tmp_path, monkeypatch):
    from autocompress import study as st
    from autocompress.requirements import Requirements

    monkeypatch.chdir(tmp_path)
    requirements = Requirements(objective="size", max_drop=1, target=30, budget="low")
    study = st.run_study("digits", requirements, ["size"], 2, name="d", storage=f"sqlite:///{tmp_path}/d.db",
                         n_neighbours=1)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        curve, pruned = t.user_attrs[CURVE_ATTR], t.user_attrs[PRUNED_ATTR]
        assert len(curve) == t.user_attrs["distillation"]["epochs_run"] and all(math.isfinite(v) for v in curve)
        assert pruned["params"] > 0 and pruned["flops"] > 0 and pruned["quantization"] == t.params[
            "quantization.mode"]
    assert results.study_epochs(study) == sum(len(t.user_attrs[CURVE_ATTR]) for t in trials)
    data = results.pareto(study, "sqlite://")
    assert set(data["epochs"]["front"]) == {str(r["number"]) for r in data["front"]}
