"""Strategy ``uniform`` (the same ratio in every prunable layer) and per-layer ratios (``layer_ratios``)."""

import json
import math

import pytest
import torch
from torch import nn

from autocompress.config import Config
from autocompress.plan import Plan
from autocompress.pruning import STRATEGIES, PruningConfig, PruningError, prunable_layers, prune
from autocompress.tasks.digits import DigitsCNN


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 30), nn.ReLU(), nn.Linear(30, 5)).eval()


def _resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


MODELS = {
    "digits": (lambda: DigitsCNN().eval(), (2, 1, 8, 8)),
    "mlp": (_mlp, (2, 20)),
    "resnet18": (_resnet18, (1, 3, 32, 32)),
}


def _width(model: nn.Module, name: str) -> int:
    module = dict(model.named_modules())[name]
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _expected(width: int, ratio: float, round_to: int | None) -> int:
    keep = round(width * (1 - ratio))
    return keep if round_to is None else max(round_to, round(keep / round_to) * round_to)


def test_uniform_is_a_registered_strategy_without_global_ranking():
    uniform = STRATEGIES["uniform"]
    assert uniform.kinds == {"conv", "linear", "attention"} and not uniform.global_ranking


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("ratio,steps,round_to", [(0.5, 1, None), (0.37, 3, None), (0.3, 1, 8)])
def test_uniform_prunes_every_layer_to_the_same_share(name, ratio, steps, round_to):
    build, shape = MODELS[name]
    model, x = build(), torch.randn(*shape)
    groups = prunable_layers(model, x)
    assert groups, "the model has prunable layers"
    result = prune(model, x, PruningConfig(strategy="uniform", ratio=ratio, steps=steps, round_to=round_to),
                   progress=False)
    slack = 1 if round_to is None else round_to
    for names in groups:
        for layer in names:
            before, after = _width(model, layer), _width(result.model, layer)
            assert abs(after - _expected(before, ratio, round_to)) <= slack, (layer, before, after)
    assert result.model(x).shape == model(x).shape
    assert result.params_after < result.params_before


@pytest.mark.parametrize("steps", [1, 2])
def test_layer_ratios_are_respected_per_layer_and_others_use_ratio(steps):
    model, x = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    config = PruningConfig(strategy="uniform", ratio=0.5, steps=steps,
                           layer_ratios={"features.3": 0.75, "classifier.0": 0.25})
    pruned = prune(model, x, config, progress=False).model
    widths = {n: _width(pruned, n) for n in ("features.0", "features.3", "features.7", "classifier.0")}
    assert widths == {"features.0": 16, "features.3": 16, "features.7": 64, "classifier.0": 96}


def test_layer_ratios_alone_at_ratio_zero_prune_only_the_named_layer():
    model, x = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    result = prune(model, x, PruningConfig(strategy="conv", ratio=0.0, layer_ratios={"features.7": 0.5}),
                   progress=False)
    assert [_width(result.model, n) for n in ("features.0", "features.3", "features.7", "classifier.0")] == \
        [32, 64, 64, 128]


def test_layer_ratios_on_a_coupled_resnet_group_prune_the_whole_group():
    model, x = _resnet18(), torch.randn(1, 3, 32, 32)
    pruned = prune(model, x, PruningConfig(strategy="uniform", ratio=0.0, layer_ratios={"layer1.0.conv2": 0.5}),
                   progress=False).model
    assert [_width(pruned, n) for n in ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.0.conv1")] == \
        [32, 32, 32, 64]
    assert pruned(x).shape == (1, 10)


def test_unknown_layer_name_is_a_one_line_error_naming_it_and_the_known_layers():
    model, x = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    for unknown in ("features.99", "classifier.3"):  # a typo, and the output layer (never pruned)
        with pytest.raises(PruningError) as err:
            prune(model, x, PruningConfig(strategy="uniform", layer_ratios={unknown: 0.5}), progress=False)
        message = str(err.value)
        assert "\n" not in message and repr(unknown) in message and "features.0" in message


def test_a_linear_layer_named_for_strategy_conv_is_unknown():
    model, x = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    with pytest.raises(PruningError, match="'classifier.0', not a prunable layer"):
        prune(model, x, PruningConfig(strategy="conv", layer_ratios={"classifier.0": 0.5}), progress=False)


def test_coupled_layers_given_different_ratios_are_refused():
    model, x = _resnet18(), torch.randn(1, 3, 32, 32)
    with pytest.raises(PruningError, match="coupled layers"):
        prune(model, x, PruningConfig(strategy="uniform", layer_ratios={"conv1": 0.5, "layer1.0.conv2": 0.25}),
              progress=False)


@pytest.mark.parametrize("bad", [{"features.0": 1.0}, {"features.0": -0.1}, {"features.0": "half"}, [("a",)],
                                 "features.0"])
def test_malformed_layer_ratios_are_refused_by_the_config(bad):
    with pytest.raises(PruningError):
        PruningConfig(strategy="uniform", layer_ratios=bad)


@pytest.mark.parametrize("strategy", ["global", "attention", "heads_mlp"])
def test_layer_ratios_need_a_strategy_that_prunes_layer_by_layer(strategy):
    with pytest.raises(PruningError, match="layer_ratios with strategy"):
        PruningConfig(strategy=strategy, layer_ratios={"features.0": 0.5})


def test_layer_ratios_are_canonical_hashable_and_round_trip_through_json():
    given = PruningConfig(strategy="uniform", ratio=0.5, layer_ratios={"b": 0.1, "a": 0.25})
    pairs = PruningConfig(strategy="uniform", ratio=0.5, layer_ratios=(("a", 0.25), ("b", 0.1)))
    assert given == pairs and hash(given) == hash(pairs)
    assert given.layer_ratios == (("a", 0.25), ("b", 0.1))
    assert Config.from_json(given.to_json()) == given
    plan = Plan(pruning=given)
    assert Plan.load(plan.to_dict()) == plan
    assert Plan.load(json.dumps(plan.to_dict())) == plan
    assert Plan.load(Plan().to_dict()).pruning.layer_ratios is None  # records without the field still load


def test_uniform_on_a_transformer_keeps_outputs_and_refuses_per_layer_widths():
    from .conftest import tiny_bert

    model = tiny_bert()
    ids = torch.randint(0, 100, (2, 16))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    result = prune(model, x, PruningConfig(strategy="uniform", ratio=0.5), progress=False)
    assert result.model(**x).logits.shape == (2, 3)
    assert result.params_after < result.params_before
    assert result.model.config.intermediate_size == 32
    name = prunable_layers(model, x)[0][0]
    with pytest.raises(PruningError, match="Hugging Face"):
        prune(model, x, PruningConfig(strategy="uniform", layer_ratios={name: 0.5}), progress=False)
    assert math.isfinite(float(result.model(**x).logits.detach().sum()))


class _HalfSum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :8] + x[:, 8:]


def test_layers_the_graph_cannot_follow_are_kept_whole_under_uniform_too():
    from autocompress.pruning import PruningWarning

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), _HalfSum(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.warns(PruningWarning, match=r"left unpruned \(pruning them breaks the model"):
        result = prune(model, x, PruningConfig(strategy="uniform", ratio=0.5, layer_ratios={"0": 0.5}),
                       progress=False)
    assert result.model(x).shape == (2, 4)
    assert result.model[0].out_channels == 16 and result.model[3].out_channels == 4
