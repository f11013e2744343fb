import pytest

from autocompress.errors import ConfigError
from autocompress.profile import LayerStats, Profile
from autocompress.requirements import Requirements, parse_target
from autocompress.selection import (choose_distillation, choose_quantization, choose_strategy, choose_technique,
                                    pruning_fold_needed, quantization_gain, select)


def _profile(arch: str, layers: list[tuple[str, int, int]], metric: str = "accuracy") -> Profile:
    rows = tuple(LayerStats(t, 1, p, f) for t, p, f in layers)
    return Profile(arch_type=arch, layers=rows, params=sum(r.params for r in rows), flops=sum(r.flops for r in rows),
                   size_mb=1.0, latency_ms={"batch_1": 1.0, "batch_64": 10.0},
                   metric={"name": metric, "value": 0.9}, device="cpu", threads=2)


CNN = _profile("cnn", [("Conv2d", 58, 966), ("Linear", 41, 27), ("BatchNorm2d", 1, 7)])
CNN_NO_BN = _profile("cnn", [("Conv2d", 20, 900), ("Linear", 80, 100)])
MLP = _profile("mlp", [("Linear", 99, 99), ("LayerNorm", 1, 1)])
BERT = _profile("transformer", [("Linear", 80, 85), ("Embedding", 18, 0), ("LayerNorm", 2, 4),
                                ("BertSelfAttention", 0, 11)], metric="f1")
VIT = _profile("transformer", [("Linear", 70, 60), ("Conv2d", 20, 10), ("MultiheadAttention", 10, 30)])


