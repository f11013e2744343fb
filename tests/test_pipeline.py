"""The selector's plan run end to end: prune → distil (QAT) → quantize → measure, under the threshold."""

import json

import pytest
import torch

import autocompress
from autocompress import pipeline
from autocompress.plan import Plan
from autocompress.quantization import quantization_config
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
    assert plan.quantization_mode == "none" and plan.pruning.strategy == "conv"  # int8 does the same MACs
    assert any(r.startswith("quantization = none: the objective is MACs") for r in data["reasons"])
    assert any("conv layers hold 97% of MACs; the 4.00× flops pruning target needs 78% of them" in r
               for r in data["reasons"])
    assert any(r.startswith("pruning.ratio = ") and "measured on a pruned copy" in r for r in data["reasons"])
    # the estimate before any training: a range around a point, from the untrained uniform-pruning probe
    guess = data["estimate"]
    assert guess["objective"] == "flops" and guess["low"] <= guess["point"] <= guess["high"]
    assert guess["low"] >= 2.0  # digits, after 20 fine-tuning steps, loses little at 50% uniform pruning
    r0, r1 = guess["ratio_range"]
    assert 0.5 <= r0 <= r1 <= 0.95 and guess["quantization"] == "none"  # int8 does the same MACs
    drops = dict((r, d) for r, d in guess["probe"])
    assert drops[r0] <= 10.0 and drops[r1] <= 25.0  # the ends: probe drops within 10 and 25 points
    assert all(d > 25.0 for r, d in drops.items() if r > r1)  # and the high end is the last such ratio


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
    (["--max-drop", "-1"], "max drop -1.0; a finite drop ≥ 0: metric points for accuracy or F1"),
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
    assert "the plan's model is a qat int8 model, which pt2 cannot hold" in result.stderr
    assert "torchscript, onnx, autocompress" in result.stderr and "attempt" not in result.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------- metric scale
def _profile_with(metric: dict) -> autocompress.Profile:
    return autocompress.Profile(arch_type="mlp", layers=(), params=1, flops=1, size_mb=1.0,
                                latency_ms={"batch_1": 1.0, "batch_64": 1.0}, metric=metric, device="cpu",
                                threads=1)


def test_threshold_stop_follows_the_metrics_direction_and_units(monkeypatch):
    # A lower-is-better raw metric (a mean error): the threshold stop must aim *above* the original value, by
    # half the allowed drop in the metric's own units.
    from autocompress.distillation import DistillationConfig, FineTune

    task = autocompress.load_task("digits")
    original = _profile_with({"name": "error", "value": 2.0, "higher_is_better": False, "scale": "raw"})
    seen = {}

    def fake_distill(student, task, config, **kwargs):
        seen["target"] = config.target_metric
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "distill", fake_distill)
    plan = Plan(distillation=DistillationConfig(technique=FineTune(), stop="threshold", max_epochs=1))
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.run_plan(task, plan, original, requirements=Requirements(max_drop=0.5), progress=False)
    assert seen["target"] == pytest.approx(2.25)
    higher = _profile_with({"name": "accuracy", "value": 0.9, "higher_is_better": True})
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.run_plan(task, plan, higher, requirements=Requirements(max_drop=2), progress=False)
    assert seen["target"] == pytest.approx(0.89)  # 1 point below, in points of a fraction metric


def test_drops_of_a_raw_metric_are_in_its_own_units():
    from autocompress.metrics import metric_threshold

    raw = {"name": "perplexity", "value": 20.0, "higher_is_better": False, "scale": "raw"}
    assert pipeline.metric_drop(_profile_with(raw), _profile_with({**raw, "value": 20.5})) == pytest.approx(0.5)
    assert metric_threshold(raw, 0.5) == pytest.approx(20.5)
    fraction = {"name": "accuracy", "value": 0.9, "higher_is_better": True, "scale": "fraction"}
    assert pipeline.metric_drop(_profile_with(fraction), _profile_with({**fraction, "value": 0.88})) == \
        pytest.approx(2.0)
    # A task says its scale; a callable metric is raw unless the task says fraction.
    task = autocompress.load_task("digits")
    import dataclasses

    def error_rate(logits, targets):
        return float((logits.argmax(1) != targets).float().mean())

    custom = dataclasses.replace(task, metric=error_rate, higher_is_better=False)
    assert custom.resolved_metric.scale == "raw"
    assert dataclasses.replace(custom, metric_scale="fraction").resolved_metric.scale == "fraction"
    assert autocompress.profile_task(custom, device="cpu").metric["scale"] == "raw"
    with pytest.raises(autocompress.errors.MetricError, match="metric_scale 'percent'"):
        dataclasses.replace(custom, metric_scale="percent").resolved_metric


