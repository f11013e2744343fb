import pytest
import torch

from autocompress.errors import MetricError
from autocompress.metrics import accuracy, f1_macro, resolve_metric


def test_accuracy():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_f1_macro_matches_hand_computation():
    # predictions: 0, 0, 1, 1; targets: 0, 1, 1, 1 -> class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=2/3 F1=0.8
    logits = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    assert f1_macro(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)


def test_unknown_metric_is_one_line_error():
    with pytest.raises(MetricError) as info:
        resolve_metric("accurasy")
    message = str(info.value)
    assert "unknown metric 'accurasy'" in message and "accuracy, f1" in message and "\n" not in message


def test_callable_metric_keeps_direction():
    def mse(logits, targets):
        return float(((logits.squeeze(-1) - targets) ** 2).mean())

    metric = resolve_metric(mse, higher_is_better=False)
    assert metric.name == "mse" and not metric.higher_is_better and not metric.classification
