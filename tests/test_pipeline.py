"""The selector's plan run end to end: prune → distil (QAT) → quantize → measure, under the threshold."""

import json

import pytest
import torch

import autocompress
from autocompress import pipeline
from autocompress.plan import Plan
from autocompress.requirements import Requirements
from autocompress.selection import select

from .conftest import FIXTURES, run_cli


@pytest.fixture(scope="module")
def digits():
    task = autocompress.load_task("digits")
    return task, autocompress.profile_task(task, device="cpu")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_plan_json_has_profile_plan_and_reasons():
    result = run_cli("plan", "--task", "digits", "--objective", "flops", "--target", "4", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["plan"]["kind"] == "plan" and data["profile"]["arch_type"] == "cnn"
    plan = Plan.load(data["plan"])
    assert plan.quantization_mode == "qat" and plan.pruning.strategy == "conv"
    assert any("conv layers hold 97% of MACs; the 4.00× flops pruning target needs 78% of them" in r
               for r in data["reasons"])
    assert any(r.startswith("pruning.ratio = ") and "measured on a pruned copy" in r for r in data["reasons"])


def test_compress_meets_a_20x_size_target_within_one_point(tmp_path):
    out = tmp_path / "run"
    result = run_cli("compress", "--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "20",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert {"original", "compressed", "reduction", "metric_drop", "plan", "reasons"} <= set(report)
    for side in ("original", "compressed"):
        assert {"params", "flops", "size_mb", "latency_ms", "metric"} <= set(report[side])
    assert report["reduction"]["size"] >= 20 and report["metric_drop"] <= 1.0
    assert "| Size (MB) |" in (out / "report.md").read_text()
    # The exported model reloads from the archive and keeps the reported accuracy.
    task = autocompress.load_task("digits")
    model = autocompress.load(out / "model.acz", base_model=task.model)
    x, y = task.eval_data.tensors
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(report["compressed"]["metric"]["value"], abs=1e-6)


def test_impossible_target_exits_3_with_the_best_feasible_result(tmp_path):
    out = tmp_path / "run"
    result = run_cli("compress", "--task", "digits", "--objective", "size", "--target", "1000", "--out", str(out),
                     "--attempts", "2")
    assert result.returncode == 3, result.stderr
    assert "target not reached" in result.stderr and "wanted 1000×" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["feasible"] is True and report["target_met"] is False and report["metric_drop"] <= 1.0
    assert report["reduction"]["size"] > 1.0


@pytest.mark.parametrize("objective,target", [("size", 20), ("flops", 5), ("latency", 3)])
def test_user_style_pretrained_model(objective, target):
    """Frozen parameters, no BatchNorm, view-flattening, functional calls: the three targets within 1 point."""
    task = autocompress.load_task(str(FIXTURES / "user_lenet_task.py"))
    before = _state(task.model)
    requirements = Requirements(objective=objective, max_drop=1, target=target)
    profile = autocompress.profile_task(task, device="cpu")
    selection = select(profile, requirements, task.model, task.example_input)
    result = pipeline.run(task, selection.plan, requirements, original=profile, progress=False)
    assert result.feasible and result.metric_drop <= 1.0
    # Latency is measured on a shared machine; allow 10% noise below the 3x goal in the unit test.
    slack = 0.9 if objective == "latency" else 1.0
    assert result.reduction[objective] >= target * slack, result.attempts
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    assert not any(p.requires_grad for p in task.model.parameters())  # the user's model stays frozen


def test_backs_off_an_over_aggressive_plan(digits):
    task, profile = digits
    plan = select(profile, Requirements(objective="size", target=2, budget="low")).plan
    # 95% of channels, no retraining: far over a 1-point threshold; the pipeline must back off.
    harsh = plan.replace(pruning=plan.pruning.replace(ratio=0.95, strategy="global", technique="magnitude"),
                         distillation=plan.distillation.replace(max_epochs=0))
    requirements = Requirements(objective="size", max_drop=1, target=2, budget="low")
    result = pipeline.run(task, harsh, requirements, original=profile, max_attempts=4, progress=False)
    assert result.attempts[0]["feasible"] is False
    assert result.feasible and result.metric_drop <= 1.0
    assert result.plan.pruning.ratio < 0.95 or result.plan.quantization_mode != harsh.quantization_mode


@pytest.mark.parametrize("args,message", [
    (["--objective", "speed"], "objective 'speed'; one of size, flops, latency, energy"),
    (["--target", "ten"], "target 'ten'; an X-fold reduction"),
    (["--target", "0.5"], "an X-fold reduction of at least 1×"),
    (["--max-drop", "-1"], "max drop -1.0; metric points in [0, 100)"),
    (["--max-drop", "100"], "max drop 100.0"),
    (["--budget", "huge"], "budget 'huge'"),
])
def test_bad_requirements_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_cli("compress", "--task", "digits", "--out", str(out), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert not out.exists()


def test_out_that_is_a_file_or_holds_files_is_refused(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("mine")
    result = run_cli("compress", "--task", "digits", "--out", str(afile))
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr
    assert afile.read_text() == "mine"
    full = tmp_path / "full"
    full.mkdir()
    (full / "report.json").write_text("{}")
    result = run_cli("compress", "--task", "digits", "--out", str(full))
    assert result.returncode == 2 and "already holds files" in result.stderr and "--overwrite" in result.stderr
    assert (full / "report.json").read_text() == "{}"


def test_gpu_backend_without_gpu_fails_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    result = run_cli("compress", "--task", "digits", "--backend", "gpu", "--out", str(out))
    assert result.returncode == 2 and "no CUDA GPU is available" in result.stderr
    assert not out.exists()


def test_a_format_that_cannot_hold_the_plans_model_is_refused_before_the_run(tmp_path):
    out = tmp_path / "out"
    result = run_cli("compress", "--task", "digits", "--target", "4", "--format", "pt2", "--out", str(out))
    assert result.returncode == 2
    assert "--format pt2 for a model quantized with 'qat'" in result.stderr
    assert "torchscript, onnx, autocompress" in result.stderr and "attempt" not in result.stderr
    assert not out.exists()
