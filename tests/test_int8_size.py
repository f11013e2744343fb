"""Static int8 of a pruned model is worth its name (issue 14): per-tensor weight scales on narrow layers, the
size breakdown, the record round-trip and an archive of a per-tensor int8 model that reloads exactly."""

import json
import zipfile

import pytest
import torch

from autocompress import export as E
from autocompress import quantization as Q
from autocompress.config import Config
from autocompress.errors import QuantizationError
from autocompress.profile import evaluate, serialized_size_bytes
from autocompress.pruning import PruningConfig, prune
from autocompress.quantization.size import prefers_per_tensor, size_breakdown


@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks.digits import task

    return task()


def _finetune(model: torch.nn.Module, digits, epochs: int = 2) -> torch.nn.Module:
    # Pruning without retraining breaks the model (about 0.1-0.4 accuracy); accuracy comparisons need a trained one.
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for x, y in digits.train_loader():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def pruned(digits):
    """The digits CNN with half of every convolution's channels removed (16, 32 and 64 left), fine-tuned."""
    config = PruningConfig(strategy="conv", ratio=0.5)
    return _finetune(prune(digits.model, digits.example_input, config, progress=False).model, digits)


def _int8(digits, model, granularity: str) -> torch.nn.Module:
    config = Q.StaticQuantization(weight_granularity=granularity)
    return Q.quantize(model, config, digits.train_loader(), digits.example_input, progress=False).model


@pytest.fixture(scope="module")
def per_channel(digits, pruned):
    return _int8(digits, pruned, "per_channel")


@pytest.fixture(scope="module")
def auto(digits, pruned):
    return _int8(digits, pruned, "auto")


def _per_tensor(model: torch.nn.Module) -> list[bool]:
    """For each int8 conv/linear layer: whether its weight has one scale."""
    return [m.weight().qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
            for m in model.modules() if callable(getattr(m, "weight", None))]


def test_pruned_static_int8_is_3_5x_smaller_than_pruned_float_at_the_same_accuracy(digits, pruned, per_channel,
                                                                                      auto):
    ratio = serialized_size_bytes(pruned) / serialized_size_bytes(auto)
    assert ratio >= 3.5, ratio
    assert serialized_size_bytes(auto) < serialized_size_bytes(per_channel)
    assert any(_per_tensor(auto)) and not any(_per_tensor(per_channel))
    loader, metric = digits.eval_loader(), digits.resolved_metric
    assert evaluate(auto, loader, metric) >= evaluate(per_channel, loader, metric) - 0.005


def test_size_breakdown_adds_up_and_per_tensor_layers_drop_their_scales(pruned, per_channel, auto):
    for model in (pruned, per_channel, auto):
        parts = size_breakdown(model)
        assert parts.total == serialized_size_bytes(model)
        assert parts.total == sum(v for k, v in parts.to_dict().items() if k != "total")
        assert min(parts.to_dict().values()) >= 0
    channel, tensor = size_breakdown(per_channel), size_breakdown(auto)
    assert channel.scales > tensor.scales and channel.zero_points > tensor.zero_points
    assert channel.weights == tensor.weights  # the same int8 elements, fewer scales


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor", "auto"])
def test_static_records_round_trip(granularity):
    config = Q.StaticQuantization(calibration_batches=3, weight_granularity=granularity)
    assert Config.from_json(config.to_json()) == config
    assert Q.quantization_config("static", weight_granularity=granularity) == config.replace(calibration_batches=8)


def test_static_records_written_before_the_option_stay_per_channel():
    old = {"kind": "quantization.static", "version": 1, "backend": "x86", "calibration_batches": 4}
    assert Config.from_dict(old) == Q.StaticQuantization(calibration_batches=4, weight_granularity="per_channel")


def test_a_bad_granularity_is_a_one_line_error():
    with pytest.raises(QuantizationError) as caught:
        Q.StaticQuantization(weight_granularity="per_row")
    message = str(caught.value)
    assert "\n" not in message and "per_row" in message and "per_tensor" in message


def test_archive_of_a_per_tensor_int8_model_reloads_with_identical_outputs(digits, pruned, tmp_path):
    quantized = _int8(digits, pruned, "per_tensor")
    assert all(_per_tensor(quantized))
    result = E.export_model(quantized, "autocompress", tmp_path / "pt.acz", digits.example_input,
                            digits.eval_loader(), base_model=digits.model)
    with zipfile.ZipFile(result.path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["quantization"]["config"]["weight_granularity"] == "per_tensor"
    rebuilt = E.load(result.path, base_model=digits.model)
    assert all(_per_tensor(rebuilt)) and len(_per_tensor(rebuilt)) == 5  # 3 convolutions, 2 linear layers
    x = next(iter(digits.eval_loader()))[0]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), quantized(x))


def test_auto_keeps_per_channel_scales_on_wide_layers_and_on_uneven_channels():
    torch.manual_seed(0)
    wide = torch.randn(64, 256, 3, 3)  # 16 bytes of scales per 2,304 int8 weights: 0.7%, not worth a bit
    assert not prefers_per_tensor(wide)
    narrow = torch.randn(8, 6, 3, 3)  # 16 bytes per 54 weights: 30%
    assert prefers_per_tensor(narrow)
    uneven = narrow * torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 20]).view(8, 1, 1, 1)  # one channel 20x the others
    assert not prefers_per_tensor(uneven)
