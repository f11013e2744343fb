"""Knowledge distillation and plain fine-tuning: train a (pruned, fake-quantized, ...) student back up.

One config record per technique, each with its loss registered under the config type (no dispatch on names):

- :class:`FineTune` (``distillation.finetune``): cross-entropy on the labels, no teacher. The baseline.
- :class:`HardDistillation` (``distillation.hard``): cross-entropy on the labels (``task.loss_fn``). As specified
  it uses no teacher output, so it trains exactly like :class:`FineTune`; it exists so that a study can name it.
- :class:`SoftDistillation` (``distillation.soft``): ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``.
- :class:`CombinedDistillation` (``distillation.combined``): ``α·hard + (1−α)·soft``.

:class:`DistillationConfig` (``distillation``) is the action: technique, stop mode (``threshold`` or
``epochs``), epochs, patience, optimizer, learning rate, seed. :func:`distill` runs it and returns a frozen
:class:`DistillResult`.

Who is modified: nobody the caller holds. The student is deep-copied and the copy is trained; the teacher runs
in eval mode under ``no_grad`` (and is copied first if it must move to another device), so neither the user's
model nor the teacher changes. Any ``nn.Module`` student trains, including one prepared for quantization-aware
training (its fake-quant observers are paused while it is evaluated, so that measuring does not move its scales).

Teacher outputs are computed once per call (or passed in with ``teacher_outputs=``, so that a study can share
them across trials) when the training inputs are not augmented: the training set is read once in a fixed order
to get one teacher output per sample index; every epoch then shuffles the indices and gathers the inputs and
the cached outputs by the same indices, so the pairing is exact.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from ._tensors import call_model, logits_of, to_device
from .config import Config, HandlerRegistry, config_from_name, family_names, register_alias, register_config
from .device import resolve_device
from .errors import ConfigError, DistillationError
from .profile import evaluate, is_quantized
from .progress import progress_bar
from .task import Task

log = logging.getLogger(__name__)

STOP_MODES = ("threshold", "epochs")
# Why a stop: the target was reached, the epoch budget ran out, no improvement for `patience` epochs, the
# caller's per-epoch callback asked to stop (a study's early abort), or the training loss went non-finite.
EVAL_BATCH_FACTOR = 4  # evaluation batches during distillation are this many training batches
# Above this, an automatic teacher cache is not built (teacher outputs of, say, a language model over a large
# training set would not fit in memory); the teacher then runs on every batch instead.
TEACHER_CACHE_MAX_BYTES = 2 * 1024**3

EpochCallback = Callable[[int, float], "bool | str | None"]
LossFn = Callable[[Any, torch.Tensor, "torch.Tensor | None", Any, Callable[..., torch.Tensor]], torch.Tensor]


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DistillationTechnique(Config):
    """Base of the technique configs. ``uses_teacher``: whether its loss needs the teacher's outputs."""

    uses_teacher: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.KIND.rpartition(".")[2]


def _check_temperature(kind: str, temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"{kind} temperature {temperature!r}", "a finite number > 0 (typically 1 to 10)",
                          "set temperature to e.g. 4.0")


@register_config("distillation.finetune")
@dataclass(frozen=True)
class FineTune(DistillationTechnique):
    """Training on the ground-truth labels with ``task.loss_fn`` (cross-entropy by default); no teacher output.

    This is also the thesis's hard-target distillation, which is why ``"hard"`` names this technique too.
    """


# The thesis's "hard distillation" is cross-entropy on the ground-truth labels: exactly fine-tuning. One
# technique, not two (a duplicate doubles a sampler's work for nothing); "hard" records and names load as it.
HardDistillation = FineTune
register_alias("distillation.hard", FineTune.KIND)


