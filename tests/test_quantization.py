"""Quantization modes on the digits CNN: size, accuracy, the caller's model, the gpu skip, torch.ao canary."""

import warnings
from itertools import islice

import pytest
import torch
from torch import nn

from autocompress import quantization as Q
from autocompress.config import Config
from autocompress.errors import QuantizationError
from autocompress.profile import (count_flops, evaluate, is_quantized, layer_breakdown, profile_model,
                                  serialized_size_bytes)


@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks.digits import task

    t = task()
    return t, evaluate(t.model, t.eval_loader(), t.resolved_metric)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return (after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
            and Q.quantization_info(model) is None and not is_quantized(model))


def test_torch_ao_api_is_still_there():
    # Fails loudly the day torch removes torch.ao.quantization: these are the exact functions the module uses.
    from torch.ao.quantization import (QuantWrapper, convert, get_default_qat_qconfig,  # noqa: F401
                                       get_default_qat_qconfig_mapping, get_default_qconfig,
                                       get_default_qconfig_mapping, prepare, prepare_qat, quantize_dynamic)
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx  # noqa: F401

    assert all(callable(fn) for fn in (convert, get_default_qat_qconfig, get_default_qat_qconfig_mapping,
                                       get_default_qconfig, get_default_qconfig_mapping, prepare, prepare_qat,
                                       quantize_dynamic, convert_fx, prepare_fx, prepare_qat_fx, QuantWrapper))
    assert all(callable(fn) for fn in Q.ENGINE_API.values())
    assert "x86" in torch.backends.quantized.supported_engines


def test_configs_round_trip_and_every_mode_has_a_handler():
    for mode in Q.MODES:
        config = Q.quantization_config(mode)
        assert Config.from_json(config.to_json()) == config and config.MODE == mode
    assert sorted(Q.QUANTIZERS.kinds()) == sorted(f"quantization.{m}" for m in Q.MODES)
    assert Q.quantization_config("static", calibration_batches=3).calibration_batches == 3
    with pytest.raises(QuantizationError, match="one of none, dynamic, static, qat"):
        Q.quantization_config("int4")
    with pytest.raises(QuantizationError, match="one of x86"):
        Q.StaticQuantization(backend="tpu")


def test_static_is_smaller_keeps_accuracy_and_measures_like_float(digits):
    t, accuracy = digits
    before = _state(t.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Q.quantize(t.model, Q.StaticQuantization(calibration_batches=4), t.train_loader(),
                            t.example_input, progress=False)
        result.model(t.example_input)
    leaked = [str(w.message)[:80] for w in caught if "quantiz" in str(w.message).lower()]
    assert not leaked, leaked
    assert _unchanged(t.model, before)
    q = result.model
    assert is_quantized(q) and result.graph_mode == "fx" and result.calibration_batches == 4
    ratio = serialized_size_bytes(t.model) / serialized_size_bytes(q)
    assert ratio >= 3.5, ratio
    profile = profile_model(q, t.example_input, t.eval_loader(), t.resolved_metric, device="cpu")
    assert profile.metric["value"] >= accuracy - 0.01
    # Same MACs as the float architecture, less the BatchNorm layers folded into the convolutions.
    bn_macs = sum(r.flops for r in layer_breakdown(t.model, t.example_input) if r.type == "BatchNorm2d")
    assert profile.flops == count_flops(t.model, t.example_input) - bn_macs > 0
    assert 0 < profile.params <= sum(p.numel() for p in t.model.parameters())


def test_dynamic_quantizes_linear_layers_only(digits):
    t, accuracy = digits
    before = _state(t.model)
    result = Q.quantize(t.model, Q.DynamicQuantization(), example_input=t.example_input)
    q = result.model
    assert _unchanged(t.model, before)
    kinds = {type(m).__module__ for m in q.modules() if isinstance(m, nn.Module)}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    assert sum(isinstance(m, nn.Conv2d) for m in q.modules()) == 3  # convolutions stay float
    # The classifier holds 42% of the weights, so int8 Linear layers give about 1.44x, not 4x.
    ratio = serialized_size_bytes(t.model) / serialized_size_bytes(q)
    assert 1.3 < ratio < 2.0, ratio
    assert evaluate(q, t.eval_loader(), t.resolved_metric) >= accuracy - 0.01
    assert count_flops(q, t.example_input) == count_flops(t.model, t.example_input)


def test_qat_prepare_train_convert(digits):
    t, accuracy = digits
    before = _state(t.model)
    prepared = Q.prepare_qat(t.model, Q.QATQuantization(), t.example_input)
    assert prepared.training and not is_quantized(prepared)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3, momentum=0.9)
    for x, y in islice(t.train_loader(), 6):  # a short plain loop stands in for the distillation loop
        optimizer.zero_grad()
        nn.functional.cross_entropy(prepared(x), y).backward()
        optimizer.step()
    trained = _state(prepared)
    q = Q.convert(prepared)
    assert _unchanged(t.model, before)
    assert all(torch.equal(prepared.state_dict()[k], v) for k, v in trained.items())  # convert copies
    assert is_quantized(q) and Q.quantization_info(q)["mode"] == "qat"
    assert serialized_size_bytes(t.model) / serialized_size_bytes(q) >= 3.5
    assert evaluate(q, t.eval_loader(), t.resolved_metric) >= accuracy - 0.01
    with pytest.raises(QuantizationError, match="prepare_qat"):
        Q.convert(t.model)
    with pytest.raises(QuantizationError, match="train_fn"):
        Q.quantize(t.model, Q.QATQuantization(), example_input=t.example_input)


