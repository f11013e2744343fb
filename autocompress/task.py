"""The Task contract: what a user hands to autocompress, and how a ``--task`` argument becomes one."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from ._tensors import ModelInput, call_model, describe, logits_of, to_device, trim_batch_padding, trim_padding
from .errors import AutocompressError, TaskError, TaskValidationError
from .metrics import Metric, MetricFn, resolve_metric

# Built-in tasks by name. Values are ``module:function`` so that a task's heavy imports happen only when used.
BUILTIN_TASKS: dict[str, str] = {
    "digits": "autocompress.tasks.digits:task",
    "text": "autocompress.tasks.text:task",
    "reviews": "autocompress.tasks.reviews:task",
    "mnist": "autocompress.tasks.mnist:task",
}

DataSource = Dataset | DataLoader


@dataclass
class Task:
    """A trained model together with its data, metric and an example input.

    ``train_data`` and ``eval_data`` are torch Datasets or DataLoaders that yield ``(input, target)``; the
    input is a tensor or a dict of tensors (passed to the model as keyword arguments). ``metric`` is
    ``"accuracy"``, ``"f1"`` (macro) or a callable ``(logits, targets) -> float``; higher is better unless
    ``higher_is_better`` is False. ``metric_scale`` says what a drop is measured in: ``"fraction"`` (a value in
    [0, 1], drops in percentage points; the default for the built-in metrics) or ``"raw"`` (drops in the
    metric's own units; the default for a callable). See :mod:`autocompress.metrics`.
    """

    name: str
    model: nn.Module
    train_data: DataSource
    eval_data: DataSource
    example_input: ModelInput
    metric: str | MetricFn = "accuracy"
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    batch_size: int = 64
    collate_fn: Callable[[list[Any]], Any] | None = None
    higher_is_better: bool = True
    metric_scale: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    pad_to_longest: bool | None = None
    unk_token_id: int | None = None
    special_token_ids: tuple[int, ...] = ()

    @property
    def resolved_metric(self) -> Metric:
        return resolve_metric(self.metric, self.higher_is_better, self.metric_scale)

    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.loss if self.loss is not None else nn.functional.cross_entropy

    def token_ids(self) -> dict[str, Any]:
        """The tokenizer's unknown-token id and special ids (``unk_id``, ``special_ids``), which vocabulary
        trimming needs: the task's own fields, else those of a Hugging Face tokenizer in ``extra["tokenizer"]``."""
        tokenizer = self.extra.get("tokenizer")
        unk = self.unk_token_id if self.unk_token_id is not None else getattr(tokenizer, "unk_token_id", None)
        specials = tuple(self.special_token_ids) or tuple(getattr(tokenizer, "all_special_ids", ()) or ())
        return {"unk_id": unk, "special_ids": specials}

    def collate(self) -> Callable[[list[Any]], Any]:
        """How samples become a batch: ``collate_fn`` (or torch's default), then, when ``pad_to_longest``, each
        batch cut to its longest sequence (see :func:`autocompress._tensors.trim_padding`).

        ``pad_to_longest=None`` decides once, on a few evaluation samples: trim when the input is a dict with an
        ``attention_mask`` and the model's outputs on the trimmed batch equal those on the padded one.
        """
        base = self.collate_fn or default_collate
        if self.pad_to_longest is None:
            self.pad_to_longest = _trimming_is_exact(self, base)
        if not self.pad_to_longest:
            return base
        return _TrimmingCollate(base)

    def _loader(self, data: DataSource, shuffle: bool, batch_size: int | None, seed: int | None) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        if isinstance(data, torch.utils.data.IterableDataset):
            shuffle = False  # a stream has no indices to shuffle; DataLoader rejects shuffle=True for it
        generator = None
        if shuffle and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            data,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate(),
            generator=generator,
        )

    def train_loader(self, shuffle: bool = True, batch_size: int | None = None, seed: int | None = 0) -> DataLoader:
        """Batches of the training set (shuffled with a seeded generator unless the user gave a DataLoader)."""
        return self._loader(self.train_data, shuffle, batch_size, seed)

    def eval_loader(self, batch_size: int | None = None) -> DataLoader:
        """Batches of the evaluation set, in order."""
        return self._loader(self.eval_data, False, batch_size, None)


