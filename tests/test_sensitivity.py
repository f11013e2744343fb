"""Per-layer sensitivity scans and the dial from uniform to sensitivity-weighted per-layer ratios."""

import json
import math

import pytest
import torch

from autocompress.pruning import (PruningConfig, PruningError, Sensitivity, layer_ratios, measure_sensitivity,
                                  prunable_layers, prune)


@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks.digits import task

    t = task()
    x, y = t.eval_data.tensors
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    return t.model, t.example_input, batches


@pytest.fixture(scope="module")
def scan(digits):
    model, example, batches = digits
    return measure_sensitivity(model, example, batches, ratio=0.5)


def _synthetic() -> Sensitivity:
    return Sensitivity(scores={"a": 0.40, "b": 0.05, "c": 0.01, "d": -0.002},
                       params={"a": 1000, "b": 4000, "c": 2000, "d": 500}, baseline_loss=0.1, ratio=0.5)


def _weighted_mean(sensitivity: Sensitivity, ratios) -> float:
    total = sum(sensitivity.params.values())
    return sum(sensitivity.params[n] * r for n, r in ratios) / total


def test_scan_scores_every_prunable_layer_finitely_and_some_layer_hurts(digits, scan):
    model, example, _ = digits
    assert list(scan.scores) == [names[0] for names in prunable_layers(model, example)]
    assert all(math.isfinite(s) for s in scan.scores.values())
    assert max(scan.scores.values()) > 0
    assert all(p > 0 for p in scan.params.values())
    assert 0 <= scan.baseline_loss < 0.5  # the trained CNN: near-perfect on its evaluation rows
    assert scan.ratio == 0.5 and scan.technique == "magnitude"


def test_scan_leaves_the_model_untouched(digits):
    model, example, batches = digits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    measure_sensitivity(model, example, batches[:1], ratio=0.25)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_scan_params_are_the_parameters_tied_to_each_layer(digits, scan):
    model, example, _ = digits
    # features.0 (1 -> 32 channels, 3x3) with its BatchNorm and the 32 input channels of features.3 (-> 64).
    assert scan.params["features.0"] == 32 * 9 + 32 + 2 * 32 + 64 * 32 * 9


def test_scan_flops_are_the_macs_tied_to_each_layer(digits, scan):
    # features.0's 32 channels: its own 3x3 conv over the 8x8 image, and features.3's 32 input channels over the
    # same 8x8 grid (padding keeps it), 64 outputs: the early layer holds MACs far beyond its parameter share.
    assert scan.flops["features.0"] >= 8 * 8 * (32 * 9 + 64 * 32 * 9)
    assert scan.flops["features.0"] / sum(scan.flops.values()) > 3 * scan.params["features.0"] / sum(
        scan.params.values())
    old = Sensitivity.from_dict({k: v for k, v in scan.to_dict().items() if k != "flops"})  # a record made before
    assert old.flops == {} and layer_ratios(old, 0.7, 0.5, cost="flops") == layer_ratios(scan, 0.7, 0.5)


def test_macs_weighted_widths_remove_as_many_macs_as_uniform_ones(digits, scan):
    """Weighted by parameters, the dial kept the MAC-heavy early layers and halved the MACs removed (digits:
    10.7x at uniform 70%, 4.7x at dial 0.5); weighted by MACs it removes as many as uniform widths."""
    model, example, _ = digits
    uniform = prune(model, example, PruningConfig(strategy="uniform", ratio=0.7), progress=False)
    by = {cost: prune(model, example, PruningConfig(strategy="uniform", ratio=0.7, layer_ratios=layer_ratios(
        scan, 0.7, 0.5, cost=cost)), progress=False) for cost in ("params", "flops")}
    assert abs(by["flops"].flops_after / uniform.flops_after - 1) < 0.15
    assert by["params"].flops_after > 1.5 * uniform.flops_after
    with pytest.raises(PruningError, match="cost='bytes'"):
        layer_ratios(scan, 0.7, 0.5, cost="bytes")


def test_scan_round_trips_through_json(scan):
    again = Sensitivity.from_dict(json.loads(json.dumps(scan.to_dict())))
    assert again == scan
    with pytest.raises(PruningError):
        Sensitivity.from_dict({"scores": {"a": 1.0}})


