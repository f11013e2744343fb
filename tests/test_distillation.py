"""Knowledge distillation: losses, stop modes, early stopping, teacher cache, callback, frozen and QAT students.

Most tests use a tiny Gaussian-blobs task and an MLP (milliseconds per epoch); the acceptance test recovers a
50%-pruned digits CNN.
"""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset, TensorDataset

from autocompress.config import Config
from autocompress.distillation import (
    CombinedDistillation, DistillationConfig, DistillResult, FineTune, HardDistillation, SoftDistillation,
    compute_teacher_outputs, distill, distillation_loss, has_random_transform, soft_loss, technique_from_name,
)
from autocompress.errors import ConfigError, DistillationError
from autocompress.profile import evaluate, fixed_threads, predict
from autocompress.task import Task


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from two threads, and on a shared 2-core machine two contending OpenMP threads
    run many times slower than one."""
    with fixed_threads(1):
        yield


def blobs(n_train: int = 96, n_eval: int = 48, classes: int = 3, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.2

    def make(n: int) -> TensorDataset:
        y = torch.arange(n) % classes
        return TensorDataset(centers[y] + torch.randn(n, dim, generator=g), y)

    return make(n_train), make(n_eval)


def mlp(seed: int = 0, dim: int = 8, classes: int = 3) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, classes))


def tiny_task(metric="accuracy", higher_is_better: bool = True, model: nn.Module | None = None, train=None) -> Task:
    train_set, eval_set = blobs()
    return Task(name="blobs", model=model if model is not None else mlp(1), train_data=train or train_set,
                eval_data=eval_set, example_input=eval_set.tensors[0][:1], metric=metric,
                higher_is_better=higher_is_better, batch_size=16)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class ScriptedMetric:
    """Returns scripted values call by call and records the logits it was shown (to identify models)."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.logits = list(values), []
        self.__name__ = "scripted"

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        self.logits.append(logits.clone())
        return self.values[len(self.logits) - 1]