def test_a_raw_metric_accepts_drops_of_100_units_and_a_fraction_metric_does_not():
    from autocompress.errors import ConfigError
    from autocompress.metrics import check_max_drop

    check_max_drop({"value": 300.0, "scale": "raw"}, 150.0)
    with pytest.raises(ConfigError, match=r"metric points in \[0, 100\)"):
        check_max_drop({"value": 0.9}, 100.0)
    with pytest.raises(ConfigError, match="max drop -1"):
        Requirements(max_drop=-1)


def test_energy_on_the_gpu_backend_is_refused_up_front():
    from autocompress.errors import ConfigError
    from autocompress.requirements import check_objectives

    with pytest.raises(ConfigError, match="energy is measured for the cpu backend only"):
        Requirements(objective="energy", backend="gpu")
    with pytest.raises(ConfigError, match="energy is measured for the cpu backend only"):
        check_objectives(Requirements(objective="size", backend="gpu"), ["size", "energy"])
    check_objectives(Requirements(objective="size", backend="cpu"), ["size", "energy"])
    result = run_cli("study", "--task", "digits", "--backend", "gpu", "--objective", "energy", "--trials", "1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "energy is measured for the cpu backend only" in result.stderr


def test_zero_attempts_is_a_one_line_error(tmp_path):
    result = run_cli("compress", "--task", "digits", "--attempts", "0", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--attempts 0; at least 1 pipeline run" in result.stderr
    assert not (tmp_path / "run").exists()
    task = autocompress.load_task("digits")
    with pytest.raises(autocompress.ConfigError, match="at least 1 pipeline run"):
        pipeline.run(task, Plan(), Requirements(), max_attempts=0, progress=False)


def test_a_format_the_backed_off_model_cannot_hold_is_skipped_and_said(tmp_path, monkeypatch, digits):
    # Back-off may move a QAT plan to dynamic int8, which ONNX cannot hold. The run's result is still written;
    # the format is skipped with its reason (exit 3 in the CLI), not a "bad input" error after the work.
    from autocompress.compress import compress
    from autocompress.quantization import quantization_config

    from autocompress.export import formats

    task, profile = digits
    # Every int8 mode holds onnx now (dynamic goes through ONNX Runtime); a support matrix where dynamic cannot
    # keeps this path tested.
    monkeypatch.setitem(formats._RULES, "dynamic", ("torchscript", "autocompress"))

    def backed_off(task, plan, requirements, **kwargs):
        dynamic = plan.replace(quantization=quantization_config("dynamic"))
        return pipeline.PipelineResult(model=task.model, plan=dynamic, original=profile, compressed=profile,
                                       metric_drop=0.0, reduction={k: 1.0 for k in pipeline.REDUCTION_KEYS},
                                       feasible=True, target_met=True)

    monkeypatch.setattr(pipeline, "run", backed_off)
    outcome = compress(task, Requirements(objective="size", target=2, budget="high"), tmp_path / "run",
                       formats=["onnx"])
    assert set(outcome.skipped) == {"onnx"} and "from qat to dynamic" in outcome.skipped["onnx"]
    assert not outcome.complete
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "onnx" in report["skipped_formats"] and set(report["exports"]) == {"autocompress"}
    assert (tmp_path / "run" / "model.acz").is_file() and not (tmp_path / "run" / "model.onnx").exists()


def test_a_slow_down_while_only_the_original_was_measured_does_not_change_the_ratio(digits):
    # The study's original profile was taken while another job was busy (20x slower). A trial that changes
    # nothing must still measure about 1x latency and energy: the ratio comes from both models measured in
    # one window, and the trial keeps the original's same-window figure beside its own.
    import dataclasses

    from autocompress.distillation import DistillationConfig
    from autocompress.pruning import PruningConfig

    task, quiet = digits
    busy = dataclasses.replace(quiet, latency_ms={k: 20 * v for k, v in quiet.latency_ms.items()},
                               energy_mj={**quiet.energy_mj, "batch_64": 20 * quiet.energy_mj["batch_64"]})
    unchanged = Plan(pruning=PruningConfig(ratio=0.0), distillation=DistillationConfig(max_epochs=0))
    ratios = []
    for original in (quiet, busy):
        result = pipeline.run_plan(task, unchanged, original, requirements=Requirements(), progress=False)
        window = result.side_by_side["latency"]
        assert window["original_ms"] > 0 and window["compressed_ms"] > 0 and window["rounds"] >= 5
        assert result.report()["side_by_side"]["latency"]["ratio"] == result.reduction["latency"]
        ratios.append((result.reduction["latency"], result.reduction["energy"]))
    for latency, energy in ratios:
        # The same model on both sides: 1x, within the noise of a shared machine (never the injected 20x).
        assert 0.5 < latency < 2.0 and 0.5 < energy < 2.0


def test_a_format_that_fails_its_reload_check_after_the_work_is_skipped_not_a_bad_input(tmp_path, monkeypatch,
                                                                                         digits):
    from autocompress import compress as compress_module
    from autocompress.errors import ExportError
    from autocompress.export import export_model

    task, profile = digits

    def run_once(task, plan, requirements, **kwargs):
        return pipeline.PipelineResult(model=task.model, plan=plan, original=profile, compressed=profile,
                                       metric_drop=0.0, reduction={k: 1.0 for k in pipeline.REDUCTION_KEYS},
                                       feasible=True, target_met=True)

    def flaky_export(model, fmt, path, *args, **kwargs):
        if fmt == "onnx":
            raise ExportError("the reloaded onnx export gives top1_agreement=0.89", ">= 0.99", "try another format")
        return export_model(model, fmt, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run", run_once)
    monkeypatch.setattr("autocompress.export.export_model", flaky_export)
    outcome = compress_module.compress(task, Requirements(objective="size", target=2), tmp_path / "run",
                                       formats=["onnx", "torchscript"])
    assert "top1_agreement=0.89" in outcome.skipped["onnx"] and not outcome.complete
    assert set(outcome.exports) == {"autocompress", "torchscript"}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "onnx" in report["skipped_formats"] and not (tmp_path / "run" / "model.onnx").exists()


def test_a_timed_target_missed_by_a_hair_still_prunes_a_measurable_step_further(digits, monkeypatch):
    # 2.98x of a 3x latency target: the shortfall (1%) is smaller than the window-to-window spread of a timed
    # ratio, so the next attempt asks for at least TIMED_MIN_STEP more pruning fold, not 1-3%; a size target
    # (exact counts) steps by the shortfall.
    task, original = digits
    folds = []

    def fake_run_plan(task, plan, original, requirements=None, **kwargs):
        return pipeline.PipelineResult(model=task.model, plan=plan, original=original, compressed=original,
                                       metric_drop=0.0, reduction={k: 2.98 for k in pipeline.REDUCTION_KEYS},
                                       feasible=True, target_met=False)

    def fake_with_pruning_fold(task, plan, objective, fold, progress):
        folds.append((objective, fold))
        return plan

    monkeypatch.setattr(pipeline, "run_plan", fake_run_plan)
    monkeypatch.setattr(pipeline, "_with_pruning_fold", fake_with_pruning_fold)
    for objective in ("latency", "size"):
        pipeline.run(task, Plan(), Requirements(objective=objective, target=3.0, max_drop=1.0), original=original,
                     max_attempts=2, progress=False)
    assert folds[0] == ("latency", pipeline.TIMED_MIN_STEP)
    assert folds[1][0] == "size" and folds[1][1] == pytest.approx(3.0 / 2.98 * 1.02)


def test_a_size_run_that_held_once_does_not_fall_back_to_a_milder_quantization(digits, monkeypatch):
    # QAT held at 3.96x of a 4x size target, pruning further broke the threshold: dynamic int8 or none store more
    # bytes, so they cannot beat 3.96x; the run stops with the held attempt instead of spending two more.
    task, original = digits
    modes = []

    def fake_run_plan(task, plan, original, requirements=None, **kwargs):
        modes.append(plan.quantization_mode)
        held = plan.pruning.ratio == 0.0
        return pipeline.PipelineResult(model=task.model, plan=plan, original=original, compressed=original,
                                       metric_drop=0.0 if held else 6.0,
                                       reduction={k: 3.96 if held else 4.18 for k in pipeline.REDUCTION_KEYS},
                                       feasible=held, target_met=False)

    def fake_with_pruning_fold(task, plan, objective, fold, progress):
        return plan.replace(pruning=plan.pruning.replace(ratio=0.0 if fold <= 1.0 + 1e-6 else 0.02))

    monkeypatch.setattr(pipeline, "run_plan", fake_run_plan)
    monkeypatch.setattr(pipeline, "_with_pruning_fold", fake_with_pruning_fold)
    qat = Plan().replace(quantization=quantization_config("qat"))
    qat = qat.replace(pruning=qat.pruning.replace(ratio=0.0))
    result = pipeline.run(task, qat, Requirements(objective="size", target=4.0, max_drop=1.0), original=original,
                          max_attempts=4, progress=False)
    assert modes == ["qat", "qat"] and result.reduction["size"] == 3.96
    modes.clear()  # with no attempt held yet, a milder mode is still tried
    pipeline.run(task, qat.replace(pruning=qat.pruning.replace(ratio=0.02)),
                 Requirements(objective="size", target=4.0, max_drop=1.0), original=original, max_attempts=4,
                 progress=False)
    assert modes == ["qat", "dynamic", "none"]
