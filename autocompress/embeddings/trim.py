"""Vocabulary trimming: keep only the word-embedding rows of the token ids a task's data uses.

A pretrained encoder's word embedding covers a tokenizer's whole vocabulary (30,522 rows for BERT WordPiece),
most of which one task never sees. :func:`trim_vocabulary` swaps it for a :class:`TrimmedEmbedding` of the kept
rows plus an id remap, so the model still takes the original ids; other ids read the unknown-token row.
:func:`collect_token_ids` gathers the ids of a data set, :func:`oov_rate` says how many evaluation tokens the
trim turns into the unknown token.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .modules import (
    REMAP_DTYPE,
    BytesSaved,
    EmbeddingError,
    TrimmedEmbedding,
    refuse_tied,
    remapped_embedding,
    replace_module,
    resolve_embedding,
    tensor_bytes,
)


def _ids_of(item: Any, key: str) -> torch.Tensor | None:
    """The token-id tensor of one item: ``(input, target)``, an input dict, or a tensor."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, Mapping):
        item = item.get(key)
    return item if isinstance(item, torch.Tensor) else None


def _ids_or_error(item: Any, key: str, what: str, fix: str) -> torch.Tensor:
    ids = _ids_of(item, key)
    if ids is None:
        raise EmbeddingError(f"{what} of type {type(item).__name__} without an id tensor under {key!r}",
                             "(input, target) pairs whose input dict holds token ids, or id tensors", fix)
    return ids


def _mask_of(item: Any) -> torch.Tensor | None:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    mask = item.get("attention_mask") if isinstance(item, Mapping) else None
    return mask if isinstance(mask, torch.Tensor) else None


def collect_token_ids(data: Iterable[Any], key: str = "input_ids") -> set[int]:
    """The distinct token ids in ``data``: a Dataset, DataLoader or iterable of ``(input, target)`` whose input
    is a dict of tensors (``input[key]`` holds the ids), of input dicts, or of id tensors."""
    seen: set[int] = set()
    for item in data:
        ids = _ids_or_error(item, key, "a data item",
                            "pass the task's loader, or key=<the input name of the token ids>")
        if ids.is_floating_point():
            raise EmbeddingError(f"token ids of dtype {ids.dtype}", "an integer tensor of token ids",
                                 f"check that {key!r} holds token ids")
        seen.update(torch.unique(ids).tolist())
    return seen


@dataclass(frozen=True)
class TrimResult:
    """A trimmed copy of the model and the figures of the trim (embedding bytes include the remap buffer)."""

    model: nn.Module
    embedding_name: str
    kept: int
    original_vocab: int
    bytes_before: int
    bytes_after: int

    bytes_saved = BytesSaved.bytes_saved

    def to_dict(self) -> dict[str, Any]:
        return {"embedding": self.embedding_name, "kept_ids": self.kept, "original_vocab": self.original_vocab,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "bytes_saved": self.bytes_saved}