def test_target_accepts_folds_and_percentages():
    assert parse_target("90%") == pytest.approx(10.0)
    assert parse_target("10x") == parse_target(10) == 10.0
    for bad in ("ten", "0.5", "100%", "-3"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_requirements_validate_each_field():
    with pytest.raises(ConfigError, match="objective 'speed'; one of size, flops, latency, energy"):
        Requirements(objective="speed")
    with pytest.raises(ConfigError, match="max drop -1"):
        Requirements(max_drop=-1)
    with pytest.raises(ConfigError, match="max drop inf"):
        Requirements(max_drop=float("inf"))
    # 100 points is refused once the metric's scale is known (a raw metric may allow 100 of its units).
    with pytest.raises(ConfigError, match="max drop 100"):
        select(CNN, Requirements(max_drop=100))
    with pytest.raises(ConfigError, match="backend 'tpu'"):
        Requirements(backend="tpu")
    assert Requirements(target="75%").target == pytest.approx(4.0)


def test_quantization_rules_cover_each_branch():
    assert choose_quantization(CNN, Requirements(backend="gpu"))[0] == "none"
    assert choose_quantization(CNN, Requirements(budget="high"))[0] == "qat"
    mode, reason = choose_quantization(BERT, Requirements(budget="high"))
    assert mode == "dynamic" and "linear layers, which hold 80% of parameters" in reason.rule
    assert choose_quantization(BERT, Requirements(backend="gpu"))[0] == "none"
    mode, reason = choose_quantization(CNN, Requirements(budget="low", max_drop=3))
    assert mode == "static" and "3 points may be lost (> 2)" in reason.rule
    mode, reason = choose_quantization(CNN, Requirements(budget="low", max_drop=1))
    assert mode == "dynamic" and "only 1 points may be lost (≤ 2)" in reason.rule
    # A CNN whose only linear layer is a small classifier: dynamic int8 would leave it about as large.
    resnet = _profile("cnn", [("Conv2d", 97, 990), ("Linear", 2, 9), ("BatchNorm2d", 1, 1)])
    mode, reason = choose_quantization(resnet, Requirements(budget="low", max_drop=1))
    assert mode == "static" and "which hold 2% of parameters (about 1.02× smaller)" in reason.rule


def test_quantization_gain_accounts_for_mode_and_objective():
    assert quantization_gain(CNN, "size", "qat") == 4.0
    # dynamic int8 touches only linear layers, which hold 41% of the CNN's parameters
    assert quantization_gain(CNN, "size", "dynamic") == pytest.approx(1 / (1 - 0.41 * 0.75))
    assert quantization_gain(CNN, "flops", "static") == 1.0
    fold, reason = pruning_fold_needed(CNN, Requirements(objective="size", target=10), "qat")
    assert fold == pytest.approx(2.5) and "leaves 2.50× for pruning" in reason.rule


def test_size_strategy_is_greedy_on_parameters():
    # 2x pruning removes 50%: conv holds 58%, 0.8*58% = 46% < 50%, so linear joins -> global
    strategy, reason = choose_strategy(CNN, Requirements(objective="size"), 2.0)
    assert strategy == "global" and "conv and linear layers hold 99% of parameters" in reason.rule
    # 1.5x removes 33%, which conv alone can give under the cap
    strategy, reason = choose_strategy(CNN, Requirements(objective="size"), 1.5)
    assert strategy == "conv" and "needs 57% of them, under the 80% cap" in reason.rule
    strategy, _ = choose_strategy(CNN_NO_BN, Requirements(objective="size"), 2.0)
    assert strategy == "linear"  # linear layers hold the most parameters there


def test_flops_strategy_uses_compute_heavy_layers_and_the_cap():
    strategy, reason = choose_strategy(CNN, Requirements(objective="flops"), 4.0)
    assert strategy == "conv"
    assert reason.rule.startswith("conv layers hold 97% of MACs; the 4.00× flops pruning target needs 78% of them")
    strategy, reason = choose_strategy(CNN, Requirements(objective="latency"), 5.0)
    assert strategy == "global" and "over the 80% cap" in reason.rule
    strategy, _ = choose_strategy(BERT, Requirements(objective="flops"), 2.0)
    assert strategy == "attention"
    strategy, _ = choose_strategy(MLP, Requirements(objective="energy"), 2.0)
    assert strategy == "linear"


def test_technique_rules_cover_each_branch():
    assert choose_technique(BERT, "attention")[0] == "group_norm"
    assert choose_technique(VIT, "global")[0] == "group_norm"
    assert choose_technique(MLP, "linear")[0] == "magnitude"
    assert choose_technique(CNN, "conv")[0] == "bn_scale"
    technique, reason = choose_technique(CNN_NO_BN, "conv")
    assert technique == "lamp" and "no BatchNorm" in reason.rule
    assert choose_technique(CNN, "global")[0] == "lamp"


def test_distillation_rules_cover_each_branch():
    assert choose_distillation(BERT, Requirements(budget="low"))[0] == "finetune"
    assert choose_distillation(CNN, Requirements())[0] == "finetune"
    technique, reason = choose_distillation(BERT, Requirements())
    assert technique == "soft" and "the metric is f1" in reason.rule
    custom = _profile("mlp", [("Linear", 1, 1)], metric="mse")
    assert choose_distillation(custom, Requirements())[0] == "combined"


def test_onnxruntime_gets_qat_with_a_high_budget_and_its_study_searches_it():
    from autocompress.study.space import SearchSpace

    requirements = Requirements(objective="size", max_drop=1, target=10, budget="high", backend="onnxruntime")
    mode, reason = choose_quantization(CNN, requirements)
    assert mode == "qat" and "QDQ ONNX" in reason.rule
    space = SearchSpace.for_model(CNN, requirements)
    assert "qat" in space.quantization and space.backend == "onnxruntime"


def test_int8_widths_round_to_16_only_when_speed_is_the_objective():
    # Multiples of 16 are for fbgemm's speed; for size a 2% ratio rounded to 16 took resnet18's 64-channel
    # layers to 48 (6 points lost on the image-folder task) where free widths lost none.
    def round_to(objective: str):
        selection = select(CNN, Requirements(objective=objective, target=3, budget="high"))
        assert selection.plan.quantization_mode == "qat", objective
        reasons = {r.decision: r.choice for r in selection.reasons}
        return selection.plan.pruning.round_to, reasons.get("pruning.round_to")

    assert round_to("latency") == (16, "16") and round_to("energy") == (16, "16")
    assert round_to("size") == (None, None)
