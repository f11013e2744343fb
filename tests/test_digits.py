import torch

from autocompress.tasks import digits


def test_split_is_fixed_and_stratified():
    train, evaluation = digits.load_split()
    assert len(train) == 1347 and len(evaluation) == 450
    again_train, _ = digits.load_split()
    assert torch.equal(train.tensors[0], again_train.tensors[0])
    counts = torch.bincount(evaluation.tensors[1], minlength=10).float()
    expected = torch.bincount(torch.cat([train.tensors[1], evaluation.tensors[1]]), minlength=10).float() * 0.25
    assert torch.all((counts - expected).abs() <= 1.0)  # each class keeps its share in the eval set


def test_training_is_deterministic_for_a_seed():
    train, _ = digits.load_split()
    a = digits.train_model(train, seed=3, epochs=1, progress=False)
    b = digits.train_model(train, seed=3, epochs=1, progress=False)
    c = digits.train_model(train, seed=4, epochs=1, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_cached_model_reaches_97_percent_and_reloads_without_retraining(monkeypatch, isolated_cache):
    task = digits.task()
    x, y = task.eval_data.tensors
    with torch.no_grad():
        acc = (task.model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.97
    assert list(isolated_cache.glob("digits_cnn_v*_seed0.pt"))

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(digits, "train_model", fail)
    again = digits.cached_model()
    assert all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), again.state_dict().values()))


def test_corrupt_cache_is_retrained_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    path = tmp_path / f"digits_cnn_v{digits.MODEL_VERSION}_seed7.pt"
    path.write_bytes(b"not a checkpoint")
    calls = []
    monkeypatch.setattr(digits, "train_model",
                        lambda train, seed, progress: calls.append(seed) or digits.DigitsCNN().eval())
    digits.cached_model(seed=7)
    assert calls == [7]
    assert torch.load(path, weights_only=True)  # replaced by a readable state dict
