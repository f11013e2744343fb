"""Bad input at the command line: one `error: <received>; <expected>; <fix>` line, exit 2, no traceback, and no
file written or changed. One case per kind of mistake a user makes (issue 8's list, in its order)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import run_cli

# A valid task file, and variants of it that break one rule each.
TASK = """\
import torch
from torch import nn
from torch.utils.data import TensorDataset

import autocompress


def task():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = {model}
    return autocompress.Task(name="t", model=model, train_data=TensorDataset(x[:20], y[:20]),
                             eval_data={eval_data}, example_input={example}, metric={metric!r})
"""
VALID = dict(model="nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))",
             eval_data="TensorDataset(x[20:], y[20:])", example="x[:1]", metric="accuracy")


def _task_file(folder: Path, name: str, **change: str) -> str:
    path = folder / f"{name}.py"
    path.write_text(TASK.format(**{**VALID, **change}))
    return str(path)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


def _check(result, *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].count("; ") >= 2 or "--help" in lines[0], lines[0]  # received; expected; fix
    for text in expected:
        assert text in lines[0], (text, lines[0])


COMPRESS = ["compress", "--objective", "size", "--max-drop", "1", "--target", "2", "--budget", "low"]


def _cases(folder: Path, study: dict[str, str]) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(case, argv, expected fragments) for each bad input."""
    f = folder
    raising = f / "raising.py"
    raising.write_text("raise RuntimeError('boom at import')\n")
    wrong = f / "wrong.py"
    wrong.write_text("def task():\n    return 42\n")
    (f / "a_file").write_text("I am a file\n")
    s, st = study["name"], study["storage"]
    return [
        ("1 missing task path", [*COMPRESS, "--task", str(f / "nope.py"), "--out", "o"], ("nope.py",)),
        ("2 task file raises on import", [*COMPRESS, "--task", str(raising), "--out", "o"], ("boom at import",)),
        ("3 task() returns the wrong type", [*COMPRESS, "--task", str(wrong), "--out", "o"],
         ("returned int", "autocompress.Task")),
        ("4 model is not an nn.Module", [*COMPRESS, "--task", _task_file(f, "notmod", model="{'w': 1}"),
                                         "--out", "o"], ("Task.model is a dict",)),
        ("5 empty eval set", [*COMPRESS, "--task", _task_file(f, "empty", eval_data="TensorDataset(x[:0], y[:0])"),
                              "--out", "o"], ("evaluation set is empty",)),
        ("6 example_input the model rejects", [*COMPRESS, "--task", _task_file(f, "shape", example="x[:1, :3]"),
                                               "--out", "o"], ("example_input",)),
        ("7 labels outside the output range",
         [*COMPRESS, "--task", _task_file(f, "labels", eval_data="TensorDataset(x[20:], y[20:] + 5)"),
          "--out", "o"], ("labels range over",)),
        ("8 unknown metric", [*COMPRESS, "--task", _task_file(f, "metric", metric="top5"), "--out", "o"],
         ("unknown metric 'top5'",)),
        ("9 unknown objective", ["plan", "--task", "digits", "--objective", "speed"], ("speed",)),
        ("10a negative max drop", ["plan", "--task", "digits", "--max-drop", "-1"], ("-1",)),
        ("10b max drop of 100", ["plan", "--task", "digits", "--max-drop", "100"], ("100",)),
        ("11a target below 1x", ["plan", "--task", "digits", "--target", "0.5"], ("0.5",)),
        ("11b malformed target", ["plan", "--task", "digits", "--target", "ten"], ("ten",)),
        ("12 malformed storage URL", ["study", "show", "--name", s, "--storage", "postgres//nohost"],
         ("postgres//nohost",)),
        ("13a unknown study (show)", ["study", "show", "--name", "nope", "--storage", st], ("no study named 'nope'",)),
        ("13b unknown study (export)", ["export", "--name", "nope", "--storage", st, "--trial", "0", "--out",
                                        "x.ts"], ("no study named 'nope'",)),
        ("13c unknown study (dashboard)", ["dashboard", "--name", "nope", "--storage", st],
         ("no study named 'nope'",)),
        ("14a missing trial", ["export", "--name", s, "--storage", st, "--trial", "99", "--out", "x.ts"],
         ("no trial 99",)),
        ("14b failed trial", ["export", "--name", s, "--storage", st, "--trial", str(study["failed"]), "--out",
                              "x.ts"], (f"trial {study['failed']}", "has no model")),
        ("15 format that cannot hold the model", ["export", "--name", s, "--storage", st, "--trial",
                                                  str(study["int8"]), "--format", "pt2", "--out", "x.pt2"],
         ("pt2", "torchscript")),
        ("17 gpu backend without a GPU", [*COMPRESS, "--task", "digits", "--backend", "gpu", "--out", "o"],
         ("gpu",)),
        ("18a output path is a file", [*COMPRESS, "--task", "digits", "--out", str(f / "a_file")],
         ("exists and is not a directory",)),
        ("18b output path not writable", [*COMPRESS, "--task", "digits", "--out", "/proc/autocompress-out"],
         ("not writable",)),
        ("18c export over an existing file", ["export", "--name", s, "--storage", st, "--trial",
                                              str(study["int8"]), "--out", str(f / "a_file")],
         ("already exists",)),
    ]


