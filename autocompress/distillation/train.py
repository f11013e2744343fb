"""Training a student back up: :func:`distill` runs a :class:`DistillationConfig` and returns a frozen
:class:`DistillResult` holding the best model seen."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from .._tensors import call_model, logits_of, to_device
from ..device import resolve_device
from ..errors import ConfigError, DistillationError
from ..profile import evaluate, is_quantized
from ..progress import progress_bar
from ..task import Task
from .teacher import _Indexed, _indexed_source, _split_batch, _teacher_cache, _teacher_context, _teacher_logits
from .techniques import _OPTIMIZERS, LOSSES, DistillationConfig, DistillationTechnique, LossBatch, LossFn

# Why a stop: the target was reached, the epoch budget ran out, no improvement for `patience` epochs, the
# caller's per-epoch callback asked to stop (a study's early abort), or the training loss went non-finite.
log = logging.getLogger(__name__)

EVAL_BATCH_FACTOR = 4  # evaluation batches during distillation are this many training batches

EpochCallback = Callable[[int, float], "bool | str | None"]


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
            teacher_outputs: torch.Tensor | None = None, progress: bool = True,
            measure: Callable[[nn.Module], float] | None = None) -> DistillResult:
    """Train a copy of ``student`` on ``task``'s training set with ``config``; return the best model seen.

    ``measure(model)``: the metric of the model as it will be deployed (e.g. after int8 quantization of a copy);
    when given, it replaces the float evaluation before training and after every epoch, so the threshold stop,
    the best epoch and the callback all see what will be delivered.

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

    def evaluate_now() -> float:
        return measure(model) if measure is not None else _evaluate(model, eval_loader, metric, dev)

    initial = evaluate_now()
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
                value = evaluate_now()
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
        loss = loss_of(technique, LossBatch(student_logits, teacher_logits, y, task_loss))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()  # summed on the device; one sync per epoch, not per batch
        steps += 1
    if steps == 0:
        raise DistillationError("a training set that yielded no batches", "at least one (input, target) sample",
                                "check Task.train_data")
    return float((total / steps).item())
