"""Tasks without code: a model and data files named on the command line become an :class:`autocompress.Task`.

``--model`` is a Hugging Face classifier folder or ``torchvision:NAME`` with ``--weights`` (see
:mod:`.files_models`); ``--data`` a text table or an image folder (see :mod:`.files_data`). Evaluation data
come from ``--eval-data`` or a stratified split of ``--data`` (20 %, ``--split-seed``, default 0).

Studies, benchmarks and the dashboard re-load a task from a string, so the options are a frozen
:class:`FilesSpec` written as ``files:{json}`` with absolute paths (:meth:`FilesSpec.ref`);
:func:`autocompress.task.load_task` hands such a reference to :func:`task_from_ref`, which builds the same
task again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TaskError
from ..task import Task
from . import files_data as data_io
from .files_models import TORCHVISION_PREFIX, ModelSource, inspect_model, label_ids

FILES_PREFIX = "files:"
METRICS = ("accuracy", "f1")
EVAL_FRACTION = 0.2
MAX_TEXT_TOKENS = 128  # the longest tokenized text kept (fewer when the model's positions or the data are shorter)
TEXT_BATCH_SIZE = 32
IMAGE_BATCH_SIZE = 64
PROCESSOR_CHUNK = 64  # images per call of a Hugging Face image processor


@dataclass(frozen=True)
class FilesSpec:
    """The options of a task without code; paths are absolute so the reference works from any folder."""

    model: str
    data: str
    weights: str | None = None
    eval_data: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    metric: str = "accuracy"
    split_seed: int = 0
    image_size: int | None = None

    def ref(self) -> str:
        """The task reference ``files:{json}`` that :func:`autocompress.task.load_task` rebuilds the task from."""
        return FILES_PREFIX + json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_ref(cls, ref: str) -> FilesSpec:
        text = ref[len(FILES_PREFIX):] if ref.startswith(FILES_PREFIX) else ref
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskError(f"task reference {ref[:80]!r} is not valid JSON after files: ({exc.msg})",
                            "files:{\"model\": ..., \"data\": ...} as FilesSpec.ref() writes it",
                            "rebuild it with FilesSpec(...).ref()") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(fields, dict) or not {"model", "data"} <= set(fields) or set(fields) - known:
            raise TaskError(f"task reference {ref[:80]!r} holds {sorted(fields) if isinstance(fields, dict) else fields}",
                            f"a JSON object with model, data and optionally {', '.join(sorted(known - {'model', 'data'}))}",
                            "rebuild it with FilesSpec(...).ref()")
        return files_spec(**fields)

    @property
    def name(self) -> str:
        """A short readable task name: the model folder's (or torchvision architecture's) name and the data's."""
        from .._io import safe_component

        model = self.model[len(TORCHVISION_PREFIX):] if self.model.startswith(TORCHVISION_PREFIX) \
            else Path(self.model).name
        return safe_component(f"{model}-{Path(self.data).stem}")


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def files_spec(model: str, data: str, *, weights: str | None = None, eval_data: str | None = None,
               text_column: str | None = None, label_column: str | None = None, metric: str | None = None,
               split_seed: int | None = None, image_size: int | None = None) -> FilesSpec:
    """A checked :class:`FilesSpec` with absolute paths (one-line errors for bad option values)."""
    metric = metric or "accuracy"
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}", f"one of {', '.join(METRICS)}", "pass --metric accuracy or f1")
    if image_size is not None and not 8 <= int(image_size) <= 1024:
        raise ConfigError(f"--image-size {image_size}", "an image side in pixels from 8 to 1024",
                          "pass e.g. --image-size 64")
    if not str(model).startswith(TORCHVISION_PREFIX):
        model = _absolute(model)  # type: ignore[assignment]
    return FilesSpec(model=str(model), data=str(_absolute(data)), weights=_absolute(weights),
                     eval_data=_absolute(eval_data), text_column=text_column, label_column=label_column,
                     metric=metric, split_seed=int(split_seed or 0),
                     image_size=None if image_size is None else int(image_size))


