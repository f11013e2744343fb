"""The benchmark runner: definition checks, the dominance rule, and a tiny real benchmark end to end."""

from __future__ import annotations

import csv
import io

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
baselines: {trials: 2, targets: {size: 4}}
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


def test_front_dominates():
    front = [{"metrics": {"metric": {"value": 0.99}}, "reduction": {"size": 40.0}},
             {"metrics": {"metric": {"value": 0.995}}, "reduction": {"size": 20.0}}]
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
    methods = [r["method"] for r in rows if r["table"] == "baselines"]
    assert methods == ["Torch-Pruning recipe (magnitude/global + fine-tune)", "dynamic int8 alone",
                       "static int8 alone",
                       "hand recipe: 80% of every layer's channels, distillation, static int8",
                       "rule plan alone (trial 0)", "full study"]
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
