"""The benchmark runner: definition checks, the dominance rule, and a tiny real benchmark end to end."""

from __future__ import annotations

import csv
import io
import re

import pytest

from autocompress import bench

from .conftest import run_cli

TINY = """\
name: tiny
tasks: [digits]
budget: low
seed: 0
preservation: {thresholds: [5], trials: 2, target: 10}
targets: {trials: 1, size: [4]}
baselines: {trials: 2, targets: {size: 4, latency: 2}}
"""


def test_definition_errors_are_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ntasks: [digits]\npreservaton: {}\n")
    result = run_cli("bench", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "unknown keys ['preservaton']" in result.stderr
    missing = run_cli("bench", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "no benchmark file at" in missing.stderr
    (tmp_path / "zero.yaml").write_text("tasks: [digits]\ntargets: {trials: 0, size: [2]}\n")
    with pytest.raises(bench.BenchError, match="targets.trials 0"):
        bench.load_definition(tmp_path / "zero.yaml")
    assert not (tmp_path / "out").exists()


def _trial(number: int, metric: float, size: float):
    from autocompress.study import TrialRecord

    return TrialRecord(number=number, state="COMPLETE", feasible=True, metrics={"metric": {"value": metric}},
                       reduction={"size": size})


def test_front_dominates():
    front = [_trial(0, 0.99, 40.0), _trial(1, 0.995, 20.0)]
    row = bench.Row(table="baselines", task="t", method="m", metric=0.99, size=30.0)
    assert bench.front_dominates(front, row, "size", True)
    row.size = 45.0
    assert not bench.front_dominates(front, row, "size", True)
    row.size, row.metric = 20.0, 0.995  # equal to a front point: not dominated
    assert not bench.front_dominates(front, row, "size", True)


def test_tiny_benchmark_writes_its_tables(tmp_path):
    definition = tmp_path / "tiny.yaml"
    definition.write_text(TINY)
    result = run_cli("bench", str(definition), "--out", str(tmp_path / "results"), timeout=900)
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "results" / "tiny.md").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results" / "tiny.csv").read_text())))
    assert [r["table"] for r in rows].count("preservation") == 1
    assert [r["table"] for r in rows].count("targets") == 1
    methods = [r["method"] for r in rows if r["table"] == "baselines" and r["objective"] == "size"]
    assert methods == ["Torch-Pruning recipe (magnitude/global + fine-tune)", "dynamic int8 alone",
                       "static int8 alone",
                       bench.HAND_RECIPE,
                       "rule plan alone (trial 0)", "full study"]
    # The latency table times the study's best against the best other baseline in one window as well.
    timed = next(r for r in rows if r["method"] == "full study" and r["objective"] == "latency")
    assert float(timed["latency_vs_best"]) > 0 and int(timed["latency_vs_best_rounds"]) >= 3
    assert re.search(r"Timed side by side in one window \(batch 64, \d+ interleaved rounds, median\): \*\*\d", md)
    study = next(r for r in rows if r["method"] == "full study")
    seed = next(r for r in rows if r["method"] == "rule plan alone (trial 0)")
    assert study["dominated"] == ""  # the study is not compared with itself
    if seed["feasible"] == "True":  # the full study includes trial 0, so it is at least as good
        assert float(study["size"]) >= float(seed["size"])
    static = next(r for r in rows if r["method"] == "static int8 alone")
    assert 3.0 < float(static["size"]) < 4.2 and float(static["flops"]) == pytest.approx(1.0, abs=0.02)
    for heading in ("## 1. Performance preservation", "## 2. Targets", "## 3. Side by side",
                    "## Where a trial's time goes", "Versions: python"):
        assert heading in md
    epochs = re.search(r"Epochs trained \(.*\): digits: size study of (\d+) trials (\d+)[.;]", md)
    assert epochs and int(epochs.group(2)) >= 1  # every trial trains at least one epoch (budget low: at most 5)
    assert int(epochs.group(2)) <= 5 * int(epochs.group(1))


def test_a_baseline_without_a_result_is_not_run_not_dominated():
    """Bug 10: a baseline row with no result (its run failed, or trial 0 failed) was counted as dominated."""
    from pathlib import Path

    missing = bench.Row(table="baselines", task="t", method="static int8 alone")  # no metric, no reduction
    assert bench.front_dominates([], missing, "size", True) is None
    ran = bench.Row(table="baselines", task="t", method="dynamic int8 alone", metric=0.98, size=4.0, drop=0.5,
                    feasible=True)
    ran.dominated = bench.front_dominates([], ran, "size", True)
    assert ran.dominated is False  # an empty front dominates nothing
    study = bench.Row(table="baselines", task="t", method="full study")
    for row in (missing, ran, study):
        row.objective, row.threshold, row.target = "size", 1.0, 4.0
    missing.dominated = bench.front_dominates([], missing, "size", True)
    definition = bench.BenchDefinition(name="t", tasks=("digits",), baselines={"trials": 1})
    machine = {"platform": "p", "cpus": 1, "torch_threads": 1, "versions": {"python": "3"}}
    result = bench.BenchResult(definition, [ran, missing, study], machine, {"total": 1.0}, {})
    lines = {line.split(" | ")[0]: line for line in bench.markdown(result, Path("t.yaml")).splitlines()}
    assert lines["| static int8 alone"].count("not run") == 2, lines["| static int8 alone"]  # result, dominated
    assert "| yes |" not in lines["| static int8 alone"]
    assert "| **no** |" in lines["| dynamic int8 alone"]
    assert [r["dominated"] for r in csv.DictReader(io.StringIO(result.csv()))] == ["False", "", ""]


BASELINES_ONLY = """\
name: masked
tasks: [digits]
budget: low
seed: 0
baselines: {trials: 1, targets: {size: 2}}
"""


def test_bench_never_opens_a_storage_by_its_masked_url(tmp_path, monkeypatch):
    """Bug 10: the bench reopened its studies by the URL `study show` reports, in which a password is masked
    (``***``): a server storage with a password could not be opened. Here `study show` reports a masked URL of a
    file that does not exist; the bench must read its studies without it."""
    from autocompress import study as acs

    masked = f"sqlite://bench:***@/{tmp_path}/masked.db"
    real_show = acs.show
    monkeypatch.setattr(acs, "show", lambda study, url: {**real_show(study, url), "storage": masked})
    definition = tmp_path / "masked.yaml"
    definition.write_text(BASELINES_ONLY)
    result, md_path, _ = bench.run_bench(definition, tmp_path / "out", tmp_path / "studies")
    assert not (tmp_path / "masked.db").exists()
    assert (tmp_path / "studies" / "masked.db").is_file()
    assert [r.method for r in result.rows][-2:] == ["rule plan alone (trial 0)", "full study"]
    assert result.timing["trials"] >= 1 and "## Where a trial's time goes" in md_path.read_text()


def test_bench_on_the_onnxruntime_backend_measures_its_baselines_there(tmp_path):
    definition = tmp_path / "tiny.yaml"
    definition.write_text("name: tiny\ntasks: [digits]\nbudget: low\nbaselines: {trials: 1, targets: {size: 4}}\n")
    bad = run_cli("bench", str(definition), "--backend", "tpu", "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "tpu" in bad.stderr and bad.stderr.count("\n") == 1
    result = run_cli("bench", str(definition), "--backend", "onnxruntime", "--out", str(tmp_path / "r"),
                     timeout=900)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "r" / "tiny.md").exists()  # the file's own (cpu) tables are not replaced
    md = (tmp_path / "r" / "tiny-onnxruntime.md").read_text()
    assert "--backend onnxruntime" in md and "backend `onnxruntime`" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r" / "tiny-onnxruntime.csv").read_text())))
    plans = {r["method"]: r["plan"] for r in rows}
    assert "(onnxruntime)" in plans["static int8 alone"] and "(onnxruntime)" in plans["full study"]
    static = next(r for r in rows if r["method"] == "static int8 alone")
    assert float(static["size"]) > 2.5  # the .onnx file of an int8 program, against the float model's bytes