def task_from_ref(ref: str) -> Task:
    """The task a ``files:`` reference describes (not yet validated: :func:`load_task` does that)."""
    return build_task(FilesSpec.from_ref(ref))


# --------------------------------------------------------------------------------------------- building
def build_task(spec: FilesSpec) -> Task:
    """Read the model and data files and assemble the task; one-line errors for anything that does not fit."""
    source = inspect_model(spec.model, spec.weights)
    kind = data_io.data_kind(Path(spec.data))
    eval_kind = data_io.data_kind(Path(spec.eval_data), "--eval-data") if spec.eval_data else kind
    if eval_kind != kind:
        raise TaskError(f"--data {spec.data} is {_kind_words(kind)} but --eval-data {spec.eval_data} is "
                        f"{_kind_words(eval_kind)}", "training and evaluation data of one kind",
                        "pass two tables or two image folders")
    wanted = "table" if source.modality == "text" else "images"
    if kind != wanted:
        raise TaskError(f"--data {spec.data} is {_kind_words(kind)} but --model {spec.model} is "
                        f"{'a text' if source.modality == 'text' else 'an image'} classifier ({source.architecture})",
                        f"{_kind_words(wanted)} for this model",
                        "pass data of the model's kind, or a model for this data")
    if kind == "table":
        return _text_task(spec, source)
    return _image_task(spec, source)


def _kind_words(kind: str) -> str:
    return "a text table" if kind == "table" else "an image folder"


def _split(spec: FilesSpec, labels: list[int], n_train: int) -> tuple[list[int], list[int], str]:
    """Train and eval indices into the rows (with --eval-data its rows follow the n_train of --data)."""
    if spec.eval_data:
        return list(range(n_train)), list(range(n_train, len(labels))), f"evaluation data {Path(spec.eval_data).name}"
    train, held = data_io.stratified_split(labels, EVAL_FRACTION, spec.split_seed)
    return train, held, f"a stratified {EVAL_FRACTION:.0%} split, seed {spec.split_seed}"