def _check_id(value: Any, vocab: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        raise EmbeddingError(f"{what} {value!r}", f"an int token id in [0, {vocab})",
                             "pass an id of the tokenizer this model was trained with")
    return value


def trim_vocabulary(model: nn.Module, keep_ids: Iterable[int], unk_id: int, special_ids: Iterable[int] = (),
                    embedding: nn.Module | str | None = None) -> TrimResult:
    """A deep copy of ``model`` whose word embedding keeps only the rows of ``keep_ids``, ``special_ids``,
    ``unk_id`` and the padding id; the copy still takes the original ids (others read the ``unk_id`` row).

    ``embedding``: the ``nn.Embedding`` to trim (module or name); default ``model.get_input_embeddings()``.
    Refuses an embedding tied to an output layer (its rows are also the output vocabulary).
    """
    keep = {int(i) for i in keep_ids}
    if not keep:
        raise EmbeddingError("an empty set of token ids to keep", "the ids the task's data uses",
                             "pass collect_token_ids(task.train_loader())")
    name = resolve_embedding(model, embedding)
    source = model.get_submodule(name)
    if not isinstance(source, nn.Embedding):
        raise EmbeddingError(f"module {name!r} is a {type(source).__name__}", "an nn.Embedding (untrimmed, float)",
                             "trim before quantizing embeddings, and only once")
    refuse_tied(model, name, "trim")
    if source.max_norm is not None:
        raise EmbeddingError(f"embedding {name!r} with max_norm={source.max_norm}", "an embedding without max_norm "
                             "(it renormalises rows in place)", "trim another embedding")
    vocab, dim = source.num_embeddings, source.embedding_dim
    _check_id(unk_id, vocab, "unk_id")
    specials = {_check_id(i, vocab, "special id") for i in special_ids}
    outside = sorted(i for i in keep if not 0 <= i < vocab)
    if outside:
        raise EmbeddingError(f"token ids {outside[:5]} to keep", f"ids in [0, {vocab}) of this embedding",
                             "collect the ids with the tokenizer this model was trained with")
    padding = source.padding_idx
    kept = sorted(keep | specials | {unk_id} | ({padding} if padding is not None else set()))
    index = torch.tensor(kept, dtype=torch.long)
    row_of = {original: row for row, original in enumerate(kept)}
    trimmed = TrimmedEmbedding(vocab, len(kept), dim, unk_id, row_of[unk_id], padding,
                               row_of[padding] if padding is not None else None)
    with torch.no_grad():
        trimmed.weight.copy_(source.weight.detach()[index])
        trimmed.remap[index] = torch.arange(len(kept), dtype=REMAP_DTYPE)
    trimmed.weight.requires_grad_(source.weight.requires_grad)
    trimmed.to(source.weight.device)
    result_model = copy.deepcopy(model)
    replace_module(result_model, name, trimmed)
    return TrimResult(model=result_model, embedding_name=name, kept=len(kept), original_vocab=vocab,
                      bytes_before=tensor_bytes(source), bytes_after=tensor_bytes(trimmed))


@dataclass(frozen=True)
class OOVRate:
    """How many evaluation tokens (padding excluded) a trimmed vocabulary maps to the unknown row although they
    were not the unknown id, and how many rows hold at least one such token."""

    tokens: int
    oov_tokens: int
    rows: int
    oov_rows: int

    @property
    def token_rate(self) -> float:
        return self.oov_tokens / self.tokens if self.tokens else 0.0

    @property
    def row_rate(self) -> float:
        return self.oov_rows / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "oov_tokens": self.oov_tokens, "token_rate": self.token_rate,
                "rows": self.rows, "oov_rows": self.oov_rows, "row_rate": self.row_rate}


def oov_rate(trimmed: TrimResult | nn.Module, eval_data: Iterable[Any], key: str = "input_ids") -> OOVRate:
    """The :class:`OOVRate` of ``eval_data`` (as :func:`collect_token_ids` takes it) under a trimmed model.

    Padding is excluded by the ``attention_mask`` when the input has one, else by the embedding's padding id.
    """
    model = trimmed.model if isinstance(trimmed, TrimResult) else trimmed
    embedding = remapped_embedding(model)
    if embedding is None:
        raise EmbeddingError(f"a {type(model).__name__} without a trimmed vocabulary", "a model from "
                             "trim_vocabulary", "trim the model first")
    remap = embedding.remap.cpu()
    tokens = oov_tokens = rows = oov_rows = 0
    for item in eval_data:
        ids = _ids_or_error(item, key, "an eval item", "pass the task's eval loader")
        ids = ids.cpu().reshape(-1, ids.shape[-1]) if ids.dim() else ids.reshape(1, 1)
        mask = _mask_of(item)
        if mask is not None:
            counted = mask.cpu().reshape(ids.shape).bool()
        elif embedding.padding_idx is not None:
            counted = ids != embedding.padding_idx
        else:
            counted = torch.ones_like(ids, dtype=torch.bool)
        oov = (remap[ids] == embedding.unk_row) & (ids != embedding.unk_id) & counted
        tokens += int(counted.sum())
        oov_tokens += int(oov.sum())
        rows += ids.shape[0]
        oov_rows += int(oov.any(dim=1).sum())
    return OOVRate(tokens=tokens, oov_tokens=oov_tokens, rows=rows, oov_rows=oov_rows)