class CountingTeacher(nn.Module):
    """Wraps a model and counts the samples it is run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.samples = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return self.model(x)


# --------------------------------------------------------------------------------------------- losses
def test_soft_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temp = 2.0
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        zs = sum(math.exp(v / temp) for v in srow)
        zt = sum(math.exp(v / temp) for v in trow)
        q = [math.exp(v / temp) / zs for v in srow]
        p = [math.exp(v / temp) / zt for v in trow]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))  # KL(teacher ‖ student)
    expected = expected / 2 * temp * temp  # batch mean, times T²
    assert soft_loss(s, t, temp).item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0.1


def test_soft_loss_is_zero_for_equal_logits_and_scales_as_t_squared():
    s = torch.tensor([[0.3, -1.2, 2.0, 0.1]])
    t = torch.tensor([[1.0, 0.5, -0.5, 0.0]])
    assert soft_loss(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    base = soft_loss(s, t, 1.0).item()
    for temp in (2.0, 5.0):
        # Same softened distributions (logits scaled by T), so only the T² factor differs.
        assert soft_loss(s * temp, t * temp, temp).item() == pytest.approx(temp * temp * base, rel=1e-5)


def test_combined_is_alpha_hard_plus_one_minus_alpha_soft():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    hard = F.cross_entropy(s, y).item()
    soft = soft_loss(s, t, 3.0).item()
    combined = distillation_loss(CombinedDistillation(temperature=3.0, alpha=0.3), s, y, t).item()
    assert combined == pytest.approx(0.3 * hard + 0.7 * soft, rel=1e-6)
    assert distillation_loss(HardDistillation(), s, y, t).item() == pytest.approx(hard)
    assert distillation_loss(FineTune(), s, y).item() == pytest.approx(hard)
    with pytest.raises(DistillationError, match="without teacher outputs"):
        distillation_loss(SoftDistillation(), s, y)


# --------------------------------------------------------------------------------------------- configs
def test_config_round_trips_through_json_and_rejects_bad_values():
    for technique in (FineTune(), HardDistillation(), SoftDistillation(temperature=2.5),
                      CombinedDistillation(temperature=6.0, alpha=0.25)):
        config = DistillationConfig(technique=technique, stop="threshold", max_epochs=7, patience=None, lr=3e-4,
                                    optimizer="sgd", batch_size=32, target_metric=0.97, cache_teacher=False, seed=5)
        assert Config.from_json(config.to_json()) == config
    assert technique_from_name("combined", alpha=0.2) == CombinedDistillation(alpha=0.2)
    with pytest.raises(ConfigError, match="without target_metric"):  # the pipeline derives it; distill needs it
        distill(mlp(2), tiny_task(), DistillationConfig(stop="threshold"), device="cpu", progress=False)
    with pytest.raises(ConfigError, match="alpha 1.5"):
        CombinedDistillation(alpha=1.5)
    with pytest.raises(ConfigError, match="temperature 0"):
        SoftDistillation(temperature=0)
    with pytest.raises(ConfigError, match="technique 'bogus'"):
        technique_from_name("bogus")


# --------------------------------------------------------------------------------------------- stopping
def test_epochs_mode_runs_exactly_max_epochs_without_patience():
    task = tiny_task()
    result = distill(mlp(2), task, DistillationConfig(max_epochs=4, patience=None, lr=1e-2), device="cpu",
                     progress=False)
    assert result.epochs_run == 4 and len(result.history) == len(result.train_loss) == 4
    assert result.stopped_because == "max_epochs"
    assert result.best_metric == max([result.initial_metric, *result.history])


def test_threshold_mode_stops_at_the_epoch_that_reaches_the_target_and_returns_that_model():
    task = tiny_task()
    base = DistillationConfig(max_epochs=8, patience=None, lr=3e-3, seed=1)
    free = distill(mlp(2), task, base, device="cpu", progress=False)
    values = [free.initial_metric, *free.history]
    # A target first reached at a later epoch (a new record, above everything before it).
    records = [e for e in range(2, len(values)) if values[e] > max(values[:e])]
    assert records, f"the tiny task should improve over epochs: {values}"
    epoch = records[0]
    result = distill(mlp(2), task, base.replace(stop="threshold", target_metric=values[epoch]), device="cpu",
                     progress=False)
    assert result.stopped_because == "target_reached"
    assert result.epochs_run == epoch and result.target_epoch == epoch and result.reached_target
    assert result.best_metric == values[epoch] and result.best_epoch == epoch
    assert evaluate(result.model, task.eval_loader(), task.resolved_metric) == pytest.approx(values[epoch])


def test_a_deployed_measure_replaces_the_float_metric_for_the_stop_and_the_best_epoch():
    task = tiny_task()
    seen: list[bool] = []
    values = iter([0.2, 0.5, 0.9, 0.95])  # before training, then epochs 1, 2, 3

    def measure(model: nn.Module) -> float:
        seen.append(model.training)
        return next(values)

    config = DistillationConfig(max_epochs=6, patience=None, lr=1e-2, stop="threshold", target_metric=0.9)
    result = distill(mlp(2), task, config, device="cpu", progress=False, measure=measure)
    # the float model of the tiny task scores far from these scripted values: the stop saw the measure's
    assert result.initial_metric == 0.2 and result.history == (0.5, 0.9)
    assert result.stopped_because == "target_reached" and result.target_epoch == 2 and result.best_metric == 0.9
    assert len(seen) == 3


def test_patience_stops_on_a_plateau_and_keeps_the_initial_model():
    task = tiny_task()
    student = mlp(2)
    before = state(student)
    result = distill(student, task, DistillationConfig(max_epochs=10, patience=3, lr=0.0), device="cpu",
                     progress=False)
    assert result.stopped_because == "patience" and result.epochs_run == 3
    assert result.best_epoch == 0 and result.history == (result.initial_metric,) * 3
    assert same_state(state(result.model), before)
    assert same_state(state(student), before) and result.model is not student


@pytest.mark.parametrize("higher_is_better, values, best", [
    (True, [0.2, 0.5, 0.9, 0.6, 0.4, 0.3, 0.95], 2),
    (False, [0.9, 0.5, 0.1, 0.6, 0.7, 0.8, 0.05], 2),
])
def test_the_best_model_is_returned_not_the_last(higher_is_better, values, best):
    metric = ScriptedMetric(values)
    task = tiny_task(metric=metric, higher_is_better=higher_is_better)
    result = distill(mlp(2), task, DistillationConfig(max_epochs=10, patience=3, lr=5e-2), device="cpu",
                     progress=False)
    assert result.stopped_because == "patience" and result.epochs_run == best + 3
    assert result.best_epoch == best and result.best_metric == values[best]
    logits, _ = predict(result.model, task.eval_loader())
    assert torch.allclose(logits, metric.logits[best])
    assert not torch.allclose(logits, metric.logits[-1])  # training did move the weights after the best epoch


def test_callback_aborts_and_the_reason_is_recorded():
    seen = []

    def abort(epoch: int, metric: float) -> str | None:
        seen.append((epoch, metric))
        return "hopeless: below the pace to reach the target" if epoch == 2 else None

    result = distill(mlp(2), tiny_task(), DistillationConfig(max_epochs=6, patience=None), device="cpu",
                     callback=abort, progress=False)
    assert result.stopped_because == "callback" and result.stop_detail.startswith("hopeless")
    assert result.epochs_run == 2 and seen == list(enumerate(result.history, start=1))
    assert distill(mlp(2), tiny_task(), DistillationConfig(max_epochs=3), device="cpu", progress=False,
                   callback=lambda e, m: True).epochs_run == 1


def test_a_non_finite_loss_stops_as_diverged_and_returns_the_model_before_it():
    task = tiny_task()
    task.loss = lambda logits, targets: logits.sum() * float("nan")
    student = mlp(2)
    result = distill(student, task, DistillationConfig(max_epochs=5), device="cpu", progress=False)
    assert result.stopped_because == "diverged" and result.epochs_run == 1 and result.best_epoch == 0
    assert same_state(state(result.model), state(student))


def test_same_seed_same_result():
    task = tiny_task()
    config = DistillationConfig(technique=CombinedDistillation(), max_epochs=2, patience=None, lr=1e-2, seed=3)
    a = distill(mlp(2), task, config, teacher=mlp(7), device="cpu", progress=False)
    b = distill(mlp(2), task, config, teacher=mlp(7), device="cpu", progress=False)
    assert a.history == b.history and same_state(state(a.model), state(b.model))


# --------------------------------------------------------------------------------------------- teacher
def test_teacher_runs_once_per_sample_when_cached_and_pairs_outputs_with_their_samples():
    task = tiny_task()
    n = len(task.train_data)
    config = DistillationConfig(technique=SoftDistillation(temperature=2.0), max_epochs=3, patience=None, lr=1e-2)
    cached_teacher = CountingTeacher(mlp(7))
    cached = distill(mlp(2), task, config, teacher=cached_teacher, device="cpu", progress=False)
    assert cached.teacher_cached and cached_teacher.samples == n

    live_teacher = CountingTeacher(mlp(7))
    live = distill(mlp(2), task, config.replace(cache_teacher=False), teacher=live_teacher, device="cpu",
                   progress=False)
    assert not live.teacher_cached and live_teacher.samples == 3 * n
    # Same shuffled order, same teacher outputs per sample: cached and live runs train the same weights. A
    # mismatched pairing (outputs gathered by batch position, not sample index) would not.
    for k, v in state(cached.model).items():
        assert torch.allclose(v, state(live.model)[k], atol=1e-5), k

    shared_teacher = CountingTeacher(mlp(7))
    outputs = compute_teacher_outputs(shared_teacher, task, device="cpu")
    reused = distill(mlp(2), task, config, teacher=shared_teacher, teacher_outputs=outputs, device="cpu",
                     progress=False)
    assert shared_teacher.samples == n and reused.history == cached.history


class KeywordModel(nn.Module):
    """A Hugging Face-style model: keyword inputs, an output object with .logits."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.net, self.samples = mlp(seed), 0

    def forward(self, features: torch.Tensor):
        self.samples += features.shape[0]
        return type("Output", (), {"logits": self.net(features)})()