class _TrimmingCollate:
    """A collate function followed by :func:`trim_batch_padding` (a class, so DataLoader workers can pickle it)."""

    def __init__(self, base: Callable[[list[Any]], Any]) -> None:
        self.base = base

    def __call__(self, items: list[Any]) -> Any:
        return trim_batch_padding(self.base(items))


PADDING_CHECK_SAMPLES = 8


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[tuple[nn.Module, torch.device]]:
    """``model`` in eval mode without gradients, and the device it lives on; its training flag is restored."""
    was_training = model.training
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.eval()
    try:
        with torch.no_grad():
            yield model, device
    finally:
        model.train(was_training)


def _trimming_is_exact(task: Task, collate: Callable[[list[Any]], Any]) -> bool:
    """Whether cutting a batch to its longest sequence leaves the model's outputs as they are (within 1e-4)."""
    example = task.example_input
    if not isinstance(example, Mapping) or "attention_mask" not in example:
        return False
    data = task.eval_data.dataset if isinstance(task.eval_data, DataLoader) else task.eval_data
    try:
        batch = collate([data[i] for i in range(min(PADDING_CHECK_SAMPLES, len(data)))])  # type: ignore[arg-type]
    except (TypeError, IndexError, KeyError):
        return False  # not a map-style dataset: batches are used as they come
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        return False
    full, trimmed = batch[0], trim_padding(batch[0])
    if trimmed is full:
        return True  # nothing to cut in these samples; exact by construction
    try:
        with _evaluating(task.model) as (model, device):
            a = logits_of(call_model(model, to_device(full, device))).float()
            b = logits_of(call_model(model, to_device(trimmed, device))).float()
    except Exception:  # noqa: BLE001 - a model that cannot take shorter sequences keeps its padded batches
        return False
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6))


def _data_len(data: DataSource) -> int | None:
    target = data.dataset if isinstance(data, DataLoader) else data
    try:
        return len(target)  # type: ignore[arg-type]
    except TypeError:
        return None


def _collect_targets(loader: DataLoader) -> torch.Tensor:
    targets = []
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise TaskValidationError(
                f"a data batch of type {type(batch).__name__}",
                "batches of (input, target)",
                "make the dataset's __getitem__ return (input, target)",
            )
        targets.append(torch.as_tensor(batch[1]).reshape(-1))
    return torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)


def validate_task(task: Any) -> Task:
    """Check the Task contract and return the task; raise a one-line :class:`TaskValidationError` otherwise.

    Checks: the object is a Task with an ``nn.Module``; the metric resolves; the evaluation set is non-empty;
    the model runs on ``example_input``; for classification metrics, every evaluation label is a valid index
    into the model's outputs.
    """
    if not isinstance(task, Task):
        raise TaskValidationError(
            f"task() returned {type(task).__name__}",
            "an autocompress.Task",
            "return autocompress.Task(name=..., model=..., train_data=..., eval_data=..., example_input=...)",
        )
    if not isinstance(task.model, nn.Module):
        raise TaskValidationError(
            f"Task.model is a {type(task.model).__name__}",
            "a torch.nn.Module",
            "pass the trained nn.Module itself (load its state dict into the architecture first)",
        )
    metric = task.resolved_metric
    for split in ("train_data", "eval_data"):
        data = getattr(task, split)
        if not isinstance(data, (Dataset, DataLoader)):
            raise TaskValidationError(
                f"Task.{split} is a {type(data).__name__}",
                "a torch Dataset or DataLoader yielding (input, target)",
                "wrap tensors in torch.utils.data.TensorDataset",
            )
    if _data_len(task.eval_data) == 0:
        raise TaskValidationError(
            "the evaluation set is empty (0 samples)",
            "at least one (input, target) sample in Task.eval_data",
            "check the split that builds eval_data",
        )
    example = task.example_input
    if not (isinstance(example, torch.Tensor) or (
        isinstance(example, Mapping) and example and all(isinstance(v, torch.Tensor) for v in example.values())
    )):
        raise TaskValidationError(
            f"Task.example_input is {describe(example)}",
            "a tensor or a dict of tensors with a batch dimension",
            "set example_input to one batch of model input, e.g. next(iter(eval_loader))[0][:1]",
        )
    try:
        with _evaluating(task.model) as (model, device):
            logits = logits_of(call_model(model, to_device(example, device)))
    except Exception as exc:  # the user's model may raise anything
        raise TaskValidationError(
            f"the model raised {type(exc).__name__} on example_input {describe(example)}: {exc}",
            "an example_input the model accepts",
            "give example_input the shape and dtype of one real input batch",
        ) from exc
    if metric.classification:
        if logits.dim() < 2:
            raise TaskValidationError(
                f"the model's output has shape {tuple(logits.shape)}",
                f"class logits of shape (batch, classes) for metric {metric.name!r}",
                "return logits from forward(), or use a callable metric",
            )
        num_outputs = int(logits.shape[-1])
        try:
            targets = _collect_targets(task.eval_loader())
        except AutocompressError:
            raise
        except Exception as exc:
            raise TaskValidationError(
                f"reading the evaluation set raised {type(exc).__name__}: {exc}",
                "a dataset that yields (input, target)",
                "check the dataset and collate_fn",
            ) from exc
        if targets.numel() == 0:
            raise TaskValidationError(
                "the evaluation set yielded no samples",
                "at least one (input, target) sample in Task.eval_data",
                "check the split that builds eval_data",
            )
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= num_outputs:
            raise TaskValidationError(
                f"evaluation labels range over [{lo}, {hi}] but the model has {num_outputs} outputs",
                f"integer labels in [0, {num_outputs - 1}]",
                "match the classifier's output size to the number of classes, or remap the labels",
            )
    return task


