"""Reading a user's data files for a task without code: a text table or an image folder, and its split.

A text table is a CSV (or TSV), JSON Lines or Parquet file with a text column and a label column. Without
``--text-column`` / ``--label-column`` the first column named like one of :data:`TEXT_COLUMNS` /
:data:`LABEL_COLUMNS` is used (names compared case-insensitively). Labels are kept as strings here; turning
them into class ids against the model's labels is :func:`autocompress.tasks.files_models.label_ids`' job.

An image folder has torchvision's ImageFolder layout: one subfolder per class, images anywhere below it,
classes in sorted order. The evaluation set is a second file or folder, or else a stratified split with a seed.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TaskError, describe_error

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS = ("label", "labels", "target", "class", "sentiment")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
# torchvision's IMG_EXTENSIONS, as ImageFolder reads them
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 32, 64  # torchvision models' default input side: the folder's, within these


class DataFileError(TaskError):
    """A data file or image folder that cannot be read as a task's data."""


def listed(values: Sequence[Any], limit: int = 12) -> str:
    """``values`` comma-separated for a message, the first ``limit`` of them and the count when there are more."""
    items = [str(v) if len(str(v)) <= 40 else str(v)[:39] + "…" for v in values]
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --------------------------------------------------------------------------------------------- kinds
def data_kind(path: Path, option: str = "--data") -> str:
    """``"images"`` for a folder, ``"table"`` for a CSV/TSV/JSONL/Parquet file; a one-line error otherwise."""
    if path.is_dir():
        return "images"
    if not path.exists():
        raise DataFileError(f"{option} {path} does not exist", "a CSV, JSONL or Parquet file, or an image folder",
                            "check the path")
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    raise DataFileError(f"{option} {path} is a {path.suffix or 'suffix-less'} file",
                        "a .csv, .tsv, .jsonl or .parquet file with text and label columns, or an image folder "
                        "with one subfolder per class", "convert the data to one of these")


# --------------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Table:
    """The rows of a text table, each a mapping from column name to value."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"line {number} of {path} is not JSON ({exc.msg})",
                                        "one JSON object per line", "fix that line") from None
                if not isinstance(row, dict):
                    raise DataFileError(f"line {number} of {path} holds a {type(row).__name__}",
                                        "one JSON object per line, e.g. {\"text\": ..., \"label\": ...}",
                                        "write each row as an object") from None
                rows.append(row)
        return rows
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileError(f"{path} is a Parquet file but pyarrow is not installed",
                            "pyarrow to read Parquet", "pip install pyarrow, or pass a CSV or JSONL file") from None
    return pq.read_table(path).to_pylist()


def read_table(path: Path) -> Table:
    """All rows of a CSV/TSV, JSON Lines or Parquet file; a one-line error for an unreadable or empty file."""
    try:
        rows = _read_rows(path)
    except DataFileError:
        raise
    # What a broken file raises: OSError (and pyarrow's ArrowIOError), UnicodeDecodeError and pyarrow's
    # ArrowInvalid (both ValueErrors), csv.Error for a malformed CSV.
    except (OSError, ValueError, csv.Error) as exc:
        raise DataFileError(f"{path} could not be read ({describe_error(exc, limit=200)})",
                            "a readable CSV, JSONL or Parquet file", "check the file") from None
    if not rows:
        raise DataFileError(f"{path} holds no rows", "a table with a header and at least one row per class",
                            "check the file")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(str(k) for k in row))
    return Table(path, tuple(columns), rows)


def pick_column(table: Table, wanted: str | None, defaults: Sequence[str], role: str) -> str:
    """The column ``wanted`` (or, when None, the first of ``defaults``) of ``table``, matched case-insensitively."""
    by_folded = {}
    for column in table.columns:
        by_folded.setdefault(column.casefold(), column)
    if wanted is not None:
        found = wanted if wanted in table.columns else by_folded.get(wanted.casefold())
        if found is None:
            raise DataFileError(f"--{role}-column {wanted!r} is not a column of {table.path.name} "
                                f"(columns: {listed(table.columns)})", f"one of the file's columns for the {role}",
                                f"pass --{role}-column with one of them")
        return found
    for name in defaults:
        if name in by_folded:
            return by_folded[name]
    raise DataFileError(f"{table.path.name} has no {role} column (columns: {listed(table.columns)})",
                        f"a column named {' or '.join(defaults)} (any case)", f"pass --{role}-column NAME")


def label_text(value: Any) -> str | None:
    """A label value as its name: ``3``, ``3.0`` and ``"3"`` are all ``"3"``; None or blank is None."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    text = str(value).strip()
    return text or None