def test_gpu_backend_skips_and_records_why(digits):
    t, _ = digits
    result = Q.quantize(t.model, Q.StaticQuantization(backend="gpu"), t.train_loader(), t.example_input)
    assert result.skipped_reason and "CPU only" in result.skipped_reason
    assert not is_quantized(result.model) and result.model is not t.model
    assert torch.equal(result.model(t.example_input), t.model(t.example_input))
    converted = Q.convert(Q.prepare_qat(t.model, Q.QATQuantization(backend="gpu")))
    assert not is_quantized(converted)
    assert Q.quantization_info(converted)["skipped_reason"] == Q.GPU_SKIP_REASON


def test_static_needs_calibration_data(digits):
    t, _ = digits
    with pytest.raises(QuantizationError, match="calibration_loader"):
        Q.quantize(t.model, Q.StaticQuantization(), example_input=t.example_input)


class _Untraceable(nn.Module):
    """Control flow on a tensor's shape: torch.fx cannot trace it, eager mode can quantize it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        if x.shape[0] > 0:
            x = torch.flatten(x, 1)
        return self.fc(x)


def test_untraceable_model_falls_back_to_eager_mode():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    data = [(torch.rand(16, 1, 8, 8), torch.zeros(16)) for _ in range(2)]
    result = Q.quantize(model, Q.StaticQuantization(calibration_batches=2), data, data[0][0][:1], progress=False)
    assert result.graph_mode == "eager" and is_quantized(result.model)
    x = data[0][0]
    assert torch.allclose(result.model(x), model(x), atol=0.2)
    restored = Q.requantize(model, Q.quantization_info(result.model), x[:1])
    restored.load_state_dict(result.model.state_dict())
    assert torch.equal(restored(x), result.model(x))


def test_qat_convert_never_uses_observers_that_saw_no_data(digits):
    """QAT with zero training epochs: convert() calibrates on the loader it is given, or refuses in one line."""
    t, accuracy = digits
    prepared = Q.prepare_qat(t.model, Q.QATQuantization(), t.example_input)
    with pytest.raises(QuantizationError) as info:
        Q.convert(prepared)
    unobserved, total = Q.observer_counts(prepared)
    assert total > 0 and unobserved == total  # prepare_qat itself runs no data through the observers
    activations = Q.observer_counts(prepared, activations_only=True)[1]
    message = str(info.value)
    assert "\n" not in message and f"whose {activations} activation observers saw no data" in message and "calibration_loader=" in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = Q.convert(prepared, calibration_loader=t.train_loader(), calibration_batches=4)
    assert not [w for w in caught if "must run observer" in str(w.message)]  # every range came from data
    assert Q.observer_counts(prepared) == (total, total)  # convert worked on a copy
    assert is_quantized(q) and evaluate(q, t.eval_loader(), t.resolved_metric) >= accuracy - 0.01
    # Through quantize(): a train_fn that trains nothing, with and without calibration data.
    with pytest.raises(QuantizationError, match="saw no data"):
        Q.quantize(t.model, Q.QATQuantization(), example_input=t.example_input, train_fn=lambda m: None)
    calibrated = Q.quantize(t.model, Q.QATQuantization(), t.train_loader(), t.example_input, train_fn=lambda m: None,
                            progress=False).model
    assert evaluate(calibrated, t.eval_loader(), t.resolved_metric) >= accuracy - 0.01


def test_eager_qat_prepare_leaves_observers_to_data_and_warns_about_unused_ones():
    # Eager mode checks that the prepared model runs; that check must not feed the observers its one example.
    torch.manual_seed(0)
    model = _Untraceable().eval()
    model.unused = nn.Linear(3, 3)  # never called by forward(): its observers can never see data
    x = torch.rand(16, 1, 8, 8)
    prepared = Q.prepare_qat(model, Q.QATQuantization(), x[:1])
    assert Q.quantization_info(prepared)["graph_mode"] == "eager"
    with pytest.raises(QuantizationError, match="saw no data"):
        Q.convert(prepared)
    unobserved, total = Q.observer_counts(prepared)
    assert unobserved == total > 0
    with torch.no_grad():
        prepared(x)  # one training-like forward: every used observer sees data
    assert Q.observer_counts(prepared)[0] == 2  # the unused layer's weight and output observers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert is_quantized(Q.convert(prepared))
    # torch.ao's own notice about them reaches the user (it is no longer filtered).
    assert any("must run observer" in str(w.message) for w in caught)


def test_qat_records_with_the_dropped_epochs_field_still_load():
    # `epochs` never set the training length (the distillation loop's max_epochs does); old plans hold it.
    old = {"kind": "quantization.qat", "version": 1, "backend": "x86", "epochs": 3}
    config = Config.from_dict(old)
    assert config == Q.QATQuantization() and config.MODE == "qat"
    assert "epochs" not in Q.QATQuantization().to_dict()
    assert Config.from_json(config.to_json()) == config
