"""The models of a task without code: a saved Hugging Face classifier folder or a torchvision architecture with a
state-dict file, what kind of input each takes, and how the data's label names become the model's class ids.

A Hugging Face folder (written by ``save_pretrained``) is a text model when its config names a
``...ForSequenceClassification`` architecture (else when it holds a tokenizer), an image model when it names a
``...ForImageClassification`` one (else when it holds an image processor's ``preprocessor_config.json``).
A torchvision model is ``torchvision:NAME``: the architecture built with the data's number of classes and the
weights loaded with ``torch.load(weights_only=True)``, so nothing is unpickled.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._hf import quiet_transformers
from ..errors import TaskError, describe_error
from .files_data import listed

TORCHVISION_PREFIX = "torchvision:"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


class ModelSourceError(TaskError):
    """A ``--model`` that is not a usable model folder or torchvision architecture, or weights that do not fit."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is ``"huggingface"`` or ``"torchvision"``; ``modality`` ``"text"`` or
    ``"image"``; ``location`` the folder or the torchvision name; ``architecture`` what to call it in messages."""

    kind: str
    modality: str
    location: str
    architecture: str
    config: dict[str, Any]

    @property
    def label_names(self) -> list[str] | None:
        """The config's ``id2label`` names in id order when they mean something (not LABEL_0, LABEL_1, ...)."""
        id2label = self.config.get("id2label") or {}
        try:
            names = [str(id2label[key]) for key in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            return None
        if not names or all(_GENERIC_LABEL.fullmatch(n) for n in names):
            return None
        return names

    @property
    def num_outputs(self) -> int | None:
        """The classifier's output count the config declares (None for torchvision: the data decides)."""
        if self.kind != "huggingface":
            return None
        return len(self.config.get("id2label") or {}) or self.config.get("num_labels") or 2


def inspect_model(model: str, weights: str | None) -> ModelSource:
    """What ``--model`` names, read from its config only (no weights loaded); a one-line error when it is neither
    a saved Hugging Face classifier folder nor ``torchvision:NAME`` with ``--weights``."""
    if model.startswith(TORCHVISION_PREFIX):
        return _inspect_torchvision(model[len(TORCHVISION_PREFIX):], weights)
    path = Path(model)
    expected = "a folder written by save_pretrained (config.json, weights, tokenizer or image processor), or " \
               "torchvision:NAME with --weights FILE"
    if not path.exists():
        raise ModelSourceError(f"--model {model} does not exist", expected, "check the path")
    if path.is_file():
        raise ModelSourceError(f"--model {model} is a file, not a model folder", expected,
                               "for a torchvision architecture's state dict pass --model torchvision:NAME --weights "
                               f"{model}; for weights of --task's model leave out --data")
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"--model {model} is not a saved model (no config.json in it)", expected,
                               "save the model and its tokenizer or image processor with save_pretrained(folder)")
    if weights is not None:
        raise ModelSourceError(f"--weights {weights} with the Hugging Face folder {model}",
                               "--weights only with --model torchvision:NAME (the folder holds its own weights)",
                               "leave out --weights")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path / 'config.json'} could not be read ({describe_error(exc, limit=150)})",
                               "a JSON config written by save_pretrained", "save the model again") from None
    architectures = [str(a) for a in config.get("architectures") or []]
    architecture = architectures[0] if architectures else str(config.get("model_type", "unknown"))
    has_tokenizer = any((path / f).is_file() for f in TOKENIZER_FILES)
    has_processor = (path / IMAGE_PROCESSOR_FILE).is_file()
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        modality = "text"
    elif any(a.endswith("ForImageClassification") for a in architectures):
        modality = "image"
    elif has_tokenizer != has_processor:
        modality = "text" if has_tokenizer else "image"
    else:
        raise ModelSourceError(f"--model {model} holds a {architecture} model",
                               "a sequence classifier (text) or an image classifier",
                               "save an AutoModelForSequenceClassification or AutoModelForImageClassification")
    if modality == "text" and not has_tokenizer:
        raise ModelSourceError(f"--model {model} holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])})",
                               "the text model's tokenizer in its folder", "tokenizer.save_pretrained(folder)")
    if modality == "image" and not has_processor:
        raise ModelSourceError(f"--model {model} holds no image processor ({IMAGE_PROCESSOR_FILE})",
                               "the image model's processor in its folder", "image_processor.save_pretrained(folder)")
    return ModelSource("huggingface", modality, str(path), architecture, config)


def _inspect_torchvision(name: str, weights: str | None) -> ModelSource:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # the classification models only
    if name not in known:
        raise ModelSourceError(f"--model torchvision:{name} is not a torchvision classification model",
                               f"one of {listed(sorted(known), limit=8)}", "check the name, e.g. torchvision:resnet18")
    if weights is None:
        raise ModelSourceError(f"--model torchvision:{name} without --weights",
                               "the trained weights: a state dict saved with torch.save(model.state_dict(), FILE)",
                               "pass --weights FILE")
    if not Path(weights).is_file():
        raise ModelSourceError(f"--weights {weights} does not exist", "a state-dict file", "check the path")
    return ModelSource("torchvision", "image", name, f"torchvision {name}", {})


