"""The embedding-compression config record and the function that applies it.

``EmbeddingConfig`` is a frozen, versioned record (kind ``embeddings``) that round-trips through JSON like the
other technique configs; :func:`apply_embeddings` trims the vocabulary to the ids of the training data and/or
stores the embeddings as int8, in that order, on a copy of the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import Config, register_config
from .int8 import Int8EmbeddingResult, quantize_embeddings
from .modules import EmbeddingError
from .trim import TrimResult, collect_token_ids, trim_vocabulary


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@register_config("embeddings")
@dataclass(frozen=True)
class EmbeddingConfig(Config):
    """Embedding compression. ``trim_vocabulary``: keep only the word-embedding rows of the ids in the training
    data (plus ``special_ids``, ``unk_id`` and padding; other ids read the ``unk_id`` row). ``int8``: per-row
    int8 word, position and token-type embeddings. ``unk_id``: the tokenizer's unknown-token id, needed to
    trim (it may also be given to :func:`apply_embeddings`)."""

    trim_vocabulary: bool = False
    int8: bool = False
    unk_id: int | None = None
    special_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("trim_vocabulary", "int8"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise EmbeddingError(f"embeddings {name}={value!r}", "true or false", f"pass {name}=True or False")
        if self.unk_id is not None and not _is_id(self.unk_id):
            raise EmbeddingError(f"embeddings unk_id={self.unk_id!r}", "a token id (an int >= 0) or None",
                                 "pass the tokenizer's unk_token_id")
        if isinstance(self.special_ids, list):  # a list from Python code: kept as a tuple, so it stays hashable
            object.__setattr__(self, "special_ids", tuple(self.special_ids))
        if not isinstance(self.special_ids, tuple) or not all(_is_id(i) for i in self.special_ids):
            raise EmbeddingError(f"embeddings special_ids={self.special_ids!r}", "a list of token ids (ints >= 0)",
                                 "pass the tokenizer's all_special_ids")

    @property
    def enabled(self) -> bool:
        return self.trim_vocabulary or self.int8


@dataclass(frozen=True)
class EmbeddingResult:
    """The compressed copy of the model and what each step did (None for a step that was off)."""

    model: nn.Module
    config: EmbeddingConfig
    trim: TrimResult | None = None
    int8: Int8EmbeddingResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "trim": self.trim.to_dict() if self.trim else None,
                "int8": self.int8.to_dict() if self.int8 else None}


def apply_embeddings(model: nn.Module, config: EmbeddingConfig, train_data: Iterable[Any] | None = None, *,
                     unk_id: int | None = None, special_ids: Iterable[int] = (), key: str = "input_ids",
                     embedding: nn.Module | str | None = None) -> EmbeddingResult:
    """Apply ``config`` to a copy of ``model``: trim the vocabulary to the ids of ``train_data`` (the task's
    training loader; ``key`` names the ids in its input dicts), then int8 the embeddings. ``unk_id`` and
    ``special_ids`` add to the config's (the config's ``unk_id`` wins when both are given)."""
    if not isinstance(config, EmbeddingConfig):
        raise EmbeddingError(f"config of type {type(config).__name__}", "an EmbeddingConfig",
                             "build one with EmbeddingConfig(trim_vocabulary=..., int8=...)")
    current, trim, int8 = model, None, None
    if config.trim_vocabulary:
        unk = config.unk_id if config.unk_id is not None else unk_id
        if unk is None:
            raise EmbeddingError("vocabulary trimming without an unknown-token id", "the tokenizer's unk id",
                                 "set EmbeddingConfig(unk_id=...) or pass unk_id=tokenizer.unk_token_id")
        if train_data is None:
            raise EmbeddingError("vocabulary trimming without training data", "the data whose token ids to keep",
                                 "pass train_data=task.train_loader()")
        keep = collect_token_ids(train_data, key)
        trim = trim_vocabulary(current, keep, unk, (*config.special_ids, *special_ids), embedding)
        current = trim.model
    if config.int8:
        int8 = quantize_embeddings(current)
        current = int8.model
    model = current if config.enabled else copy.deepcopy(model)  # always a copy, as each step returns
    return EmbeddingResult(model=model, config=config, trim=trim, int8=int8)
