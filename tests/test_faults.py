"""Faults and safety: failing trials, kill -9 and resume, determinism, safe loading, paths, no task code in
the dashboard, unprunable layers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from autocompress import study as acs
from autocompress.requirements import Requirements

from .conftest import FIXTURES, run_cli

REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low"]
LOW = Requirements(objective="size", max_drop=1, target=30, budget="low")
PLAIN = {"quantization.mode": "none", "pruning.ratio": 0.3, "pruning.technique": "magnitude",
         "pruning.strategy": "global", "pruning.steps": 1, "distillation.technique": "finetune",
         "distillation.lr": 1e-3}


def _show(storage: str, name: str, cwd: Path) -> dict:
    result = run_cli("study", "show", "--name", name, "--storage", storage, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------ trial isolation
def test_a_model_that_raises_on_some_inputs_fails_its_trials_not_the_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = acs.run_study(str(FIXTURES / "picky_task.py"), LOW, ["size"], 2, name="p",
                          storage=f"sqlite:///{tmp_path}/p.db", n_neighbours=0, enqueue=[PLAIN])
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "FAIL" for t in trials)
    assert "this model rejects inputs holding 42" in trials[1].user_attrs["error"]
    assert all(t.user_attrs.get("error") for t in trials)  # each failure says why


def test_on_onnxruntime_a_model_onnx_cannot_export_fails_each_trial_naming_the_operator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    requirements = LOW.replace(backend="onnxruntime", max_drop=50)
    study = acs.run_study(str(FIXTURES / "unexportable_task.py"), requirements, ["size"], 2, name="u",
                          storage=f"sqlite:///{tmp_path}/u.db", n_neighbours=0, enqueue=[PLAIN])
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "FAIL" for t in trials)
    for trial in trials:
        error = trial.user_attrs["error"]
        assert "a model ONNX cannot export" in error and "slogdet" in error and "\n" not in error


def test_a_diverging_learning_rate_fails_the_trial_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    diverging = {**PLAIN, "distillation.lr": 1e30}  # far outside the search range, enqueued on purpose: NaN loss
    study = acs.run_study("digits", LOW, ["size"], 3, name="d", storage=f"sqlite:///{tmp_path}/d.db",
                          n_neighbours=0, enqueue=[diverging, PLAIN])
    seed, diverged, plain = study.get_trials()
    assert diverged.state.name == "FAIL" and "training diverged" in diverged.user_attrs["error"]
    assert seed.state.name == "COMPLETE" and plain.state.name == "COMPLETE"


# ------------------------------------------------------------------------------------------ kill and resume
def test_kill_9_then_resume(tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    command = [sys.executable, "-m", "autocompress", "study", *REQ, "--name", "k", "--storage", storage,
               "--trials", "6", "--neighbours", "0"]
    worker = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=os.environ.copy())
    deadline = time.time() + 600
    while True:  # wait for 2 completed trials and a third one running, then kill mid-trial
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the study did not get going"
        try:
            trials = optuna.load_study(study_name="k", storage=storage).get_trials(deepcopy=False)
        except (KeyError, Exception):
            trials = []
        states = [t.state.name for t in trials]
        if states.count("COMPLETE") >= 2 and "RUNNING" in states:
            break
        time.sleep(0.1)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    before = _show(storage, "k", tmp_path)
    running = [t["number"] for t in before["trials"] if t["state"] == "RUNNING"]
    completed = [t for t in before["trials"] if t["state"] == "COMPLETE"]
    assert running and len(completed) >= 2

    again = run_cli("study", *REQ, "--name", "k", "--storage", storage, "--trials", "6", "--neighbours", "0",
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = _show(storage, "k", tmp_path)
    by_number = {t["number"]: t for t in after["trials"]}
    for old in completed:  # intact: values, params and artifacts
        new = by_number[old["number"]]
        assert {k: new[k] for k in ("state", "values", "params", "artifact_id")} == \
               {k: old[k] for k in ("state", "values", "params", "artifact_id")}
    for number in running:  # the interrupted trial is failed with its reason, not left running forever
        assert by_number[number]["state"] == "FAIL"
        assert "stopped before the trial finished" in by_number[number]["error"]
    finished = [t for t in after["trials"] if t["state"] in ("COMPLETE", "FAIL")]
    assert len(finished) == 6 and len(finished) == len(after["trials"])
    store = optuna.artifacts.FileSystemArtifactStore(after["artifacts"])
    ids = {t["artifact_id"] for t in after["trials"] if t["state"] == "COMPLETE"}
    for artifact_id in ids:
        with store.open_reader(artifact_id) as fh:
            assert fh.read(2) == b"PK"
    leftovers = [p.name for p in Path(after["artifacts"]).iterdir() if p.name not in ids]
    # No partial or temporary files: only the seeding lock and the folder where workers register.
    assert all(name.endswith(".lock") or name == ".workers" for name in leftovers), leftovers


# ------------------------------------------------------------------------------------------ determinism
def test_the_same_seed_gives_the_same_trial_parameters(tmp_path):
    runs = []
    for i in range(2):
        storage = f"sqlite:///{tmp_path}/s{i}.db"
        result = run_cli("study", *REQ, "--name", "s", "--storage", storage, "--trials", "5", "--seed", "7",
                         "--neighbours", "1", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        runs.append([t["params"] for t in _show(storage, "s", tmp_path)["trials"]])
    assert len(runs[0]) == 5 and runs[0] == runs[1]


# ------------------------------------------------------------------------------------------ safe loading
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_files_are_never_unpickled_without_permission(tmp_path):
    from autocompress.task import load_task

    marker = tmp_path / "pwned"
    torch.save({"weight": _Evil(marker)}, tmp_path / "evil.pt")
    refused = run_cli("profile", "--task", "digits", "--model", str(tmp_path / "evil.pt"), cwd=tmp_path)
    assert refused.returncode == 2 and "--allow-pickle" in refused.stderr and refused.stderr.count("\n") == 1
    assert not marker.exists()  # weights_only=True refused it before any code ran

    model = load_task("digits").model
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    weights = run_cli("profile", "--task", "digits", "--model", str(tmp_path / "weights.pt"), "--json",
                      cwd=tmp_path)
    assert weights.returncode == 0, weights.stderr
    assert json.loads(weights.stdout)["params"] == 160_074

    torch.save(model, tmp_path / "module.pt")  # a whole pickled module: only with --allow-pickle
    plain = run_cli("profile", "--task", "digits", "--model", str(tmp_path / "module.pt"), cwd=tmp_path)
    assert plain.returncode == 2 and "pickled Python objects" in plain.stderr
    allowed = run_cli("profile", "--task", "digits", "--model", str(tmp_path / "module.pt"), "--allow-pickle",
                      "--json", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["metric"]["value"] > 0.95


def test_names_cannot_lead_paths_out_of_their_folders(tmp_path, monkeypatch):
    from autocompress._io import safe_component

    monkeypatch.chdir(tmp_path)
    folder = acs.artifact_dir("postgresql://u@h/db", "../../../etc/evil")
    assert folder.parent == (tmp_path / "studies" / "artifacts").absolute()
    assert safe_component("..") == "unnamed" and "/" not in safe_component("a/../../b")


# ------------------------------------------------------------------------------------------ the dashboard runs no task code
def test_the_dashboard_never_imports_the_task(tmp_path, monkeypatch):
    from dashboard import data

    monkeypatch.chdir(tmp_path)
    task_file = tmp_path / "my_task.py"
    task_file.write_text((FIXTURES / "user_lenet_task.py").read_text())
    storage = f"sqlite:///{tmp_path}/u.db"
    acs.run_study(str(task_file), LOW, ["size"], 1, name="u", storage=storage, n_neighbours=0)
    marker = tmp_path / "task-code-ran"
    task_file.write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit('task code ran')\n")
    study = data.load(storage, "u")
    assert data.trials_frame(study)["state"].tolist() == ["COMPLETE"]
    path, figures = data.export(storage, "u", 0, "torchscript", tmp_path)
    int8 = study["trials"][0]["params"]["quantization.mode"] != "none"  # int8 models are checked by top-1
    assert path.is_file() and figures["check"] == ("top1_agreement" if int8 else "max_abs_diff")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ unprunable layers
class _HalfSum(torch.nn.Module):
    """Adds the first and second half of the channels: fixed slices the dependency graph cannot follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :8] + x[:, 8:]


def test_layers_the_graph_cannot_prune_are_left_with_a_warning():
    from autocompress.pruning import PruningConfig, PruningWarning, prune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), _HalfSum(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 4)).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.warns(PruningWarning, match=r"left unpruned \(pruning them breaks the model.*: 0 \(Conv2d\)$"):
        result = prune(model, x, PruningConfig(technique="magnitude", strategy="conv", ratio=0.5), progress=False)
    assert result.model(x).shape == (2, 4)
    assert result.model[0].out_channels == 16  # kept whole
    assert result.model[3].out_channels == 4  # the layer that can be pruned was
    assert result.params_after < result.params_before