def test_weight_zero_is_exactly_uniform(scan):
    assert layer_ratios(scan, 0.8, 0.0) == tuple((n, 0.8) for n in scan.scores)
    assert layer_ratios(_synthetic(), 0.5, 0.0) == (("a", 0.5), ("b", 0.5), ("c", 0.5), ("d", 0.5))


@pytest.mark.parametrize("mean_ratio", [0.3, 0.5, 0.8])
def test_weight_one_spares_the_most_sensitive_layer_at_the_same_mean(scan, mean_ratio):
    for sensitivity in (scan, _synthetic()):
        ratios = dict(layer_ratios(sensitivity, mean_ratio, 1.0))
        most = max(sensitivity.scores, key=sensitivity.scores.get)
        least = min(sensitivity.scores, key=sensitivity.scores.get)
        assert ratios[most] == min(ratios.values()) < mean_ratio
        assert ratios[least] == max(ratios.values()) > mean_ratio
        assert all(0.0 <= r <= 0.95 for r in ratios.values())
        assert abs(_weighted_mean(sensitivity, ratios.items()) - mean_ratio) <= 0.02


def test_intermediate_weights_lie_between_uniform_and_fully_weighted():
    sensitivity = _synthetic()
    half = dict(layer_ratios(sensitivity, 0.5, 0.5))
    full = dict(layer_ratios(sensitivity, 0.5, 1.0))
    assert full["a"] < half["a"] < 0.5  # the most sensitive layer keeps more as the weight rises
    assert abs(_weighted_mean(sensitivity, half.items()) - 0.5) <= 0.02


def test_clipped_layers_hand_their_share_to_the_others():
    # "d" and "c" hurt least: at mean 0.8 (keep 0.2) they hit the cap, keeping half the uniform fraction (ratio
    # 0.9), and the rest still reach the mean.
    sensitivity = _synthetic()
    ratios = dict(layer_ratios(sensitivity, 0.8, 1.0))
    assert ratios["d"] == pytest.approx(0.9)
    assert abs(_weighted_mean(sensitivity, ratios.items()) - 0.8) <= 0.02


@pytest.mark.parametrize("mean_ratio", [0.3, 0.6, 0.8, 0.9])
def test_every_layer_keeps_between_half_and_twice_the_uniform_fraction(scan, mean_ratio):
    keep = 1 - mean_ratio
    for sensitivity in (scan, _synthetic()):
        for _, ratio in layer_ratios(sensitivity, mean_ratio, 1.0):
            assert keep / 2 - 1e-6 <= 1 - ratio <= min(1.0, 2 * keep) + 1e-6


@pytest.mark.parametrize("mean_ratio,weight", [(0.99, 0.5), (-0.1, 0.5), (0.5, 1.5), (0.5, True)])
def test_dial_out_of_range_is_refused(mean_ratio, weight):
    with pytest.raises(PruningError):
        layer_ratios(_synthetic(), mean_ratio, weight)


def test_no_positive_score_gives_uniform_ratios():
    flat = Sensitivity(scores={"a": 0.0, "b": -0.01}, params={"a": 10, "b": 10}, baseline_loss=0.1, ratio=0.5)
    assert layer_ratios(flat, 0.4, 1.0) == (("a", 0.4), ("b", 0.4))


def test_weighted_ratios_prune_the_digits_cnn_to_about_the_uniform_size(digits, scan):
    model, example, _ = digits
    uniform = prune(model, example, PruningConfig(strategy="uniform", ratio=0.5), progress=False)
    weighted = prune(model, example, PruningConfig(strategy="uniform", ratio=0.5,
                                                   layer_ratios=layer_ratios(scan, 0.5, 1.0)), progress=False)
    assert weighted.model(example).shape == model(example).shape
    assert abs(weighted.params_after / uniform.params_after - 1) < 0.25


def test_scan_needs_batches_and_a_ratio_inside_zero_one(digits):
    model, example, batches = digits
    with pytest.raises(PruningError, match="no batches"):
        measure_sensitivity(model, example, [])
    with pytest.raises(PruningError, match="sensitivity ratio"):
        measure_sensitivity(model, example, batches, ratio=1.0)