def _text_task(spec: FilesSpec, source: ModelSource) -> Task:
    import torch

    from .files_models import load_text_model
    from .text import EncodedTexts

    table = data_io.read_table(Path(spec.data))
    text_column = data_io.pick_column(table, spec.text_column, data_io.TEXT_COLUMNS, "text")
    label_column = data_io.pick_column(table, spec.label_column, data_io.LABEL_COLUMNS, "label")
    texts, names = data_io.texts_and_labels(table, text_column, label_column)
    n_train = len(texts)
    if spec.eval_data:
        eval_table = data_io.read_table(Path(spec.eval_data))
        more_texts, more_names = data_io.texts_and_labels(
            eval_table, data_io.pick_column(eval_table, text_column, (), "text"),
            data_io.pick_column(eval_table, label_column, (), "label"))
        texts, names = texts + more_texts, names + more_names
    labels, classes = label_ids(names, source, table=True)
    train, held, split_words = _split(spec, labels, n_train)

    model, tokenizer = load_text_model(source)
    limits = [MAX_TEXT_TOKENS, getattr(model.config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    max_length = min(int(v) for v in limits if isinstance(v, int) and v > 0)
    # Padded to the longest text (within max_length) once; training and evaluation then cut each batch to its own.
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    encoded = {k: encoded[k] for k in ("input_ids", "attention_mask")}

    def subset(rows: list[int]) -> EncodedTexts:
        index = torch.as_tensor(rows, dtype=torch.long)
        return EncodedTexts({k: v[index] for k, v in encoded.items()}, torch.as_tensor(labels)[index])

    train_data, eval_data = subset(train), subset(held)
    description = (f"{Path(spec.data).name}: text column {text_column!r}, label column {label_column!r} "
                   f"({len(classes)} classes: {data_io.listed(classes, limit=6)}); {len(train)} to train, "
                   f"{len(held)} to evaluate ({split_words}); {source.architecture} from "
                   f"{Path(source.location).name}, at most {encoded['input_ids'].shape[1]} tokens")
    return Task(
        name=spec.name, model=model, train_data=train_data, eval_data=eval_data,
        example_input={"input_ids": eval_data.input_ids[:1], "attention_mask": eval_data.attention_mask[:1]},
        metric=spec.metric, batch_size=TEXT_BATCH_SIZE, description=description,
        extra={"tokenizer": tokenizer, "classes": tuple(classes), "files": spec.ref()},
        unk_token_id=tokenizer.unk_token_id, special_token_ids=tuple(tokenizer.all_special_ids),
    )


def _image_task(spec: FilesSpec, source: ModelSource) -> Task:
    import torch
    from torch.utils.data import TensorDataset

    folder = data_io.read_image_folder(Path(spec.data))
    files, names = list(folder.files), list(folder.labels)
    n_train = len(files)
    if spec.eval_data:
        eval_folder = data_io.read_image_folder(Path(spec.eval_data))
        files, names = files + eval_folder.files, names + eval_folder.labels
    labels, classes = label_ids(names, source, table=False)
    train, held, split_words = _split(spec, labels, n_train)

    if source.kind == "torchvision":
        from .files_models import load_torchvision_model

        side = spec.image_size or data_io.default_image_side(files)
        pixels = data_io.images_as_tensor(files, side)
        model = load_torchvision_model(source.location, str(spec.weights), len(classes))
        how = f"resized to {side}x{side}, ImageNet mean/std"
    else:
        from .files_models import load_image_model

        model, processor = load_image_model(source)
        chunks = []
        for start in range(0, len(files), PROCESSOR_CHUNK):
            images = data_io.load_pil_images(files[start:start + PROCESSOR_CHUNK])
            chunks.append(processor(images=images, return_tensors="pt")["pixel_values"])
        pixels = torch.cat(chunks)
        how = f"{type(processor).__name__}, {tuple(pixels.shape[2:])}"
    y = torch.as_tensor(labels, dtype=torch.long)
    index_train, index_eval = torch.as_tensor(train), torch.as_tensor(held)
    eval_data = TensorDataset(pixels[index_eval], y[index_eval])
    description = (f"{Path(spec.data).name}: image folder of {len(classes)} classes "
                   f"({data_io.listed(classes, limit=6)}), {len(train)} to train, {len(held)} to evaluate "
                   f"({split_words}); {source.architecture} ({how})")
    return Task(
        name=spec.name, model=model, train_data=TensorDataset(pixels[index_train], y[index_train]),
        eval_data=eval_data, example_input=eval_data.tensors[0][:1], metric=spec.metric,
        batch_size=IMAGE_BATCH_SIZE, description=description,
        extra={"classes": tuple(classes), "files": spec.ref()},
    )


# --------------------------------------------------------------------------------------------- benchmarks
def bench_definition_for(definition: str | Path, spec: FilesSpec, folder: str | Path) -> Path:
    """A copy of the benchmark file ``definition`` whose only task is ``spec``'s, written into ``folder`` as
    ``<name>-<task>.yaml`` (kept beside the tables, so ``autocompress bench`` on it reproduces them)."""
    import yaml

    from .._io import atomic_write
    from ..bench.definition import load_definition

    path = Path(definition)
    original = load_definition(path)  # one-line errors for the file itself
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    raw["name"] = f"{original.name}-{spec.name}"
    raw["tasks"] = [spec.ref()]
    target = Path(folder) / f"{raw['name']}.yaml"
    text = f"# {path.name} with --model {spec.model} --data {spec.data}\n" + yaml.safe_dump(raw, sort_keys=False)
    return atomic_write(target, lambda fh: fh.write(text.encode("utf-8")))