@register_config("distillation.soft")
@dataclass(frozen=True)
class SoftDistillation(DistillationTechnique):
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, batch-mean."""

    uses_teacher: ClassVar[bool] = True
    temperature: float = 4.0

    def __post_init__(self) -> None:
        _check_temperature(self.KIND, self.temperature)


@register_config("distillation.combined")
@dataclass(frozen=True)
class CombinedDistillation(DistillationTechnique):
    """``alpha · hard + (1 − alpha) · soft``."""

    uses_teacher: ClassVar[bool] = True
    temperature: float = 4.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        _check_temperature(self.KIND, self.temperature)
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"{self.KIND} alpha {self.alpha!r}", "a number in [0, 1] (the weight of the hard loss)",
                              "set alpha to e.g. 0.5")


def technique_names() -> list[str]:
    """Short names of the registered techniques (``combined``, ``finetune``, ``soft``, ...)."""
    return family_names("distillation")


def technique_from_name(name: str, **params: Any) -> DistillationTechnique:
    """A technique config from its short name and parameters, e.g. ``technique_from_name("soft", temperature=2)``
    (``"hard"`` gives :class:`FineTune`). See :func:`autocompress.config.config_from_name`."""
    config = config_from_name("distillation", name, **params)
    assert isinstance(config, DistillationTechnique)
    return config


@register_config("distillation")
@dataclass(frozen=True)
class DistillationConfig(Config):
    """One distillation (or fine-tuning) run.

    - ``technique``: a :class:`DistillationTechnique` config (its own parameters live there).
    - ``stop``: ``"threshold"`` trains until the eval metric reaches ``target_metric`` (and returns that
      model); ``"epochs"`` trains ``max_epochs`` epochs. Both stop early after ``patience`` epochs without
      improvement (``None`` disables it) and at ``max_epochs`` at the latest (0: no training at all).
    - ``target_metric``: the absolute metric value to reach (in ``epochs`` mode it is only reported, as
      ``DistillResult.target_epoch``). A ``threshold`` plan may leave it None: the pipeline then derives it
      from the requirements (halfway into the allowed drop); :func:`distill` itself needs it.
    - ``optimizer``: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9); ``lr`` and ``weight_decay`` apply to it.
    - ``batch_size``: training batch size (``None``: the task's).
    - ``cache_teacher``: compute teacher outputs once (``True``), on every batch (``False``, needed for
      augmented inputs), or decide automatically (``None``: cache when the training set is a map-style Dataset
      with no random transform).
    - ``seed``: the shuffling order and every random draw in training (dropout) follow it.
    """

    technique: DistillationTechnique = FineTune()
    stop: str = "epochs"
    max_epochs: int = 10
    patience: int | None = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int | None = None
    target_metric: float | None = None
    cache_teacher: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.technique, DistillationTechnique):
            raise ConfigError(f"distillation technique {self.technique!r}",
                              f"a technique config ({', '.join(technique_names())})",
                              "pass e.g. technique=SoftDistillation(temperature=4.0)")
        if self.stop not in STOP_MODES:
            raise ConfigError(f"stop mode {self.stop!r}", f"one of {', '.join(STOP_MODES)}",
                              "use stop='threshold' with target_metric, or stop='epochs'")
        # 0 epochs is a plan without retraining (a baseline the study may try); distill() then returns the
        # student as it is, measured.
        if not (isinstance(self.max_epochs, int) and not isinstance(self.max_epochs, bool) and self.max_epochs >= 0):
            raise ConfigError(f"max_epochs {self.max_epochs!r}", "an integer ≥ 0 (0 = no retraining)",
                              "set max_epochs to e.g. 10")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience >= 1):
            raise ConfigError(f"patience {self.patience!r}", "an integer ≥ 1, or None to disable early stopping",
                              "set patience to e.g. 3")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"learning rate {self.lr!r}", "a finite number ≥ 0", "set lr to e.g. 1e-3")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay {self.weight_decay!r}", "a number ≥ 0", "set weight_decay to 0")
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r}", f"one of {', '.join(sorted(_OPTIMIZERS))}",
                              "set optimizer to 'adam'")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch_size {self.batch_size!r}", "an integer ≥ 1, or None for the task's",
                              "set batch_size to e.g. 64")


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float, float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
}


# --------------------------------------------------------------------------------------------- losses
LOSSES: HandlerRegistry[LossFn] = HandlerRegistry("distillation loss")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` with batch-mean reduction.

    Computed from log-softmaxes (``log_target=True``) for numerical stability. The T² factor keeps the
    gradient scale of the soft term independent of T (Hinton et al., 2015). Logits with more than two
    dimensions (per-token outputs) are flattened to rows of classes, so the mean is over positions.
    """
    t = float(temperature)
    classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, classes).float()
    q = teacher_logits.reshape(-1, classes).to(s)
    return F.kl_div(F.log_softmax(s / t, dim=-1), F.log_softmax(q / t, dim=-1), log_target=True,
                    reduction="batchmean") * (t * t)