@pytest.fixture(scope="module")
def bad_study(tmp_path_factory):
    """A tiny study with one int8 trial and one failed trial (a plan that prunes nothing)."""
    from autocompress import study as acs
    from autocompress.requirements import Requirements

    folder = tmp_path_factory.mktemp("bad")
    storage = f"sqlite:///{folder}/b.db"
    raising = {"quantization.mode": "none", "pruning.ratio": 0.5, "pruning.technique": "bn_scale",
               "pruning.strategy": "linear", "pruning.steps": 1, "distillation.technique": "finetune",
               "distillation.lr": 1e-3}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        study = acs.run_study("digits", Requirements(objective="size", max_drop=1, target=30, budget="low"),
                              ["size"], 2, name="b", storage=storage, n_neighbours=0, enqueue=[raising])
    finally:
        os.chdir(cwd)
    trials = study.get_trials()
    assert trials[0].state.name == "COMPLETE" and trials[0].params["quantization.mode"] != "none"  # int8: no pt2
    assert trials[1].state.name == "FAIL"
    return {"name": "b", "storage": storage, "int8": 0, "failed": 1}


def test_each_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, bad_study):
    work = tmp_path / "work"
    work.mkdir()
    cases = _cases(work, bad_study)
    db = Path(bad_study["storage"].removeprefix("sqlite:///"))
    for case, argv, expected in cases:
        before, db_before = _snapshot(work), db.stat().st_mtime_ns
        result = run_cli(*argv, cwd=work)
        try:
            _check(result, *expected)
        except AssertionError as exc:
            raise AssertionError(f"case {case}: {exc}") from None
        assert _snapshot(work) == before, f"case {case} wrote or changed files"
        assert db.stat().st_mtime_ns == db_before, f"case {case} changed the study storage"
    assert len(cases) == 24


def test_debug_shows_a_traceback_for_the_same_mistake(tmp_path):
    result = run_cli("plan", "--task", str(tmp_path / "nope.py"), "--debug", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_corrupt_or_truncated_model_files_are_one_line_errors(tmp_path):
    import torch

    import autocompress
    from autocompress.errors import ExportError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    good = autocompress.export_model(model, "torchscript", tmp_path / "m.ts", torch.rand(1, 4)).path
    data = good.read_bytes()
    (tmp_path / "truncated.ts").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01not a model")
    for name in ("truncated.ts", "garbage.onnx"):
        with pytest.raises(ExportError) as info:
            autocompress.load(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message and "could not be loaded" in message


def test_help_mentions_the_pickle_risk():
    result = run_cli("compress", "--help")
    assert "--allow-pickle" in result.stdout and "only for a file you made or trust" in " ".join(result.stdout.split())


def test_the_template_is_a_valid_task(tmp_path):
    """The template every task case starts from passes validation, so each case breaks one rule only."""
    from autocompress.task import load_task

    assert load_task(_task_file(tmp_path, "valid")).name == "t"
