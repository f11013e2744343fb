import copy

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

from autocompress.metrics import resolve_metric
from autocompress.profile import (count_flops, count_params, detect_arch, evaluate, layer_breakdown,
                                  measure_latency, profile_model, serialized_size_bytes)


def test_linear_params_and_macs_are_exact():
    model = nn.Linear(100, 10)
    x = torch.randn(1, 100)
    assert count_params(model) == 100 * 10 + 10
    assert count_flops(model, x) == 100 * 10


def test_conv_params_and_macs_are_exact():
    model = nn.Conv2d(3, 8, kernel_size=3)  # 10x10 input, no padding -> 8x8 output
    x = torch.randn(1, 3, 10, 10)
    assert count_params(model) == 8 * 3 * 3 * 3 + 8
    assert count_flops(model, x) == 8 * 8 * 8 * (3 * 3 * 3)


def test_macs_are_per_sample_whatever_the_example_batch():
    model = nn.Linear(100, 10)
    assert count_flops(model, torch.randn(7, 100)) == 1000


def test_layer_breakdown_sums_to_totals():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(1, 1, 8, 8)
    rows = {r.type: r for r in layer_breakdown(model, x)}
    assert rows["Conv2d"].params == 4 * 9 + 4 and rows["Conv2d"].flops == 4 * 6 * 6 * 9
    assert rows["Linear"].params == 144 * 5 + 5 and rows["Linear"].flops == 144 * 5
    assert "Sequential" not in rows  # a container is not a layer
    assert sum(r.params for r in rows.values()) == count_params(model)
    assert sum(r.flops for r in rows.values()) == count_flops(model, x)


def test_size_agrees_with_parameter_bytes_for_float_model():
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert abs(serialized_size_bytes(model) - param_bytes) / param_bytes < 0.05


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class _MHAClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.attn(x, x, x)
        return self.head(out.mean(1))


def test_arch_detection_by_module_types():
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10)
    assert detect_arch(_MLP()) == "mlp"
    assert detect_arch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) == "cnn"
    assert detect_arch(_MHAClassifier()) == "transformer"
    assert detect_arch(bert) == "transformer"
    assert detect_arch(vit) == "transformer"


def test_attention_macs_are_counted_for_multihead_attention():
    model = _MHAClassifier()
    x = torch.randn(1, 5, 16)
    total = count_flops(model, x)
    projections = 5 * 16 * 16 * 3 + 5 * 16 * 16  # q, k, v and out projections
    attention = 5 * 5 * 16 * 2  # Q·Kᵀ and A·V over all heads
    head = 16 * 3
    assert total == projections + attention + head


def test_latency_requires_warmup_and_enough_runs():
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError):
        measure_latency(model, torch.randn(1, 4), warmup=1)
    assert measure_latency(model, torch.randn(1, 4), batch=64) > 0


def test_evaluate_accuracy_on_known_predictions():
    class Fixed(nn.Module):
        def forward(self, x):
            return x  # the inputs are the logits

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
    targets = torch.tensor([0, 1, 1, 1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(logits, targets), batch_size=3)
    assert evaluate(Fixed(), loader, resolve_metric("accuracy")) == pytest.approx(0.75)


def test_profile_does_not_modify_the_model():
    model = _MLP().train()
    before = copy.deepcopy(model.state_dict())
    profile = profile_model(model, torch.randn(1, 8), device="cpu")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert profile.params == count_params(model) == 8 * 16 + 16 + 16 * 3 + 3
    assert profile.arch_type == "mlp"
    assert set(profile.latency_ms) == {"batch_1", "batch_64"}


def test_quantized_recurrent_and_embedding_layers_keep_their_parameter_count():
    # Dynamic int8 LSTMs keep their weights in per-gate packed params: they used to count as 0 parameters.
    import warnings

    from autocompress.profile import count_params

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm, self.head = nn.Embedding(100, 16), nn.LSTM(16, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.lstm(self.embed(x))[0])

    model = Tagger()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
        embedding = torch.ao.nn.quantized.Embedding.from_float(
            _with_qconfig(nn.Embedding(100, 16), torch.ao.quantization.float_qparams_weight_only_qconfig))
    assert count_params(quantized) == count_params(model) == 100 * 16 + 4 * 8 * (16 + 8 + 2) + 8 * 4 + 4
    assert count_params(embedding) == 100 * 16


def _with_qconfig(module, qconfig):
    module.qconfig = qconfig
    return module


def test_rapl_energy_is_measured_in_eval_mode(monkeypatch):
    # Energy is an inference cost: dropout and BatchNorm must run as deployed, whatever mode the caller left.
    from autocompress import profile as profile_module

    counter = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(profile_module, "_rapl_energy_uj", lambda: next(counter))
    modes = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            modes.append(self.training)
            return self.fc(x)

    model = Recorder().train()
    energy = profile_module.measure_energy(model, torch.rand(1, 4), latency_ms=1.0, flops=8, batch=4, threads=1)
    assert energy["method"] == "rapl" and modes and not any(modes)
    assert model.training  # the caller's mode is restored


def test_timing_pins_glibcs_allocator_thresholds():
    # In a fresh process glibc served batch-64 activations with mmap (page faults on every pass): torch fp32 on
    # reviews took 551-594 ms, 452 ms once the process had trained; with fixed thresholds, 468-475 ms either way.
    import platform

    from autocompress.profile import fixed_threads, steady_allocator

    steady_allocator.cache_clear()
    with fixed_threads(1):
        pass
    assert steady_allocator.cache_info().misses == 1  # every timing context goes through it
    if platform.libc_ver()[0] == "glibc":
        assert steady_allocator() is True