class KeywordSet(torch.utils.data.Dataset):
    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {"features": self.x[i]}, self.y[i]


def test_dict_inputs_and_output_objects_distil_with_a_cached_teacher():
    train, evaluation = blobs()
    task = Task(name="kw", model=KeywordModel(7), train_data=KeywordSet(train), eval_data=KeywordSet(evaluation),
                example_input={"features": evaluation.tensors[0][:1]}, batch_size=16)
    config = DistillationConfig(technique=CombinedDistillation(), max_epochs=2, patience=None, lr=1e-2)
    result = distill(KeywordModel(2), task, config, device="cpu", progress=False)
    assert result.teacher_cached and task.model.samples == len(train)  # teacher defaults to task.model
    assert result.epochs_run == 2 and all(0.0 <= m <= 1.0 for m in result.history)


def test_cache_needs_indexable_training_data():
    class Stream(IterableDataset):
        def __iter__(self):
            train, _ = blobs()
            return iter(zip(*train.tensors))

    task = tiny_task(train=Stream())
    config = DistillationConfig(technique=SoftDistillation(), max_epochs=1, cache_teacher=True)
    with pytest.raises(DistillationError, match="cache_teacher=True"):
        distill(mlp(2), task, config, teacher=mlp(7), device="cpu", progress=False)
    teacher = CountingTeacher(mlp(7))  # automatic mode falls back to running the teacher on every batch
    result = distill(mlp(2), task, config.replace(cache_teacher=None, max_epochs=2), teacher=teacher,
                     device="cpu", progress=False)
    assert not result.teacher_cached and teacher.samples == 2 * 96


