"""Teacher outputs: computed once per training set (in a fixed sample order) and shared, when that is safe.

A cache pairs each training sample index with the teacher's output for it. It is only right when every epoch
shows the student the same inputs (no random transforms), and only affordable below a size cap; both checks
live in :func:`compute_teacher_outputs`, so that whoever shares a cache (a study's trials) gets them too.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from .._tensors import call_model, logits_of, to_device
from ..device import resolve_device
from ..errors import DistillationError
from ..task import Task
from .techniques import DistillationConfig

log = logging.getLogger(__name__)

# Above this, an automatic teacher cache is not built (teacher outputs of, say, a language model over a large
# training set would not fit in memory); the teacher then runs on every batch instead.
TEACHER_CACHE_MAX_BYTES = 2 * 1024**3


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
        return data, task.collate()
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