def texts_and_labels(table: Table, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """The text and the label name of every row; a row without a label is a one-line error naming it."""
    texts, labels = [], []
    for number, row in enumerate(table.rows, 1):
        label = label_text(row.get(label_column))
        if label is None:
            raise DataFileError(f"row {number} of {table.path.name} has no value in label column {label_column!r}",
                                "a label in every row", "fill it in or drop the row")
        text = row.get(text_column)
        texts.append("" if text is None else " ".join(str(text).split()))
        labels.append(label)
    distinct = len(set(labels))
    if distinct > 20 and distinct > len(labels) // 2:  # a text column, not classes: a few labels repeat a lot
        raise DataFileError(f"label column {label_column!r} of {table.path.name} holds {distinct} different values "
                            f"in {len(labels)} rows", "a column of class labels, each shared by many rows",
                            "pass --label-column with the class column")
    return texts, labels


# --------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageFolder:
    """The image files of a folder in ImageFolder layout and each one's class name (its subfolder)."""

    path: Path
    classes: tuple[str, ...]
    files: list[Path]
    labels: list[str]


def read_image_folder(path: Path) -> ImageFolder:
    """The images below each class subfolder of ``path`` (sorted, as torchvision's ImageFolder lists them)."""
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[str] = []
    empty = []
    for folder in subfolders:
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            empty.append(folder.name)
        files += found
        labels += [folder.name] * len(found)
    if empty:
        raise DataFileError(f"class folders {listed(empty)} of {path} hold no images",
                            f"images ({', '.join(IMAGE_SUFFIXES)}) in every class subfolder",
                            "remove the empty folders or add images")
    classes = tuple(folder.name for folder in subfolders)
    if len(classes) < 2:
        received = f"one class ({classes[0]})" if classes else "no class subfolders"
        raise DataFileError(f"image folder {path} has {received}",
                            "an ImageFolder layout with at least two class subfolders (DIR/cat/*.png, DIR/dog/*.png)",
                            "put each class's images in a subfolder named after the class")
    return ImageFolder(path, classes, files, labels)


def _open_image(file: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataFileError(f"image {file} could not be read ({describe_error(exc, limit=150)})",
                            "a readable image file", "remove or replace it") from None


def default_image_side(files: Sequence[Path]) -> int:
    """The images' median longer side, kept within [32, 64]: torchvision models' input side unless
    ``--image-size`` says otherwise (224 would make every epoch many times slower on a CPU)."""
    from PIL import Image

    sides = []
    for file in files:
        try:
            with Image.open(file) as image:  # reads the header only
                sides.append(max(image.size))
        except OSError:
            continue  # an unreadable file is reported by the loading that follows
    side = sorted(sides)[len(sides) // 2] if sides else MAX_IMAGE_SIDE
    return max(MIN_IMAGE_SIDE, min(MAX_IMAGE_SIDE, side))


def load_pil_images(files: Sequence[Path]) -> list[Any]:
    """Each file as an RGB PIL image (grey images are repeated over three channels)."""
    return [_open_image(f) for f in files]


def images_as_tensor(files: Sequence[Path], side: int) -> Any:
    """Images resized to ``side`` × ``side``, scaled to [0, 1] and normalised with ImageNet's mean and standard
    deviation (torchvision's convention): a float tensor (N, 3, side, side)."""
    import numpy as np
    import torch
    from PIL import Image

    pixels = np.stack([np.asarray(_open_image(f).resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint8)
                       for f in files])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------- split
def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices to train on and to evaluate: ``fraction`` of each class held out, the same for a given seed."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    rare = sorted(str(c) for c, n in counts.items() if n < 2)
    if rare:
        raise DataFileError(f"class {listed(rare)} has a single sample",
                            "at least two samples per class for a stratified evaluation split",
                            "add samples, or pass the evaluation set with --eval-data")
    held_out = -(-len(labels) * fraction // 1)
    if held_out < len(counts) or len(labels) - held_out < len(counts):
        raise DataFileError(f"{len(labels)} samples of {len(counts)} classes",
                            f"enough samples for every class on both sides of a {fraction:.0%} evaluation split",
                            "add samples, or pass the evaluation set with --eval-data")
    train, held = train_test_split(list(range(len(labels))), test_size=fraction, stratify=list(labels),
                                   random_state=seed)
    return [int(i) for i in train], [int(i) for i in held]
