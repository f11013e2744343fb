"""The search space leaves out pruning strategies that find no layer to prune in the user's model, and weighs
the sensitivity dial's widths by the study's first cost."""

import torch
from torch import nn

from autocompress.study.space import unreachable_strategies


def _cnn(hidden: bool) -> nn.Module:
    head = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10)] if hidden else [nn.Linear(8, 10)]
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head)


def test_a_cnn_whose_only_linear_layer_is_its_classifier_cannot_take_the_linear_strategy():
    x = torch.randn(2, 1, 8, 8)
    assert unreachable_strategies(_cnn(hidden=False), x) == ("linear",)
    assert unreachable_strategies(_cnn(hidden=True), x) == ()


def test_the_space_drops_them_and_says_why():
    from autocompress.profile import profile_model
    from autocompress.requirements import Requirements
    from autocompress.study.space import SearchSpace

    x = torch.randn(2, 1, 8, 8)
    profile = profile_model(_cnn(hidden=False), x)
    space = SearchSpace.for_model(profile, Requirements(objective="size"), seed_ratio=0.5,
                                  unreachable=("linear",))
    assert "linear" not in space.strategies and "conv" in space.strategies
    assert any(n.startswith("pruning strategy linear left out") for n in space.notes)


def test_the_dial_weighs_widths_by_the_first_objectives_cost():
    from autocompress.profile import profile_model
    from autocompress.pruning import measure_sensitivity
    from autocompress.requirements import Requirements
    from autocompress.study.space import SearchSpace

    torch.manual_seed(0)
    model, x = _cnn(hidden=True), torch.randn(2, 1, 8, 8)
    scan = measure_sensitivity(model, x, [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]).to_dict()
    profile = profile_model(model, x)
    spaces = {o: SearchSpace.for_model(profile, Requirements(objective=o), seed_ratio=0.5, sensitivity=scan,
                                       objectives=(o, "size")) for o in ("size", "flops", "latency")}
    assert {o: s.width_cost for o, s in spaces.items()} == {"size": "params", "flops": "flops", "latency": "flops"}
    again = SearchSpace.from_dict(spaces["latency"].to_dict())
    assert again.width_cost == "flops" and again.widths(0.6, 0.5) == spaces["latency"].widths(0.6, 0.5)
    assert spaces["size"].widths(0.6, 0.5) != spaces["flops"].widths(0.6, 0.5)
