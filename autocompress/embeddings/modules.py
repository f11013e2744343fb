"""The replacement embedding modules and the helpers that find, check and swap embeddings in a model.

- :class:`TrimmedEmbedding`: a compact float table of the kept rows plus an id-remap buffer over the original
  vocabulary, so the model still takes the original token ids; ids outside the kept set read the unknown row.
- :class:`Int8Embedding`: int8 rows with one float32 scale per row (symmetric), optionally behind the same
  remap; forward gathers the int8 rows of the ids and scales only those.

Both are registered with :mod:`autocompress._arch`, so an ``autocompress`` archive rebuilds them from their
recorded attributes and tensor shapes. They are not ``nn.Embedding`` subclasses on purpose: torch.ao's dynamic
quantization and Hugging Face weight initialisation match ``nn.Embedding`` and must leave them alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import _arch
from .._tensors import ModelInput
from ..errors import ConfigError

REMAP_DTYPE = torch.int32  # 4 bytes per original id: half of int64, and ample for any vocabulary
INT8_MAX = 127


class EmbeddingError(ConfigError):
    """An embedding cannot be trimmed or quantized as asked (tied weights, bad ids, an empty keep set)."""


def _gather_rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    # index_select on flattened ids: one Gather in ONNX, and any table dtype (int8, int32) in TorchScript.
    flat = torch.index_select(table, 0, ids.reshape(-1))
    return flat.reshape(ids.shape + table.shape[1:])


@_arch.register_replacement
class TrimmedEmbedding(nn.Module):
    """A word embedding over a kept subset of the vocabulary that still takes original token ids.

    ``weight`` [rows, dim] is a trainable float Parameter (fine-tuning still works); ``remap`` [num_embeddings]
    maps every original id to its row, ids outside the kept set to ``unk_row``. ``num_embeddings`` stays the
    original vocabulary size (the ids the module accepts); ``padding_idx`` is an original id, and its row gets
    no gradient, as in ``nn.Embedding``.
    """

    def __init__(self, num_embeddings: int, rows: int, embedding_dim: int, unk_id: int, unk_row: int,
                 padding_idx: int | None = None, compact_padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.rows, self.embedding_dim = num_embeddings, rows, embedding_dim
        self.unk_id, self.unk_row = unk_id, unk_row
        self.padding_idx, self.compact_padding_idx = padding_idx, compact_padding_idx
        self.weight = nn.Parameter(torch.zeros(rows, embedding_dim))
        self.register_buffer("remap", torch.full((num_embeddings,), unk_row, dtype=REMAP_DTYPE))

    @classmethod
    def from_record(cls, attrs: Mapping[str, Any], tensors: Mapping[str, Any]) -> TrimmedEmbedding:
        return cls(attrs["num_embeddings"], attrs["rows"], attrs["embedding_dim"], attrs["unk_id"],
                   attrs["unk_row"], attrs.get("padding_idx"), attrs.get("compact_padding_idx"))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = _gather_rows(self.remap, input_ids).long()
        return F.embedding(rows, self.weight, self.compact_padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} ids -> {self.rows} rows, {self.embedding_dim}, unk_id={self.unk_id}"


@_arch.register_replacement
class Int8Embedding(nn.Module):
    """Weight-only int8 embedding: int8 rows, one float32 scale per row, optional id remap (trimmed vocabulary).

    ``weight`` is a read-only property that dequantizes the whole table, for code that reads it; forward
    dequantizes only the gathered rows. The module has no parameters: fine-tune before quantizing.
    """

    def __init__(self, num_embeddings: int, rows: int, embedding_dim: int, padding_idx: int | None = None,
                 has_remap: bool = False, unk_id: int | None = None, unk_row: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.rows, self.embedding_dim = num_embeddings, rows, embedding_dim
        self.padding_idx, self.has_remap, self.unk_id, self.unk_row = padding_idx, has_remap, unk_id, unk_row
        self.register_buffer("int8_weight", torch.zeros(rows, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(rows, dtype=torch.float32))
        remap = torch.zeros(num_embeddings, dtype=REMAP_DTYPE) if has_remap else None
        self.register_buffer("remap", remap)

    @classmethod
    def from_record(cls, attrs: Mapping[str, Any], tensors: Mapping[str, Any]) -> Int8Embedding:
        return cls(attrs["num_embeddings"], attrs["rows"], attrs["embedding_dim"], attrs.get("padding_idx"),
                   bool(attrs.get("has_remap")), attrs.get("unk_id"), attrs.get("unk_row"))

    @property
    def weight(self) -> torch.Tensor:
        return self.int8_weight.float() * self.scale.unsqueeze(1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = _gather_rows(self.remap, input_ids).long() if self.remap is not None else input_ids
        return _gather_rows(self.int8_weight, rows).float() * _gather_rows(self.scale, rows).unsqueeze(-1)

    def extra_repr(self) -> str:
        remap = f"{self.num_embeddings} ids -> " if self.has_remap else ""
        return f"{remap}{self.rows} rows, {self.embedding_dim}, int8 per-row scales"


EMBEDDING_TYPES = (nn.Embedding, TrimmedEmbedding, Int8Embedding)


class BytesSaved:
    """What a step's result record says about bytes: ``bytes_before`` - ``bytes_after``."""

    bytes_before: int
    bytes_after: int

    @property
    def bytes_saved(self) -> int:
        return self.bytes_before - self.bytes_after
