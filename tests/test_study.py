"""The Optuna study: search space ↔ plan, seeding, constraint, artifacts, resume, failures, early abort, export.

Studies are tiny (digits, low budget = 5 epochs, 2-4 trials) and shared between tests through module fixtures.
"""

import json
import math
import re

import optuna
import pytest
import torch

from autocompress import study as st
from autocompress.plan import Plan

from .conftest import run_cli

REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low"]


def _show(storage: str, name: str, cwd) -> dict:
    result = run_cli("study", "show", "--name", name, "--storage", storage, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------ fast unit tests
def _space(**kw):
    base = dict(techniques=("random", "magnitude", "bn_scale", "group_norm", "lamp"),
                strategies=("linear", "conv", "global"), quantization=("none", "dynamic", "static", "qat"),
                max_epochs=5, backend="x86")
    base.update(kw)
    return st.SearchSpace(**base)


@pytest.mark.parametrize("quant,distil,extra", [
    ("qat", "finetune", {"pruning.round_to": 16}),
    ("static", "combined", {"pruning.round_to": 0, "distillation.temperature": 3.0, "distillation.alpha": 0.3}),
    ("dynamic", "soft", {"distillation.temperature": 6.5}),
    ("none", "finetune", {}),
])
def test_params_map_one_to_one_onto_plans(quant, distil, extra):
    params = {"quantization.mode": quant, "pruning.ratio": 0.4321, "pruning.technique": "lamp",
              "pruning.strategy": "conv", "pruning.steps": 2, "distillation.technique": distil,
              "distillation.lr": 0.0007, **extra}
    plan = st.plan_from_trial(optuna.trial.FixedTrial(params), _space())
    assert st.trial_params_from_plan(plan, _space()) == params  # conditional params only where they apply
    assert Plan.load(plan.to_dict()) == plan
    assert plan.quantization_mode == quant and plan.distillation.technique.name == distil
    assert plan.distillation.max_epochs == 5


def test_search_space_follows_model_and_backend():
    from autocompress.profile import LayerStats, Profile
    from autocompress.requirements import Requirements

    def profile(arch, types):
        return Profile(arch_type=arch, layers=tuple(LayerStats(type=t, count=1, params=10, flops=10) for t in types),
                       params=10 * len(types), flops=10, size_mb=1.0, latency_ms={"batch_1": 1, "batch_64": 2},
                       metric={"name": "accuracy", "value": 0.9}, device="cpu", threads=1)

    cnn = st.SearchSpace.for_model(profile("cnn", ["Conv2d", "BatchNorm2d", "Linear"]), Requirements(budget="low"))
    assert "bn_scale" in cnn.techniques and set(cnn.strategies) == {"conv", "linear", "global", "uniform"}
    assert cnn.quantization == ("none", "dynamic", "static", "qat") and cnn.max_epochs == 5
    mlp = st.SearchSpace.for_model(profile("mlp", ["Linear"]), Requirements(backend="gpu"))
    assert "bn_scale" not in mlp.techniques and set(mlp.strategies) == {"linear", "global", "uniform"}
    assert mlp.quantization == ("none",) and mlp.backend == "gpu" and mlp.max_epochs == 15
    bert = st.SearchSpace.for_model(profile("transformer", ["BertSelfAttention", "Linear"]), Requirements())
    assert bert.quantization == ("none", "dynamic") and "attention" in bert.strategies
    with pytest.raises(st.StudyError, match="outside the study's search space"):
        plan = st.plan_from_trial(optuna.trial.FixedTrial({
            "quantization.mode": "none", "pruning.ratio": 0.5, "pruning.technique": "bn_scale",
            "pruning.strategy": "linear", "pruning.steps": 1, "distillation.technique": "finetune",
            "distillation.lr": 1e-3}), _space())
        st.trial_params_from_plan(plan, mlp)


def test_hard_distillation_is_searched_as_finetune():
    from autocompress.distillation import FineTune, HardDistillation

    assert st.DISTILLATION_TECHNIQUES == ("finetune", "soft", "combined")
    plain = st.plan_from_trial(optuna.trial.FixedTrial({
        "quantization.mode": "none", "pruning.ratio": 0.5, "pruning.technique": "lamp", "pruning.strategy": "conv",
        "pruning.steps": 1, "distillation.technique": "finetune", "distillation.lr": 1e-3}), _space())
    hard = plain.replace(distillation=plain.distillation.replace(technique=HardDistillation()))
    params = st.trial_params_from_plan(hard, _space())  # a seed plan with hard distillation is enqueued as finetune
    assert params["distillation.technique"] == "finetune"
    assert st.plan_from_trial(optuna.trial.FixedTrial(params), _space()) == st.canonical_plan(hard) == plain
    assert st.canonical_plan(hard).distillation.technique == FineTune()
    # a study made before keeps its four choices when it resumes (Optuna refuses changed categorical choices)
    legacy = {k: v for k, v in _space().to_dict().items() if k != "distillation"}
    assert "hard" in st.SearchSpace.from_dict(legacy).distillation
    assert st.SearchSpace.from_dict(_space().to_dict()) == _space()


def test_trial_record_json_keys_and_best_trial_tie_break():
    keys = ["number", "state", "params", "values", "feasible", "metric_drop", "reduction", "plan", "plan_summary",
            "metrics", "seconds", "aborted", "error", "seeded", "artifact_id"]  # `study show --json`, in order
    record = st.TrialRecord(number=3, state="COMPLETE", values=(0.99, 0.02), feasible=True, reduction={"size": 9.0})
    assert list(record.to_dict()) == keys and record.to_dict()["values"] == [0.99, 0.02]
    assert st.TrialRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(AttributeError):
        record.state = "FAIL"  # frozen

    def rec(number, size, drop, values, feasible=True):
        return st.TrialRecord(number=number, state="COMPLETE", values=values, feasible=feasible, metric_drop=drop,
                              reduction={"size": size})

    directions = ["maximize", "minimize"]
    # 1 and 2 tie on size; 2 dropped less. 3 reduces more but is infeasible. 0 is dominated by 2.
    records = [rec(0, 5.0, 0.5, [0.97, 0.06]), rec(1, 10.0, 0.8, [0.98, 0.02]), rec(2, 10.0, 0.2, [0.985, 0.02]),
               rec(3, 30.0, 3.0, [0.90, 0.01], feasible=False)]
    assert st.best_trial(records, directions, "size").number == 2
    assert st.best_trial([r.to_dict() for r in records], directions, "size")["number"] == 2  # dicts work too
    same = [rec(4, 10.0, 0.2, [0.985, 0.02]), rec(5, 10.0, 0.2, [0.985, 0.02])]
    assert st.best_trial(same, directions, "size").number == 4  # full tie: the lower number
    assert st.best_trial([records[3]], directions, "size") is None


def test_figures_and_costs_of_a_profile_and_of_its_dict():
    from autocompress.profile import LayerStats, Profile

    profile = Profile(arch_type="cnn", layers=(LayerStats(type="Linear", count=1, params=10, flops=20),), params=10,
                      flops=20, size_mb=0.5, latency_ms={"batch_1": 1.0, "batch_64": 3.0},
                      metric={"name": "accuracy", "value": 0.9}, device="cpu", threads=1)
    assert st.figures(profile) == st.figures(profile.to_dict()) == st.figures(st.figures(profile))
    assert list(st.figures(profile)) == ["params", "flops", "size_mb", "latency_ms", "energy_mj", "metric"]
    values = st.costs(profile, ["latency", "size", "flops", "energy"])
    assert values[:3] == [3.0, 0.5, 20.0] and math.isnan(values[3])  # energy was not measured
    assert st.costs(profile.to_dict(), ["size"]) == [0.5]
    assert set(st.COST_UNITS) == set(st.COSTS)


def test_artifact_store_is_atomic_and_reads_like_optunas(tmp_path):
    import io

    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts.exceptions import ArtifactNotFound

    ours, theirs = st.AtomicArtifactStore(tmp_path), FileSystemArtifactStore(str(tmp_path))
    ours.write("a", io.BytesIO(b"PK-ours"))
    theirs.write("b", io.BytesIO(b"PK-theirs"))
    with theirs.open_reader("a") as fh, ours.open_reader("b") as other:
        assert fh.read() == b"PK-ours" and other.read() == b"PK-theirs"

    class Broken(io.BytesIO):
        def read(self, *args):
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        ours.write("c", Broken())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial or temporary file left
    for bad in ("../escape", "/etc/passwd"):
        with pytest.raises(ValueError, match="invalid artifact id"):
            ours.write(bad, io.BytesIO(b"x"))
    ours.remove("a")
    with pytest.raises(ArtifactNotFound):
        ours.open_reader("a")
    with pytest.raises(ArtifactNotFound):
        ours.remove("a")


def test_a_dead_workers_trial_is_failed_with_its_reason(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/dead.db", study_name="dead")
    alive = study.ask()
    alive.set_user_attr(st.WORKER_ATTR, st.objective.worker())  # this process: still running
    dead = study.ask()
    dead.set_user_attr(st.WORKER_ATTR, {**st.objective.worker(), "pid": gone.pid})
    assert st.fail_dead_trials(study) == [dead.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {alive.number: "RUNNING", dead.number: "FAIL"}
    record = {r.number: r for r in st.trial_records(study)}[dead.number]
    assert f"pid {gone.pid}" in record.error and "stopped before the trial finished" in record.error
    assert st.fail_dead_trials(study) == []  # already failed: nothing more to do


def test_early_abort_rule():
    flat = st.EarlyAbort(target=0.98, higher_is_better=True, max_epochs=10)
    assert [flat(e, v) for e, v in enumerate([0.30, 0.31, 0.31], 1)][:2] == [None, None]
    assert "no improvement" not in (flat.reason or "") and "cannot reach" in flat.reason
    stuck = st.EarlyAbort(target=0.98, higher_is_better=True, max_epochs=10)
    for e, v in enumerate([0.5, 0.4, 0.45], 1):
        verdict = stuck(e, v)
    assert verdict and "no improvement for 2 epochs" in verdict
    fast = st.EarlyAbort(target=0.98, higher_is_better=True, max_epochs=10)
    assert all(fast(e, v) is None for e, v in enumerate([0.5, 0.7, 0.9, 0.97], 1))  # on course: keep going
    close = st.EarlyAbort(target=0.98, higher_is_better=True, max_epochs=10)
    assert all(close(e, v) is None for e, v in enumerate([0.99, 0.99, 0.99], 1))  # reached: never abort


def test_malformed_storage_is_one_line_error(tmp_path):
    # the last two: a SQLite file whose folder cannot be made, a port that is not a number
    for url in ("not-a-url", "foo://nowhere", "journal://", "sqlite:////proc/autocompress/x.db",
                "postgresql://u@h:notaport/db"):
        result = run_cli("study", *REQ, "--trials", "1", "--storage", url, cwd=tmp_path)
        assert result.returncode == 2, (url, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "storage" in lines[0], result.stderr
    result = run_cli("study", "show", "--name", "nope", "--storage", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: no study named 'nope'"), result.stderr


def test_pareto_front_is_feasible_and_non_dominated():
    recs = [{"number": i, "state": "COMPLETE", "feasible": f, "values": v} for i, (f, v) in enumerate([
        (True, [0.99, 0.05]), (True, [0.98, 0.02]), (True, [0.97, 0.03]), (False, [0.99, 0.01]),
        (True, [0.99, 0.06])])]
    front = st.pareto_front(recs, ["maximize", "minimize"])
    assert [r["number"] for r in front] == [0, 1]
    records = [st.TrialRecord.from_dict(r) for r in recs]  # typed records give the same front, as records
    assert [r.number for r in st.pareto_front(records, ["maximize", "minimize"])] == [0, 1]


# ------------------------------------------------------------------------------------------ a real sqlite study
@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory):
    """2 trials, then the same command with --trials 4 (the total): 4 trials."""
    folder = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{folder}/s.db"
    args = ["study", *REQ, "--name", "s", "--storage", storage, "--neighbours", "1"]
    first = run_cli(*args, "--trials", "2", cwd=folder)
    assert first.returncode == 0, first.stderr
    before = _show(storage, "s", folder)
    second = run_cli(*args, "--trials", "4", cwd=folder)
    assert second.returncode == 0, second.stderr
    return {"folder": folder, "storage": storage, "before": before, "after": _show(storage, "s", folder),
            "stdout": first.stdout + second.stdout}


def test_trial0_is_the_selector_plan(sqlite_study):
    data = sqlite_study["after"]
    trial0 = data["trials"][0]
    assert trial0["seeded"] is True
    plan = run_cli("plan", *REQ, "--json", cwd=sqlite_study["folder"])
    assert plan.returncode == 0, plan.stderr
    selector = Plan.load(json.loads(plan.stdout)["plan"])
    space = st.SearchSpace.from_dict(optuna.load_study(study_name="s", storage=sqlite_study["storage"])
                                     .user_attrs[st.ATTR]["space"])
    # the selector's plan as the trials run it (hard distillation is searched as fine-tuning)
    assert st.plan_from_trial(optuna.trial.FixedTrial(trial0["params"]), space) == st.canonical_plan(selector)
    assert Plan.load(trial0["plan"]) == st.canonical_plan(selector)
    assert trial0["params"] == st.trial_params_from_plan(selector, space)


def test_resume_counts_the_total_and_keeps_earlier_trials(sqlite_study):
    before, after = sqlite_study["before"], sqlite_study["after"]
    assert len(before["trials"]) == 2 and len(after["trials"]) == 4
    assert [t["number"] for t in after["trials"]] == [0, 1, 2, 3]
    for old, new in zip(before["trials"], after["trials"][:2]):
        assert {k: old[k] for k in ("params", "values", "state", "metric_drop", "artifact_id")} == \
               {k: new[k] for k in ("params", "values", "state", "metric_drop", "artifact_id")}
    assert before["original"] == after["original"]  # measured once, reused on resume
    # the same command once more runs nothing
    again = run_cli("study", *REQ, "--name", "s", "--storage", sqlite_study["storage"], "--trials", "4",
                    cwd=sqlite_study["folder"])
    assert again.returncode == 0 and "nothing to run" in again.stderr, again.stderr
    assert len(_show(sqlite_study["storage"], "s", sqlite_study["folder"])["trials"]) == 4


def test_show_json_and_artifacts(sqlite_study):
    data = sqlite_study["after"]
    assert data["objectives"]["costs"] == ["size"] and data["objectives"]["directions"] == ["maximize", "minimize"]
    assert data["original"]["metric"]["value"] > 0.95 and data["original"]["size_mb"] > 0
    completed = [t for t in data["trials"] if t["state"] == "COMPLETE"]
    assert completed
    store = optuna.artifacts.FileSystemArtifactStore(data["artifacts"])
    assert data["artifacts"].endswith("s.db.artifacts")
    for t in completed:
        assert {"number", "state", "params", "values", "feasible", "metric_drop", "reduction", "plan"} <= set(t)
        assert t["feasible"] == (t["metric_drop"] <= 1.0)
        assert math.isclose(t["values"][1], t["metrics"]["size_mb"])
        assert math.isclose(t["values"][0], t["metrics"]["metric"]["value"])
        with store.open_reader(t["artifact_id"]) as fh:
            assert fh.read(2) == b"PK"  # the .acz zip archive
    assert re.search(r"Pareto front: \d+ feasible trials? that no other beats on every objective, of \d+ finished",
                     sqlite_study["stdout"]), sqlite_study["stdout"]
    assert "autocompress study show --name" in sqlite_study["stdout"]


def test_pareto_json_matches_recomputation(sqlite_study):
    result = run_cli("study", "pareto", "--name", "s", "--storage", sqlite_study["storage"], "--json",
                     cwd=sqlite_study["folder"])
    assert result.returncode == 0, result.stderr
    front = {t["number"] for t in json.loads(result.stdout)["front"]}
    trials = [t for t in sqlite_study["after"]["trials"] if t["state"] == "COMPLETE" and t["metric_drop"] <= 1.0]
    expected = {a["number"] for a in trials if not any(
        b["values"][0] >= a["values"][0] and b["values"][1] <= a["values"][1] and b["values"] != a["values"]
        for b in trials)}
    assert front == expected and front  # digits at 30x/1 point: the seed or a neighbour holds the threshold
    optuna_front = {t.number for t in optuna.load_study(study_name="s", storage=sqlite_study["storage"]).best_trials}
    assert front == optuna_front


def test_export_best_reloads_and_matches_the_trial(sqlite_study, tmp_path):
    import autocompress
    from autocompress.task import load_task

    result = run_cli("export", "--name", "s", "--storage", sqlite_study["storage"], "--best", "--format",
                     "torchscript", "--out", str(tmp_path / "best.ts"), "--json", cwd=sqlite_study["folder"])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["check"] == "max_abs_diff" or info["value"] >= 0.99
    model = autocompress.load(tmp_path / "best.ts")
    task = load_task("digits")
    correct = total = 0
    with torch.inference_mode():
        for x, y in task.eval_loader():
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    assert abs(100 * correct / total - 100 * info["metrics"]["metric"]["value"]) <= 0.2
    # The archive rebuilds the real module; its measured size is the trial's stored size (within 2 %).
    archive = run_cli("export", "--name", "s", "--storage", sqlite_study["storage"], "--best", "--format",
                      "autocompress", "--out", str(tmp_path / "best.acz"), cwd=sqlite_study["folder"])
    assert archive.returncode == 0, archive.stderr
    from autocompress.profile import serialized_size_mb

    rebuilt = autocompress.load(tmp_path / "best.acz", task.model)
    assert abs(serialized_size_mb(rebuilt) / info["metrics"]["size_mb"] - 1) <= 0.02
    front = json.loads(run_cli("study", "pareto", "--name", "s", "--storage", sqlite_study["storage"], "--json",
                               cwd=sqlite_study["folder"]).stdout)["front"]
    assert info["trial"] == max(front, key=lambda r: r["reduction"]["size"])["number"]
    missing = run_cli("export", "--name", "s", "--storage", sqlite_study["storage"], "--trial", "99", "--out",
                      str(tmp_path / "x.acz"), cwd=sqlite_study["folder"])
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no trial 99" in missing.stderr


# ------------------------------------------------------------------------------------------ journal, failure, abort
ABSURD = {"quantization.mode": "none", "pruning.ratio": 0.95, "pruning.technique": "lamp", "pruning.strategy": "global",
          "pruning.steps": 1, "distillation.technique": "finetune", "distillation.lr": 1e-4}
# BN-scale scores conv channels by their BatchNorm; digits' linear layers have none, so pruning raises.
RAISING = {**ABSURD, "pruning.ratio": 0.5, "pruning.technique": "bn_scale", "pruning.strategy": "linear"}


def test_journal_study_failure_and_early_abort(tmp_path, monkeypatch):
    from autocompress.requirements import Requirements

    monkeypatch.chdir(tmp_path)
    storage = f"journal:///{tmp_path}/j.log"
    requirements = Requirements(objective="size", max_drop=1, target=30, budget="low")
    lines = []
    study = st.run_study("digits", requirements, ["size"], 3, name="j", storage=storage, n_neighbours=0,
                         enqueue=[RAISING, ABSURD], on_trial=lambda s, t: lines.append(t.number))
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and lines == [0, 1, 2]
    seed, failed, absurd = trials
    assert failed.state.name == "FAIL" and "removed no parameters" in failed.user_attrs["error"]
    assert absurd.state.name == "COMPLETE", absurd.user_attrs.get("error")
    assert st.is_feasible(absurd) is False  # infeasible, not an error
    assert "early abort" in absurd.user_attrs["aborted"]
    distilled = absurd.user_attrs["distillation"]
    # stopped before the budget's 5 epochs: less training than a full trial
    assert distilled["stopped_because"] == "callback" and distilled["epochs_run"] < 5
    # ... strictly fewer epochs than the full seed trial (which patience 3 cannot stop before epoch 4), so less
    # time on the same data; wall times themselves are too noisy on a shared machine to assert (the timing is
    # in the trials' `timing` attribute and studies/results/study_acceptance.md)
    assert seed.state.name == "COMPLETE" and seed.user_attrs["distillation"]["epochs_run"] > distilled["epochs_run"]
    # the journal file is the storage: a fresh process sees the same study
    data = _show(storage, "j", tmp_path)
    assert [t["state"] for t in data["trials"]] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert data["trials"][1]["error"] and data["trials"][2]["aborted"]
    assert (tmp_path / "j.log.artifacts").is_dir()


# ------------------------------------------------------------------------------------------ two workers
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_workers_on_one_storage_share_the_study(kind, tmp_path, request):
    """Two processes run the same command on one journal file, or one real PostgreSQL server started by the
    test session on 127.0.0.1: no duplicate or lost trials, every completed trial has its stored model."""
    import os
    import subprocess
    import sys

    storage = f"journal:///{tmp_path}/shared.log" if kind == "journal" else request.getfixturevalue("postgres_url")
    name = f"w-{kind}"
    command = [sys.executable, "-m", "autocompress", "study", *REQ, "--name", name, "--storage", storage,
               "--trials", "4", "--neighbours", "0"]
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=os.environ.copy()) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=900)
        assert worker.returncode == 0, stderr.decode()[-2000:]
    data = _show(storage, name, tmp_path)
    numbers = [t["number"] for t in data["trials"]]
    assert sorted(numbers) == list(range(len(numbers)))  # no duplicate, no gap
    finished = [t for t in data["trials"] if t["state"] in ("COMPLETE", "FAIL")]
    assert 4 <= len(finished) <= 5  # the total asked for; at most one more trial already in flight
    assert len(finished) == len(data["trials"])  # none lost in RUNNING
    store = optuna.artifacts.FileSystemArtifactStore(data["artifacts"])
    for t in data["trials"]:
        if t["state"] == "COMPLETE":
            with store.open_reader(t["artifact_id"]) as fh:
                assert fh.read(2) == b"PK"
    # The study was seeded once: one trial 0, the selector's plan.
    assert sum(bool(t["seeded"]) for t in data["trials"]) == 1 and data["trials"][0]["seeded"]


def test_storage_passwords_are_masked():
    assert st.mask_url("postgresql://ac:s3cret@db.example:5432/studies") == "postgresql://ac:***@db.example:5432/studies"
    assert st.mask_url("postgresql://ac@db.example/studies") == "postgresql://ac@db.example/studies"
    assert st.mask_url("sqlite:///studies/autocompress.db") == "sqlite:///studies/autocompress.db"
    # an unreachable server: the one-line error names the URL without its password
    result = run_cli("study", "show", "--name", "x", "--storage", "postgresql://ac:s3cret@127.0.0.1:9/none")
    assert result.returncode == 2 and "s3cret" not in result.stderr and "ac:***@127.0.0.1" in result.stderr


# ------------------------------------------------------------------------- issue 14: where the answers are
def _cnn_profile():
    from autocompress.profile import LayerStats, Profile

    layers = (LayerStats(type="Conv2d", count=3, params=90, flops=900), LayerStats(type="BatchNorm2d", count=3,
              params=6, flops=6), LayerStats(type="Linear", count=2, params=60, flops=60))
    return Profile(arch_type="cnn", layers=layers, params=156, flops=966, size_mb=1.0,
                   latency_ms={"batch_1": 1, "batch_64": 2}, metric={"name": "accuracy", "value": 0.9},
                   device="cpu", threads=1)


def test_kept_fraction_is_searched_around_the_seed_and_covers_the_hand_recipe():
    assert st.keep_range_around(0.88) == (0.05, 0.5)  # 12% kept: a third of it is below the 5% floor
    low, high = st.keep_range_around(0.5)
    assert low <= 0.1 and high == 1.0  # the hand recipe's 50-90% region is inside, whatever the seed
    space = _space(keep_range=st.keep_range_around(0.7))
    params = {"quantization.mode": "static", "pruning.keep": 0.25, "pruning.technique": "magnitude",
              "pruning.strategy": "conv", "pruning.steps": 1, "pruning.round_to": 0,
              "distillation.technique": "finetune", "distillation.lr": 1e-3}
    plan = st.plan_from_trial(optuna.trial.FixedTrial(params), space)
    assert plan.pruning.ratio == 0.75
    assert st.trial_params_from_plan(plan, space) == params
    assert st.SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(st.StudyError, match="kept fraction 1.0000 outside"):
        st.trial_params_from_plan(plan.replace(pruning=plan.pruning.replace(ratio=0.0)), _space(keep_range=(0.05, 0.5)))


def test_quantization_that_cannot_help_is_not_proposed():
    from autocompress.requirements import Requirements

    modes, notes = st.proposable_quantization(_cnn_profile(), ("none", "dynamic", "static", "qat"), ("size",))
    assert modes == ("none", "static", "qat") and "dynamic not proposed" in notes[0]
    modes, _ = st.proposable_quantization(_cnn_profile(), ("none", "dynamic", "static", "qat"), ("latency", "flops"))
    assert "dynamic" not in modes and "none" in modes
    space = st.SearchSpace.for_model(_cnn_profile(), Requirements(budget="low"), objectives=("size",),
                                     seed_mode="dynamic")
    assert "dynamic" in space.quantization  # the seed's own mode stays: the study runs it first
    space = st.SearchSpace.for_model(_cnn_profile(), Requirements(budget="low"), objectives=("size",))
    assert "dynamic" not in space.quantization and space.notes


def test_uniform_dial_and_hand_recipe_neighbour():
    from autocompress.pruning import Sensitivity
    from autocompress.requirements import Requirements

    scan = Sensitivity(scores={"a": 0.5, "b": 0.05}, params={"a": 100, "b": 100}, baseline_loss=0.1, ratio=0.5)
    space = st.SearchSpace.for_model(_cnn_profile(), Requirements(budget="high"), seed_ratio=0.8,
                                     sensitivity=scan.to_dict(), objectives=("size",))
    assert "uniform" in space.strategies and space.sensitivity is not None
    params = {"quantization.mode": "static", "pruning.keep": 0.2, "pruning.technique": "magnitude",
              "pruning.strategy": "uniform", "pruning.sensitivity_weight": 1.0, "pruning.steps": 1,
              "pruning.round_to": 0, "distillation.technique": "finetune", "distillation.lr": 1e-3}
    plan = st.plan_from_trial(optuna.trial.FixedTrial(params), space)
    ratios = dict(plan.pruning.layer_ratios)
    assert ratios["a"] < 0.8 < ratios["b"]  # the layer that hurts more when pruned keeps more channels
    assert st.trial_params_from_plan(plan, space) == params
    uniform = st.plan_from_trial(optuna.trial.FixedTrial({**params, "pruning.sensitivity_weight": 0.0}), space)
    assert uniform.pruning.layer_ratios is None and uniform.pruning.ratio == 0.8
    seed = uniform.replace(pruning=uniform.pruning.replace(strategy="global", technique="lamp"))
    hand = st.neighbours(seed, space)[1]  # after the milder neighbour
    assert (hand.pruning.strategy, hand.pruning.ratio, hand.quantization_mode) == ("uniform", 0.8, "static")
    assert hand.distillation.technique.name == "combined"
    assert any(n.pruning.layer_ratios for n in st.neighbours(seed, space))


def test_int8_is_not_proposed_for_macs_alone_and_the_edge_design_starts_at_the_estimate():
    from autocompress.pruning import Sensitivity
    from autocompress.requirements import Requirements

    modes, notes = st.proposable_quantization(_cnn_profile(), ("none", "dynamic", "static", "qat"), ("flops",))
    assert modes == ("none",) and len(notes) == 3 and "gain nothing for flops" in notes[0]
    scan = Sensitivity(scores={"a": 0.5, "b": 0.05}, params={"a": 100, "b": 100}, baseline_loss=0.1, ratio=0.5)
    space = st.SearchSpace.for_model(_cnn_profile(), Requirements(budget="high"), seed_ratio=0.3,
                                     sensitivity=scan.to_dict(), objectives=("size",))
    seed = st.plan_from_trial(optuna.trial.FixedTrial({
        "quantization.mode": "qat", "pruning.keep": 0.7, "pruning.technique": "lamp", "pruning.strategy": "conv",
        "pruning.steps": 1, "pruning.round_to": 0, "distillation.technique": "finetune",
        "distillation.lr": 1e-3}), space)
    design = st.edge_design(seed, space, (0.7, 0.95), 4)  # 95% is capped at the space's smallest kept fraction
    assert [(p.pruning.ratio, p.pruning.sensitivity_weight) for p in design] == [(0.825, 0.0), (0.9, 0.0),
                                                                                  (0.825, 0.5), (0.9, 0.5)]
    assert len(st.edge_design(seed, space, (0.7, 0.95), 2)) == 2
    assert all(p.pruning.strategy == "uniform" and p.quantization_mode == "static" for p in design)
    for plan in design:
        assert st.plan_from_trial(optuna.trial.FixedTrial(st.trial_params_from_plan(plan, space)), space) == plan
