"""Weight-only int8 embeddings: each row stored as int8 with one float32 scale (symmetric, per row).

torch.ao's dynamic quantization swaps Linear layers only, so the embeddings (a third to a half of a small
encoder) stay float. :func:`quantize_embeddings` swaps word (trimmed or not), position and token-type
embeddings for :class:`Int8Embedding`; a row's error is at most half its scale. The result composes with
``autocompress.quantization.quantize`` (dynamic int8 of the Linear layers leaves these modules alone).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .modules import (
    BytesSaved,
    EMBEDDING_TYPES,
    INT8_MAX,
    EmbeddingError,
    Int8Embedding,
    TrimmedEmbedding,
    refuse_tied,
    replace_module,
    tensor_bytes,
)

# A state dict stores each tensor as its own zip member with a header and 64-byte alignment: an embedding is
# worth quantizing (by default) only when it saves more than this, so a 2-row token-type table is left alone.
MIN_SAVING_BYTES = 1024


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``(int8 rows, float32 scale per row)`` with ``|w - q * scale| <= scale / 2``.

    An all-zero row gets scale 1 (its int8 values are zeros), so no scale is ever zero.
    """
    weight = weight.detach().float().cpu()
    peak = weight.abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / INT8_MAX, torch.ones_like(peak))
    q = torch.round(weight / scale.unsqueeze(1)).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def int8_embedding(source: nn.Module) -> Int8Embedding:
    """The :class:`Int8Embedding` of an ``nn.Embedding`` or a :class:`TrimmedEmbedding` (remap kept)."""
    if isinstance(source, Int8Embedding):
        return copy.deepcopy(source)
    rows, dim = source.weight.shape
    if isinstance(source, TrimmedEmbedding):
        module = Int8Embedding(source.num_embeddings, rows, dim, source.padding_idx, True, source.unk_id,
                               source.unk_row)
        module.remap.copy_(source.remap.cpu())
    else:
        if source.max_norm is not None:
            raise EmbeddingError(f"an embedding with max_norm={source.max_norm}",
                                 "an embedding without max_norm (it renormalises rows in place)",
                                 "leave this embedding out of names=")
        module = Int8Embedding(source.num_embeddings, rows, dim, source.padding_idx)
    q, scale = quantize_rows(source.weight)
    module.int8_weight.copy_(q)
    module.scale.copy_(scale)
    return module


@dataclass(frozen=True)
class Int8EmbeddingResult:
    """A copy of the model with int8 embeddings, which ones, and their bytes before and after."""

    model: nn.Module
    names: tuple[str, ...]
    bytes_before: int
    bytes_after: int

    bytes_saved = BytesSaved.bytes_saved

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": list(self.names), "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "bytes_saved": self.bytes_saved}


def _float_embeddings(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Embedding, TrimmedEmbedding))]


def _pays(module: nn.Module) -> bool:
    rows, dim = module.weight.shape
    return rows * dim * (module.weight.element_size() - 1) - rows * 4 > MIN_SAVING_BYTES


def quantize_embeddings(model: nn.Module, names: Iterable[str] | None = None) -> Int8EmbeddingResult:
    """A deep copy of ``model`` whose embeddings ``names`` are :class:`Int8Embedding` modules.

    Default: every float embedding (``nn.Embedding`` or trimmed) whose int8 form saves more than
    :data:`MIN_SAVING_BYTES`; embeddings tied to an output layer are skipped by default, refused when named.
    """
    subject = copy.deepcopy(model)
    named = dict(subject.named_modules())
    if names is None:
        chosen = []
        for name in _float_embeddings(subject):
            try:
                refuse_tied(subject, name, "quantize")
            except EmbeddingError:  # a tied embedding is also the output layer: not ours to change by default
                continue
            if _pays(named[name]):
                chosen.append(name)
    else:
        chosen = list(dict.fromkeys(names))
        for name in chosen:
            module = named.get(name)
            if not isinstance(module, EMBEDDING_TYPES):
                what = "no module" if module is None else f"a {type(module).__name__}"
                raise EmbeddingError(f"embedding name {name!r} ({what})", "names of nn.Embedding or trimmed "
                                     f"embeddings: {', '.join(_float_embeddings(subject)) or 'none in this model'}",
                                     "pick names from that list, or pass names=None")
            refuse_tied(subject, name, "quantize")
    if not chosen:
        raise EmbeddingError(f"a {type(model).__name__} with no embedding worth int8", "a float nn.Embedding or "
                             "trimmed embedding of more than a few rows", "leave int8 embeddings off for this model")
    before = after = 0
    for name in chosen:
        source = named[name]
        replacement = int8_embedding(source).to(source.weight.device)
        before += tensor_bytes(source)
        after += tensor_bytes(replacement)
        replace_module(subject, name, replacement)
    return Int8EmbeddingResult(model=subject, names=tuple(chosen), bytes_before=before, bytes_after=after)