@LOSSES.register(FineTune)
def _hard_loss(config: DistillationTechnique, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
               targets: Any, loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    return loss_fn(student_logits, targets)


@LOSSES.register(SoftDistillation)
def _soft_loss(config: SoftDistillation, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
               targets: Any, loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    return soft_loss(student_logits, teacher_logits, config.temperature)


@LOSSES.register(CombinedDistillation)
def _combined_loss(config: CombinedDistillation, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                   targets: Any, loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    hard = loss_fn(student_logits, targets)
    soft = soft_loss(student_logits, teacher_logits, config.temperature)
    return config.alpha * hard + (1.0 - config.alpha) * soft


def distillation_loss(technique: DistillationTechnique, student_logits: torch.Tensor, targets: Any,
                      teacher_logits: torch.Tensor | None = None,
                      loss_fn: Callable[..., torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """The loss of ``technique`` on one batch (the handler registered for its config type)."""
    if technique.uses_teacher and teacher_logits is None:
        raise DistillationError(f"technique {technique.KIND!r} without teacher outputs",
                                "teacher logits for a technique that distils from a teacher",
                                "pass teacher_logits, or use FineTune")
    return LOSSES(technique)(technique, student_logits, teacher_logits, targets, loss_fn)


# --------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class DistillResult:
    """What a distillation run produced.

    ``model`` is the trained copy of the student holding the best weights seen (by the eval metric, in the
    metric's direction); in ``threshold`` mode, when the target is reached, that is the model that reached it.
    Epoch 0 is the student before training: ``best_epoch == 0`` means no epoch improved on it.
    ``history`` and ``train_loss`` hold one value per epoch run (the metric is NaN for an epoch whose loss
    diverged; that epoch is never the best); ``target_epoch`` is the first epoch (0 =
    before training) whose metric met ``target_metric``, if one was given.
    """

    model: nn.Module
    config: DistillationConfig
    metric_name: str
    higher_is_better: bool
    initial_metric: float
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_because: str
    history: tuple[float, ...]
    train_loss: tuple[float, ...]
    seconds: float
    target_epoch: int | None = None
    stop_detail: str = ""
    teacher_cached: bool = False
    unfrozen_params: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reached_target(self) -> bool | None:
        return None if self.config.target_metric is None else self.target_epoch is not None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready (for study storage)."""
        return {
            "config": self.config.to_dict(), "metric_name": self.metric_name,
            "higher_is_better": self.higher_is_better, "initial_metric": self.initial_metric,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
            "stopped_because": self.stopped_because, "stop_detail": self.stop_detail,
            "history": list(self.history), "train_loss": list(self.train_loss), "seconds": self.seconds,
            "target_epoch": self.target_epoch, "reached_target": self.reached_target,
            "teacher_cached": self.teacher_cached, "unfrozen_params": self.unfrozen_params,
            "device": self.device,
        }


# --------------------------------------------------------------------------------------------- data
class _Indexed(Dataset):
    """Yields ``(index, sample)`` so that each shuffled batch carries the indices of its samples."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def _is_map_style(data: Any) -> bool:
    if not isinstance(data, Dataset) or isinstance(data, IterableDataset):
        return False
    try:
        len(data)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


# Transforms that draw random numbers (torchvision's Random*, the auto-augment policies, ColorJitter, ...).
_RANDOM_TRANSFORM = re.compile(r"Random|AutoAugment|RandAugment|TrivialAugment|AugMix|ColorJitter|Elastic|"
                               r"MixUp|CutMix|Mixup|Cutmix", re.IGNORECASE)


def has_random_transform(dataset: Any, _depth: int = 0) -> bool:
    """Whether a dataset (or the datasets it wraps: Subset, ConcatDataset) applies a known random transform.

    Looks at the ``transform``/``transforms``/``target_transform`` attributes, through ``Compose``. A custom
    random function cannot be recognised: set ``DistillationConfig(cache_teacher=False)`` for such data.
    """
    if _depth > 8 or dataset is None:
        return False

    def random_in(obj: Any, depth: int) -> bool:
        if obj is None or depth > 8:
            return False
        if isinstance(obj, (list, tuple)):
            return any(random_in(o, depth + 1) for o in obj)
        if _RANDOM_TRANSFORM.search(type(obj).__name__):
            return True
        inner = getattr(obj, "transforms", None)
        return isinstance(inner, (list, tuple, nn.ModuleList)) and any(random_in(o, depth + 1) for o in inner)

    for attr in ("transform", "transforms", "target_transform"):
        if random_in(getattr(dataset, attr, None), 0):
            return True
    inner = getattr(dataset, "dataset", None)
    if inner is not None and inner is not dataset and has_random_transform(inner, _depth + 1):
        return True
    return any(has_random_transform(d, _depth + 1) for d in getattr(dataset, "datasets", []) or [])


def _indexed_source(task: Task) -> tuple[Dataset, Callable[[list[Any]], Any]] | None:
    """The map-style training set and its collate function, when samples can be addressed by index."""
    data = task.train_data
    if isinstance(data, DataLoader):
        # A user's DataLoader keeps its own sampler; its dataset is used only when a cache is asked for.
        return (data.dataset, data.collate_fn or default_collate) if _is_map_style(data.dataset) else None
    if _is_map_style(data):
        return data, task.collate_fn or default_collate
    return None


def _fixed_order_loader(dataset: Dataset, collate: Callable[[list[Any]], Any], batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise DistillationError(f"a training batch of type {type(batch).__name__}", "batches of (input, target)",
                                "make the training dataset's __getitem__ return (input, target)")
    return batch[0], batch[1]


# --------------------------------------------------------------------------------------------- teacher
def _on_device(module: nn.Module, dev: torch.device) -> bool:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type != dev.type or (dev.index is not None and t.device.index != dev.index):
            return False
    return True


@contextmanager
def _teacher_on(teacher: nn.Module, dev: torch.device) -> Iterator[nn.Module]:
    """The teacher in eval mode on ``dev``; copied first if it has to move, so the caller's teacher stays put."""
    model = teacher if _on_device(teacher, dev) else copy.deepcopy(teacher).to(dev)
    was_training = model.training
    model.eval()  # no dropout, BatchNorm statistics frozen: the teacher must not change
    try:
        yield model
    finally:
        model.train(was_training)


def _teacher_logits(teacher: nn.Module, x: Any) -> torch.Tensor:
    # no_grad rather than inference_mode: inference tensors cannot be saved for the student's backward pass.
    with torch.no_grad():
        return logits_of(call_model(teacher, x)).float()


class TeacherCacheRefused(DistillationError):
    """Teacher outputs cannot be cached for this training set: its samples change between epochs (random
    transforms), or the cache would be too large. Train with the live teacher instead."""


def _check_cacheable(source: tuple[Dataset, Any] | None, task: Task) -> tuple[Dataset, Any]:
    """The indexed training set, if cached teacher outputs would match what the student sees every epoch."""
    if source is None:
        raise TeacherCacheRefused(
            f"training data of type {type(task.train_data).__name__} without indexable samples",
            "a map-style Dataset (with __len__ and __getitem__) to cache teacher outputs on",
            "pass a map-style Dataset, or set cache_teacher=False")
    if has_random_transform(source[0]):
        raise TeacherCacheRefused(
            "training data with a random transform (each epoch shows other inputs, so cached teacher outputs "
            "would be stale)", "a training set whose samples are the same every epoch",
            "let the teacher run on every batch (cache_teacher=None or False)")
    return source


def compute_teacher_outputs(teacher: nn.Module, task: Task, device: str | torch.device = "auto",
                            batch_size: int | None = None, max_bytes: float | None = None) -> torch.Tensor:
    """The teacher's logits for every training sample, by sample index, as one float32 CPU tensor.

    The training set is read once in index order. Pass the result to :func:`distill` as ``teacher_outputs``
    to share it between runs with the same teacher and training set (e.g. the trials of a study). Raises
    :class:`TeacherCacheRefused` for training data with random transforms and when the cache would exceed
    ``max_bytes`` (default :data:`TEACHER_CACHE_MAX_BYTES`; ``math.inf``: no cap): whoever shares the cache gets
    the same checks as :func:`distill`'s own.
    """
    dataset, collate = _check_cacheable(_indexed_source(task), task)
    max_bytes = TEACHER_CACHE_MAX_BYTES if max_bytes is None else max_bytes
    total = len(dataset)  # type: ignore[arg-type]
    dev = resolve_device(device)
    outputs: list[torch.Tensor] = []
    with _teacher_on(teacher, dev) as model:
        for batch in _fixed_order_loader(dataset, collate, batch_size or task.batch_size):
            x, _ = _split_batch(batch)
            outputs.append(_teacher_logits(model, to_device(x, dev)).cpu())
            if len(outputs) == 1:
                per_sample = outputs[0].element_size() * outputs[0][0].numel()
                if per_sample * total > max_bytes:
                    raise TeacherCacheRefused(
                        f"teacher outputs of {per_sample * total / 1e9:.2f} GB", f"at most {max_bytes / 1e9:.2f} GB "
                        "of cached teacher outputs", "let the teacher run on every batch (cache_teacher=False)")
    cache = torch.cat(outputs) if outputs else torch.empty(0)
    if cache.shape[0] != total:
        raise DistillationError(f"{cache.shape[0]} teacher outputs for {total} training samples",
                                "one output row per sample", "make each sample hold one input row")
    return cache


# --------------------------------------------------------------------------------------------- student
def _trainable_copy(student: nn.Module, dev: torch.device) -> tuple[nn.Module, int]:
    """A deep copy of the student on ``dev`` whose floating-point parameters all require grad.

    Why unfreeze: user models often arrive frozen (``requires_grad_(False)`` for inference, a frozen backbone);
    recovering a compressed model means updating all its weights, and an optimizer over frozen parameters would
    run every epoch and change nothing. Only the copy is changed; the user's model keeps its flags.
    """
    if is_quantized(student):
        raise DistillationError("a converted (int8) quantized student", "a float student, or one prepared for "
                                "quantization-aware training (fake-quant modules)",
                                "distil before converting, or prepare the model for QAT instead")
    model = copy.deepcopy(student).to(dev)
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        raise DistillationError(f"a student ({type(student).__name__}) with no floating-point parameters",
                                "a model with weights to train", "pass the float model to distil")
    unfrozen = 0
    for p in params:
        if not p.requires_grad:
            p.requires_grad_(True)
            unfrozen += 1
    if unfrozen:
        log.info("unfroze %d of %d parameter tensors of the student copy so that it can train", unfrozen, len(params))
    return model, unfrozen


@contextmanager
def _observers_frozen(model: nn.Module) -> Iterator[None]:
    """Fake-quant observers paused while evaluating, so that evaluation does not change the student.

    torch.ao's FakeQuantize modules keep updating their scales in eval mode. Left on, every evaluation would
    move the scales towards the eval data, and the snapshot of the best model would no longer hold the scales
    its metric was measured with (nor the ones a later int8 conversion bakes in).
    """
    flags = [(m.observer_enabled, m.observer_enabled.clone()) for m in model.modules()
             if isinstance(getattr(m, "observer_enabled", None), torch.Tensor)]
    for flag, _ in flags:
        flag.fill_(0)
    try:
        yield
    finally:
        for flag, saved in flags:
            flag.copy_(saved)


def _evaluate(model: nn.Module, loader: Any, metric: Any, dev: torch.device) -> float:
    with _observers_frozen(model):
        return evaluate(model, loader, metric, dev)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    # On CPU, so the best weights do not double the accelerator memory of a large student.
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------- training
def distill(student: nn.Module, task: Task, config: DistillationConfig, teacher: nn.Module | None = None, *,
            device: str | torch.device = "auto", callback: EpochCallback | None = None,
            teacher_outputs: torch.Tensor | None = None, progress: bool = True) -> DistillResult:
    """Train a copy of ``student`` on ``task``'s training set with ``config``; return the best model seen.

    ``teacher`` defaults to ``task.model`` for techniques that use one (soft, combined) and is ignored by the
    others. ``callback(epoch, metric)`` is called after every epoch's evaluation; a truthy return (True, or a
    string that is recorded as ``stop_detail``) stops training with ``stopped_because="callback"``; an exception
    it raises (e.g. ``optuna.TrialPruned``) propagates. ``teacher_outputs`` is a cache from
    :func:`compute_teacher_outputs`. Neither ``student`` nor ``teacher`` is modified.
    """
    if not isinstance(config, DistillationConfig):
        raise ConfigError(f"distillation config of type {type(config).__name__}", "a DistillationConfig",
                          "pass DistillationConfig(technique=...)")
    if config.stop == "threshold" and config.target_metric is None:
        raise ConfigError("stop='threshold' without target_metric", "the metric value to reach",
                          "set target_metric, e.g. the original metric minus the allowed drop, or run the plan "
                          "through the pipeline with requirements")
    if not isinstance(student, nn.Module):
        raise DistillationError(f"a student of type {type(student).__name__}", "a torch.nn.Module",
                                "pass the model to train")
    started = time.perf_counter()
    technique = config.technique
    dev = resolve_device(device)
    metric = task.resolved_metric
    batch_size = config.batch_size or task.batch_size

    if technique.uses_teacher and teacher is None:
        teacher = task.model
    if technique.uses_teacher and not isinstance(teacher, nn.Module):
        raise DistillationError(f"technique {technique.KIND!r} with teacher of type {type(teacher).__name__}",
                                "a teacher nn.Module (defaults to task.model)", "pass teacher=the original model")

    model, unfrozen = _trainable_copy(student, dev)
    source = _indexed_source(task)
    if isinstance(task.train_data, DataLoader) and not (config.cache_teacher or teacher_outputs is not None):
        source = None  # a user's DataLoader is iterated as given (its sampler, its shuffling)

    cache: torch.Tensor | None = None
    if technique.uses_teacher:
        cache = _teacher_cache(teacher, task, config, source, teacher_outputs, dev, batch_size)

    def batches(generator: torch.Generator) -> Iterator[tuple[torch.Tensor | None, Any, Any]]:
        if source is None:
            # An IterableDataset cannot be shuffled by a DataLoader (it raises); it streams in its own order.
            shuffle = not isinstance(task.train_data, IterableDataset)
            for batch in task.train_loader(shuffle=shuffle, batch_size=batch_size, seed=config.seed):
                x, y = _split_batch(batch)
                yield None, x, y
            return
        dataset, collate = source
        # A last batch of one sample would make BatchNorm raise in training mode; that one sample is skipped.
        drop_last = len(dataset) % batch_size == 1 and len(dataset) > 1  # type: ignore[arg-type]
        loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=True, generator=generator,
                            drop_last=drop_last,
                            collate_fn=lambda items: (torch.tensor([i for i, _ in items]),
                                                      collate([s for _, s in items])))
        for idx, batch in loader:
            x, y = _split_batch(batch)
            yield idx, x, y

    def better(a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        return math.isnan(b) or (a > b if metric.higher_is_better else a < b)

    def reached(value: float) -> bool:
        target = config.target_metric
        if target is None or math.isnan(value):
            return False
        return value >= target if metric.higher_is_better else value <= target

    loss_of = LOSSES(technique)
    # Evaluated after every epoch, without gradients: larger batches cut the per-batch overhead (15% of a digits
    # trial's distillation at batch 64). A user's own DataLoader is used as given.
    eval_loader = task.eval_loader(batch_size=task.batch_size * EVAL_BATCH_FACTOR)
    initial = _evaluate(model, eval_loader, metric, dev)
    best_metric, best_epoch, best_state = initial, 0, _snapshot(model)
    target_epoch = 0 if reached(initial) else None
    history: list[float] = []
    losses: list[float] = []
    stopped, detail = "max_epochs", ""
    since_best = 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _OPTIMIZERS[config.optimizer](params, config.lr, config.weight_decay)
    cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    label = technique.name

    if config.stop == "threshold" and target_epoch == 0:
        stopped = "target_reached"  # the student already meets the target: nothing to train
    else:
        # fork_rng: seed dropout and friends for determinism without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=cuda_devices), \
                progress_bar(f"{label}: epoch 0/{config.max_epochs}", total=config.max_epochs,
                             enabled=progress) as bar, \
                _teacher_context(teacher if technique.uses_teacher and cache is None else None, dev) as live_teacher:
            torch.manual_seed(config.seed)
            generator = torch.Generator().manual_seed(config.seed)
            for epoch in range(1, config.max_epochs + 1):
                mean_loss = _train_epoch(model, batches(generator), technique, loss_of, task.loss_fn, optimizer,
                                         dev, cache, live_teacher)
                if not math.isfinite(mean_loss):
                    # The weights are NaN/inf now: this epoch's metric means nothing and must not become "best".
                    history.append(float("nan"))
                    losses.append(mean_loss)
                    stopped, detail = "diverged", f"loss {mean_loss} in epoch {epoch}"
                    break
                value = _evaluate(model, eval_loader, metric, dev)
                history.append(value)
                losses.append(mean_loss)
                if better(value, best_metric):
                    best_metric, best_epoch, best_state, since_best = value, epoch, _snapshot(model), 0
                else:
                    since_best += 1
                if target_epoch is None and reached(value):
                    target_epoch = epoch
                bar.advance(description=f"{label}: epoch {epoch}/{config.max_epochs} {metric.name} {value:.4f} "
                                        f"(best {best_metric:.4f})")
                log.info("%s epoch %d: loss %.4f, %s %.4f", label, epoch, mean_loss, metric.name, value)
                verdict = callback(epoch, value) if callback is not None else None
                if config.stop == "threshold" and reached(value):
                    stopped = "target_reached"
                    break
                if verdict:
                    stopped, detail = "callback", verdict if isinstance(verdict, str) else ""
                    break
                if config.patience is not None and since_best >= config.patience:
                    stopped = "patience"
                    break
        # Strict improvement means the model that reached the target is the best one seen, so restoring the best
        # snapshot also returns "the model that reached it" in threshold mode.
        if best_epoch != len(history):
            model.load_state_dict(best_state)
    model.eval()
    return DistillResult(
        model=model, config=config, metric_name=metric.name, higher_is_better=metric.higher_is_better,
        initial_metric=initial, best_metric=best_metric, best_epoch=best_epoch, epochs_run=len(history),
        stopped_because=stopped, history=tuple(history), train_loss=tuple(losses),
        seconds=time.perf_counter() - started, target_epoch=target_epoch, stop_detail=detail,
        teacher_cached=cache is not None, unfrozen_params=unfrozen, device=str(dev),
    )


@contextmanager
def _teacher_context(teacher: nn.Module | None, dev: torch.device) -> Iterator[nn.Module | None]:
    if teacher is None:
        yield None
        return
    with _teacher_on(teacher, dev) as model:
        yield model


def _teacher_cache(teacher: nn.Module, task: Task, config: DistillationConfig,
                   source: tuple[Dataset, Callable[[list[Any]], Any]] | None, teacher_outputs: torch.Tensor | None,
                   dev: torch.device, batch_size: int) -> torch.Tensor | None:
    """The cached teacher outputs to train with, or None to run the teacher on every batch."""
    if teacher_outputs is not None:
        if config.cache_teacher is False:
            raise DistillationError("teacher_outputs together with cache_teacher=False",
                                    "either cached outputs or a live teacher", "drop one of the two")
        source = _check_cacheable(source, task)
        if teacher_outputs.shape[0] != len(source[0]):  # type: ignore[arg-type]
            raise DistillationError(
                f"teacher_outputs with {teacher_outputs.shape[0]} rows",
                "one row per training sample of a map-style training set",
                "compute them with compute_teacher_outputs(teacher, task)")
        return teacher_outputs.float().cpu()
    if config.cache_teacher is False:
        return None
    if config.cache_teacher is True:  # asked for: no size cap, and a refusal is the user's to see
        try:
            return compute_teacher_outputs(teacher, task, dev, batch_size, max_bytes=math.inf)
        except TeacherCacheRefused as exc:
            raise DistillationError(f"cache_teacher=True, but: {exc}") from exc
    # Automatic: cache only when every epoch would show the teacher the very same inputs, within the size cap.
    try:
        return compute_teacher_outputs(teacher, task, dev, batch_size)
    except TeacherCacheRefused as exc:
        log.info("teacher outputs not cached (%s); running the teacher on every batch instead", exc)
        return None


def _train_epoch(model: nn.Module, batches: Iterator[tuple[torch.Tensor | None, Any, Any]],
                 technique: DistillationTechnique, loss_of: LossFn, task_loss: Callable[..., torch.Tensor],
                 optimizer: torch.optim.Optimizer, dev: torch.device, cache: torch.Tensor | None,
                 teacher: nn.Module | None) -> float:
    """One pass over the training set; the mean training loss (NaN or inf when training diverged)."""
    model.train()
    total = torch.zeros((), device=dev)
    steps = 0
    for idx, x, y in batches:
        x, y = to_device(x, dev), to_device(y, dev)
        student_logits = logits_of(call_model(model, x))
        teacher_logits = None
        if cache is not None:
            teacher_logits = cache[idx].to(dev)  # the rows of exactly this batch's samples
        elif teacher is not None:
            teacher_logits = _teacher_logits(teacher, x)
        loss = loss_of(technique, student_logits, teacher_logits, y, task_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()  # summed on the device; one sync per epoch, not per batch
        steps += 1
    if steps == 0:
        raise DistillationError("a training set that yielded no batches", "at least one (input, target) sample",
                                "check Task.train_data")
    return float((total / steps).item())