def _augmented_task():
    class RandomHorizontalFlip:  # named like torchvision's: recognised as a random transform
        pass

    train, _ = blobs()

    class Augmented(TensorDataset):
        transform = RandomHorizontalFlip()

    return tiny_task(train=Augmented(*train.tensors))


def test_shared_teacher_cache_keeps_distillations_checks(monkeypatch):
    # A study computes the cache once and hands it to every trial: the checks distill() makes for its own
    # cache must hold there too, or augmented data gets paired with stale teacher outputs.
    task = _augmented_task()
    with pytest.raises(DistillationError, match="random transform"):
        compute_teacher_outputs(mlp(7), task, device="cpu")
    stale = torch.zeros(96, 3)
    config = DistillationConfig(technique=SoftDistillation(), max_epochs=1)
    with pytest.raises(DistillationError, match="random transform"):
        distill(mlp(2), task, config, teacher=mlp(7), teacher_outputs=stale, device="cpu", progress=False)
    # The size cap applies to a shared cache as well (96 samples x 3 logits x 4 bytes = 1152 bytes).
    import autocompress.distillation.teacher as distillation

    monkeypatch.setattr(distillation, "TEACHER_CACHE_MAX_BYTES", 100)
    with pytest.raises(DistillationError, match="at most"):
        compute_teacher_outputs(mlp(7), tiny_task(), device="cpu")
    assert compute_teacher_outputs(mlp(7), tiny_task(), device="cpu", max_bytes=2000).shape == (96, 3)