def _load_factory_from_file(path: Path) -> Callable[[], Any]:
    if not path.is_file():
        raise TaskError(
            f"task file {str(path)!r} does not exist",
            "a path to a .py file that defines task(), a built-in name "
            f"({', '.join(sorted(BUILTIN_TASKS))}) or package.module:function",
            "check the path",
        )
    module_name = f"_autocompress_task_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"task file {str(path)!r} cannot be imported", "a Python source file", "check the file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise TaskError(
            f"task file {str(path)!r} raised {type(exc).__name__} on import: {exc}",
            "a task file that imports cleanly",
            "run `python " + str(path) + "` to see the full error, or add --debug",
        ) from exc
    factory = getattr(module, "task", None)
    if not callable(factory):
        raise TaskError(
            f"task file {str(path)!r} defines no task() function",
            "a module-level function task() that returns an autocompress.Task",
            "add def task(): return autocompress.Task(...)",
        )
    return factory


def _load_factory_from_ref(ref: str) -> Callable[[], Any]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TaskError(
            f"module {module_name!r} of task {ref!r} could not be imported ({type(exc).__name__}: {exc})",
            "an importable package.module:function",
            "check the module name and that its package is installed or on PYTHONPATH",
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(
            f"module {module_name!r} has no function {attr!r}",
            "package.module:function naming a function that returns an autocompress.Task",
            "check the function name after the colon",
        )
    return factory


def load_task(spec: str) -> Task:
    """Load and validate a task from a built-in name, a ``.py`` file defining ``task()``, ``module:function``, or
    a ``files:{...}`` reference to a model and data files (:meth:`autocompress.tasks.files.FilesSpec.ref`)."""
    spec = str(spec)
    if spec.startswith("files:"):
        # A model and data files named on the command line (autocompress.tasks.files), before the path test:
        # the reference's JSON holds slashes.
        from .tasks.files import task_from_ref

        return validate_task(task_from_ref(spec))
    if spec in BUILTIN_TASKS:
        factory = _load_factory_from_ref(BUILTIN_TASKS[spec])
    elif spec.endswith(".py") or "/" in spec or Path(spec).is_file():
        factory = _load_factory_from_file(Path(spec))
    elif ":" in spec:
        factory = _load_factory_from_ref(spec)
    else:
        raise TaskError(
            f"unknown task {spec!r}",
            f"a built-in name ({', '.join(sorted(BUILTIN_TASKS))}), a path to a .py file that defines task(), "
            "or package.module:function",
            "check the spelling, or pass a path ending in .py",
        )
    try:
        task = factory()
    except AutocompressError:
        raise
    except Exception as exc:
        raise TaskError(
            f"task() of {spec!r} raised {type(exc).__name__}: {exc}",
            "a task() that returns an autocompress.Task",
            "fix the task function; add --debug for the traceback",
        ) from exc
    return validate_task(task)