# --------------------------------------------------------------------------------------------- labels
def label_ids(names: Sequence[str], source: ModelSource, table: bool) -> tuple[list[int], list[str]]:
    """Each label name's class id, and the class names in id order.

    With meaningful ``id2label`` names in the config, the data's labels must be those names (any case) or, in a
    table, their ids. Otherwise a table's integer labels are ids; other labels take ids in sorted order (an
    image folder's always do: torchvision's ImageFolder order), and their number must match the model's outputs.
    A mismatch is a one-line error listing both sides.
    """
    seen = sorted(set(names))
    model_names = source.label_names
    numeric = table and all(n.lstrip("-").isdigit() for n in seen)
    if model_names is not None:
        exact = {n: i for i, n in enumerate(model_names)}
        folded = {n.casefold(): i for i, n in enumerate(model_names)}
        mapping = {n: exact.get(n, folded.get(n.casefold())) for n in seen}
        if numeric and any(v is None for v in mapping.values()):
            mapping = {n: int(n) if 0 <= int(n) < len(model_names) else None for n in seen}
        missing = [n for n, i in mapping.items() if i is None]
        if missing:
            raise ModelSourceError(f"the data's labels ({listed(seen)}) do not match the model's id2label "
                                   f"({listed(model_names)}): {listed(missing, limit=5)} not found",
                                   "data labels named as in the model's config (any case), or its ids",
                                   "rename the labels in the data, or fix id2label in the model's config.json")
        return [mapping[n] for n in names], list(model_names)  # type: ignore[misc]
    outputs = source.num_outputs
    generic = [f"LABEL_{i}" for i in range(outputs)] if outputs else []
    if numeric:
        ids = [int(n) for n in names]
        count = outputs or max(ids) + 1
        if min(ids) < 0 or max(ids) >= count:
            raise ModelSourceError(f"the data's labels ({listed(seen)}) do not fit the model's {count} outputs "
                                   f"({listed(generic)})", f"integer labels in 0..{count - 1}",
                                   "use a model with as many outputs as classes, or remap the labels")
        return ids, [str(i) for i in range(count)]
    if outputs is not None and outputs != len(seen):
        raise ModelSourceError(f"{len(seen)} labels in the data ({listed(seen)}) but {outputs} model outputs "
                               f"({listed(generic)})", "one model output per class",
                               "set id2label in the model's config.json to the class names, or fix the data")
    index = {n: i for i, n in enumerate(seen)}
    return [index[n] for n in names], seen


# --------------------------------------------------------------------------------------------- loading
def _from_folder(source: ModelSource, model_class: Any, preprocessor_class: Any, kind: str,
                 preprocessor: str) -> tuple[Any, Any]:
    """A classifier and its preprocessor (tokenizer or image processor) from a save_pretrained folder."""
    try:
        with quiet_transformers():
            prep = preprocessor_class.from_pretrained(source.location, local_files_only=True)
            model = model_class.from_pretrained(source.location, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:  # what from_pretrained raises for a folder it cannot read
        raise ModelSourceError(f"the {kind} model in {source.location} could not be loaded "
                               f"({describe_error(exc, limit=200)})", f"a {kind} classifier saved with "
                               f"save_pretrained, with its {preprocessor}", "save it again with save_pretrained") \
            from None
    return model, prep


def load_text_model(source: ModelSource) -> tuple[Any, Any]:
    """The sequence classifier (eval mode) and its tokenizer from the folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = _from_folder(source, AutoModelForSequenceClassification, AutoTokenizer, "text", "tokenizer")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoder tokenizers (GPT-2) have none; the mask hides it
        model.config.pad_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


def load_image_model(source: ModelSource) -> tuple[Any, Any]:
    """The image classifier (eval mode) and its image processor from the folder."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model, processor = _from_folder(source, AutoModelForImageClassification, AutoImageProcessor, "image",
                                    "image processor")
    return model.eval(), processor


def load_torchvision_model(name: str, weights: str, num_classes: int) -> Any:
    """torchvision's ``name`` with ``num_classes`` outputs and the state dict in ``weights`` (never unpickled)."""
    import torch
    import torchvision

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    # weights_only refuses a pickled module with UnpicklingError; garbage raises that, EOFError or RuntimeError.
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as exc:
        raise ModelSourceError(f"--weights {weights} could not be read as a state dict "
                               f"({describe_error(exc, limit=150)})", "a file written by "
                               "torch.save(model.state_dict(), FILE) (a whole pickled model is refused)",
                               "save the state dict rather than the model") from None
    if not isinstance(state, dict):
        raise ModelSourceError(f"--weights {weights} holds a {type(state).__name__}", "a state dict",
                               "save it with torch.save(model.state_dict(), FILE)")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected keys, or shapes of another class count
        matrices = [v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() == 2]
        held = f" (its last layer has {matrices[-1].shape[0]} outputs)" if matrices else ""
        raise ModelSourceError(f"--weights {weights}{held} do not fit torchvision {name} with the data's "
                               f"{num_classes} classes ({describe_error(exc, limit=160)})",
                               f"a state dict of {name}(num_classes={num_classes})",
                               "check the architecture name and that the data has the classes it was trained on") \
            from None
    return model.eval()