def test_random_transforms_are_detected():
    class Flip:  # named like torchvision's
        pass

    class RandomHorizontalFlip:
        pass

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

    class Images(TensorDataset):
        transform = None

    plain, augmented = Images(torch.zeros(2)), Images(torch.zeros(2))
    plain.transform = Compose([Flip()])
    augmented.transform = Compose([Flip(), RandomHorizontalFlip()])
    assert not has_random_transform(plain) and has_random_transform(augmented)
    assert has_random_transform(torch.utils.data.Subset(augmented, [0]))


# --------------------------------------------------------------------------------------------- students
def test_frozen_student_is_unfrozen_on_the_copy_and_trains():
    task = tiny_task()
    student = mlp(2).requires_grad_(False)
    before = state(student)
    result = distill(student, task, DistillationConfig(max_epochs=2, patience=None, lr=5e-2), device="cpu",
                     progress=False)
    assert result.unfrozen_params == 4
    assert not same_state(state(result.model), before), "a frozen student must still train"
    assert same_state(state(student), before) and not any(p.requires_grad for p in student.parameters())


def test_fake_quant_student_trains_and_keeps_its_fake_quant_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        import torch.ao.quantization as tq

        student = nn.Sequential(tq.QuantStub(), *mlp(2), tq.DeQuantStub())
        student.qconfig = tq.get_default_qat_qconfig("x86")
        tq.prepare_qat(student.train(), inplace=True)
    fake_quant = sum(isinstance(m, tq.FakeQuantizeBase) for m in student.modules())
    assert fake_quant > 0
    metric = ScriptedMetric([0.1, 0.9, 0.5, 0.4])
    task = tiny_task(metric=metric)
    result = distill(student, task, DistillationConfig(technique=CombinedDistillation(), max_epochs=5, patience=2,
                                                       lr=5e-2),
                     teacher=mlp(7), device="cpu", progress=False)
    # Best epoch 1 of 3: the restore goes through load_state_dict, per-channel observer buffers included.
    assert result.best_epoch == 1 and result.epochs_run == 3
    assert sum(isinstance(m, tq.FakeQuantizeBase) for m in result.model.modules()) == fake_quant
    # Observers paused, as during distill's evaluation: the returned scales are those the metric was measured with.
    logits, _ = predict(result.model.apply(tq.disable_observer), task.eval_loader())
    assert torch.allclose(logits, metric.logits[1])
    assert not torch.allclose(logits, metric.logits[0], atol=1e-3)  # and the fake-quant student did train


# --------------------------------------------------------------------------------------------- acceptance
@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks import digits as digits_module

    return digits_module.task()


def prune_half(model: nn.Module, example: torch.Tensor) -> nn.Module:
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    pruner = tp.pruner.BasePruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[pruned.classifier[-1]])
    pruner.step()
    return pruned


def test_distillation_recovers_a_half_pruned_digits_cnn_to_within_one_point(digits):
    metric = digits.resolved_metric
    original = evaluate(digits.model, digits.eval_loader(), metric)
    teacher_before = state(digits.model)
    student = prune_half(digits.model, digits.example_input)
    assert sum(p.numel() for p in student.parameters()) < 0.4 * sum(p.numel() for p in digits.model.parameters())
    pruned = evaluate(student, digits.eval_loader(), metric)
    assert pruned < original - 0.05, "pruning should hurt before recovery"
    config = DistillationConfig(technique=CombinedDistillation(temperature=4.0, alpha=0.5), stop="threshold",
                                target_metric=original - 0.01, max_epochs=15, lr=1e-3)
    result: DistillResult = distill(student, digits, config, device="cpu", progress=False)
    recovered = evaluate(result.model, digits.eval_loader(), metric)
    print(f"digits: original {original:.4f}, pruned {pruned:.4f}, recovered {recovered:.4f} "
          f"after {result.epochs_run} epochs")
    assert result.stopped_because == "target_reached" and result.teacher_cached
    assert recovered >= original - 0.01 and recovered == pytest.approx(result.best_metric)
    assert same_state(state(digits.model), teacher_before)  # the teacher (the user's model) is untouched