REMAPPED_TYPES = (TrimmedEmbedding, Int8Embedding)


# --------------------------------------------------------------------------------------------- model helpers
def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise EmbeddingError(f"an embedding {type(module).__name__} that is not a module of the model",
                         "one of the model's own modules (or its name)", "pass model.get_input_embeddings()")


def resolve_embedding(model: nn.Module, embedding: nn.Module | str | None) -> str:
    """The module name of the word embedding: given by name or module, else Hugging Face's input embedding."""
    if isinstance(embedding, str):
        named = dict(model.named_modules())
        if embedding not in named:
            raise EmbeddingError(f"embedding name {embedding!r}", "the name of one of the model's modules",
                                 "check model.named_modules()")
        return embedding
    if embedding is None:
        getter = getattr(model, "get_input_embeddings", None)
        if getter is None:
            raise EmbeddingError(f"a {type(model).__name__} without get_input_embeddings()",
                                 "the word embedding to trim", "pass embedding=<its module name>")
        embedding = getter()
    return module_name(model, embedding)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def refuse_tied(model: nn.Module, name: str, action: str) -> None:
    """One-line refusal when the weight of embedding ``name`` is shared with another module (an LM head)."""
    module = model.get_submodule(name)
    weight = module._parameters.get("weight")
    if weight is None:
        return
    sharers = [n for n, p in model.named_parameters(remove_duplicate=False)
               if p is weight and n != f"{name}.weight"]
    if sharers:
        raise EmbeddingError(f"the embedding {name!r} shares its weight with {sharers[0]!r} (tied to an output "
                             "layer, as GPT-2 and language-model heads do)", f"an untied embedding to {action}",
                             "untie the output layer first (copy its weight), or leave this embedding as it is")


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's own parameters and buffers (as stored in a state dict, remap included)."""
    tensors = list(module._parameters.values()) + list(module._buffers.values())
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def remapped_embedding(model: nn.Module) -> nn.Module | None:
    """The first module with an id remap (trimmed vocabulary), or None."""
    return next((m for m in model.modules() if isinstance(m, REMAPPED_TYPES) and m.remap is not None), None)


def add_remap_probe_rows(model: nn.Module, x: ModelInput, rows: int = 2, seed: int = 0) -> ModelInput:
    """``x`` plus ``rows`` rows of token ids drawn over the whole original vocabulary, when ``model`` has a
    trimmed vocabulary, so a reload check also covers ids that the remap sends to the unknown row.

    The ids go to ``input_ids`` (a dict input) or to an integer tensor input; other keys copy the first row
    (an attention mask is set to ones so every drawn id counts). Unchanged for models without a remap.
    """
    embedding = remapped_embedding(model)
    if embedding is None:
        return x
    ids = x.get("input_ids") if isinstance(x, Mapping) else x
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dim() != 2:
        return x
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.randint(0, embedding.num_embeddings, (rows, ids.shape[1]), generator=gen, dtype=ids.dtype)
    outside = (embedding.remap == embedding.unk_row).nonzero().flatten()
    outside = outside[outside != embedding.unk_id]
    if len(outside):  # at least one id outside the kept set, whatever the draw gave
        drawn[:, -1] = outside[torch.randint(0, len(outside), (rows,), generator=gen)].to(ids.dtype)
    if not isinstance(x, Mapping):
        return torch.cat([x, drawn])
    extra = {k: v[:1].expand(rows, *v.shape[1:]) for k, v in x.items()}
    extra["input_ids"] = drawn
    if "attention_mask" in extra:
        extra["attention_mask"] = torch.ones_like(extra["attention_mask"])
    return {k: torch.cat([v, extra[k]]) for k, v in x.items()}
