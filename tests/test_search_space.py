"""The search space leaves out pruning strategies that find no layer to prune in the user's model."""

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
