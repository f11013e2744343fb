"""Attention layers as single nodes of the dependency graph, and pruning them by whole heads or head widths.

Torch-Pruning's walk through an attention's inner operations (head reshapes, rotary ``rotate_half`` slices,
window partitions and rolls) maps channel indices again and again and can take minutes and gigabytes on a
model of a few thousand weights (Llama, Mistral, torchvision Swin). So every recognised attention is traced
as ONE opaque node: during tracing its forward runs without autograd and its output is tied to its input by a
single autograd node; a Torch-Pruning "customized pruner" prunes its input width (the columns of q/k/v) and
its output width (the rows of the output projection, or of q/k/v when the projection sits outside). Heads and
head widths are pruned here, directly on the projections.

Attention is recognised by a small table of projection names (:data:`PROJECTIONS`, one row per naming
convention, each row naming its families) and by the head attributes the module carries, not by class names.
Attentions with a fused q/k/v projection (GPT-2, Phi-3, torchvision Swin/MaxViT) are traced the same way but
kept whole, so the rest of the model can still be pruned.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Projections:
    """The attribute names of one naming convention of q/k/v (and output) projections."""

    q: str
    k: str
    v: str
    o: str | None  # the output projection when it sits inside the attention module
    families: str


PROJECTIONS = (
    Projections("query", "key", "value", "dense", "ALBERT (output dense and LayerNorm inside)"),
    Projections("query", "key", "value", None, "BERT, RoBERTa, XLM-R, ELECTRA, MobileViT"),
    Projections("q_lin", "k_lin", "v_lin", "out_lin", "DistilBERT"),
    Projections("query_proj", "key_proj", "value_proj", None, "DeBERTa-v2"),
    Projections("q", "k", "v", "o", "MPNet"),
    Projections("q_proj", "k_proj", "v_proj", "out_proj", "OPT, BART"),
    Projections("q_proj", "k_proj", "v_proj", "o_proj", "Llama, Mistral, Qwen2, Gemma, ViT, DeiT, BEiT, Swin"),
)
# Fused q/k/v projections: traced as one node, kept whole (their heads are interleaved in one layer).
FUSED = {"qkv_proj": "Phi-3", "c_attn": "GPT-2", "qkv": "torchvision Swin", "to_qkv": "torchvision MaxViT"}
HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_heads")
HEAD_DIM_ATTRS = ("attention_head_size", "head_dim")
INNER_WIDTH_ATTRS = ("all_head_size", "embed_dim", "dim", "split_size")  # heads x head size, where forward reads it
BIAS_TABLE = "relative_position_bias_table"  # one column per head


@dataclass
class Attention:
    """One recognised attention module and what limits its pruning."""

    module: nn.Module
    name: str
    proj: Projections | None  # None: a fused q/k/v projection, kept whole
    heads: int = 0
    head_dim: int = 0
    kv_heads: int = 0
    rotary: bool = False  # rotary embeddings fix the head width
    heads_fixed: str = ""  # why whole heads cannot go (a table shared by every layer), else ""
    kept_whole: str = ""  # why nothing in it can be pruned, else ""
    tables: list[tuple[nn.Module, str]] = field(default_factory=list)  # per-head bias tables next to it

    def layer(self, role: str) -> nn.Linear:
        return getattr(self.module, getattr(self.proj, role))

    @property
    def residual_inside(self) -> bool:
        """ALBERT adds the residual and normalises inside the attention: its input and output widths are one."""
        return self.proj is not None and self.proj.o is not None and isinstance(
            getattr(self.module, "LayerNorm", None), nn.LayerNorm)


def _linear(module: nn.Module, name: str | None) -> bool:
    return name is not None and isinstance(module._modules.get(name), nn.Linear)


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    return next((getattr(module, n) for n in names if isinstance(getattr(module, n, None), int)), None)


def recognise(module: nn.Module, name: str = "") -> Attention | None:
    """The :class:`Attention` record of ``module`` if it is an attention this module knows, else None."""
    for proj in PROJECTIONS:
        if not all(_linear(module, n) for n in (proj.q, proj.k, proj.v)) or \
                (proj.o is not None and not _linear(module, proj.o)):
            continue
        head_dim = _int_attr(module, HEAD_DIM_ATTRS)
        heads = _int_attr(module, HEAD_ATTRS)
        q_width = module._modules[proj.q].out_features
        if head_dim is None and heads:
            head_dim = q_width // heads
        if not head_dim or q_width % head_dim:
            continue
        found = Attention(module, name, proj, q_width // head_dim, head_dim,
                          module._modules[proj.k].out_features // head_dim)
        params = inspect.signature(module.forward).parameters
        found.rotary = "position_embeddings" in params
        if "position_bias" in params:  # MPNet: one relative bias table for all layers, one column per head
            found.heads_fixed = "its relative position bias is shared by every layer"
        if any(n.startswith("pos_") for n in module._modules):  # DeBERTa's relative (disentangled) attention
            found.kept_whole = "its relative-position projections read a width the graph does not trace"
        return found
    for fused, family in FUSED.items():
        if fused in module._modules and _int_attr(module, HEAD_ATTRS + ("num_key_value_heads",)) is not None:
            return Attention(module, name, None, kept_whole=f"{family} attention: q, k and v share one fused "
                                                            f"projection ({fused})")
    return None


def find_attention(model: nn.Module) -> list[Attention]:
    """Every outermost recognised attention of ``model``, with the per-head tables beside it."""
    found: list[Attention] = []
    inside: set[int] = set()
    parents = {id(c): p for p in model.modules() for c in p.children()}
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        record = recognise(module, name)
        if record is None:
            continue
        inside.update(id(m) for m in module.modules())
        found.append(record)
    owners: dict[int, list[Attention]] = {}
    for record in found:  # a bias table in the attention or beside it (its parent), one column per head
        scope = parents.get(id(record.module), record.module)
        for m in scope.modules():
            table = getattr(m, BIAS_TABLE, None)
            if isinstance(table, nn.Parameter) and record.heads and table.shape[-1] == record.heads:
                record.tables.append((m, BIAS_TABLE))
                owners.setdefault(id(m), []).append(record)
    for sharing in owners.values():
        if len(sharing) > 1:
            for record in sharing:
                record.heads_fixed = "its relative position bias table is shared with another layer"
    return found


class AttentionPruner:
    """Torch-Pruning's view of an opaque attention: input width = q/k/v columns, output width = the output
    projection's rows (or q/k/v rows when the projection sits outside the module)."""

    def __init__(self, records: dict[int, Attention]) -> None:
        self.records = records

    def _record(self, layer: nn.Module) -> Attention:
        return self.records[id(layer)]

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        import torch_pruning as tp

        record = self._record(layer)
        for role in ("q", "k", "v"):
            tp.prune_linear_in_channels(record.layer(role), idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        import torch_pruning as tp

        record = self._record(layer)
        if record.proj.o is None:
            for role in ("q", "k", "v"):
                tp.prune_linear_out_channels(record.layer(role), idxs)
        else:
            tp.prune_linear_out_channels(record.layer("o"), idxs)
            if record.residual_inside:
                tp.prune_layernorm_out_channels(layer.LayerNorm, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return self._record(layer).layer("q").in_features

    def get_out_channels(self, layer: nn.Module) -> int:
        record = self._record(layer)
        return record.layer("v").out_features if record.proj.o is None else record.layer("o").out_features

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        return 1

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return 1


class CoupledAttentionPruner(AttentionPruner):
    """For attentions that add their input to their output (ALBERT): one width, pruned on both sides."""

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        super().prune_out_channels(layer, idxs)
        return super().prune_in_channels(layer, idxs)

    prune_in_channels = prune_out_channels


def customized_pruners(attention: list[Attention]) -> dict[type, Any]:
    """The Torch-Pruning pruner of each attention class (keyed by class, as the dependency graph looks it up)."""
    import torch_pruning as tp

    records = {id(a.module): a for a in attention}
    pruners: dict[type, Any] = {}
    for a in attention:
        base = _Whole if a.proj is None else CoupledAttentionPruner if a.residual_inside else AttentionPruner
        cls = type(f"{base.__name__}For{type(a.module).__name__}", (base, tp.pruner.function.BasePruningFunc), {})
        pruners.setdefault(type(a.module), cls(records))
    return pruners


class _Whole(AttentionPruner):
    """A fused attention kept whole: a node of the graph whose groups are never pruned (see graph.analyse)."""

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise ValueError(f"{type(layer).__name__} is kept whole (fused q/k/v projection)")

    prune_out_channels = prune_in_channels

    def get_in_channels(self, layer: nn.Module) -> None:
        return None

    get_out_channels = get_in_channels


class _Opaque(torch.autograd.Function):
    """Ties an attention's output to its input by one autograd node (tracing only, never differentiated)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        return None, None


@contextmanager
def opaque(attention: list[Attention]) -> Iterator[None]:
    """While active, each attention's forward is one node of the autograd graph (see the module docstring)."""
    originals = []
    for a in attention:
        module = a.module
        original = module.forward

        def forward(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            hidden = next((t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)), None)
            with torch.no_grad():
                out = __original(*args, **kwargs)
            if hidden is None or not hidden.requires_grad:
                return out
            if isinstance(out, tuple):
                return (_Opaque.apply(hidden, out[0]), *out[1:])
            return _Opaque.apply(hidden, out)

        module.forward = forward
        originals.append(module)
    try:
        yield
    finally:
        for module in originals:
            del module.forward  # the class's forward shows again


def head_scores(a: Attention) -> torch.Tensor:
    """The L1 magnitude of each query head's weights (q rows, and o columns when o sits inside): [heads]."""
    q = a.layer("q").weight.detach().abs().sum(1).view(a.heads, a.head_dim).sum(1)
    if a.proj.o is not None:
        q = q + a.layer("o").weight.detach().abs().sum(0).view(a.heads, a.head_dim).sum(1)
    return q


def prune_attention(a: Attention, keep_heads: int, keep_dim: int, DG: Any) -> None:
    """Keep ``keep_heads`` query heads (the same number in every key/value group) of ``keep_dim`` channels
    each, best by weight magnitude: prune q/k/v rows and the columns that read the attention's output (the
    output projection inside, or through the dependency graph the layer after it)."""
    import torch_pruning as tp

    groups = max(1, a.heads // max(1, a.kv_heads))  # query heads per key/value head
    scores = head_scores(a)
    if a.kv_heads < a.heads:  # grouped-query attention: drop the same number of query heads in each group
        per_group = max(1, keep_heads // a.kv_heads)
        drop_heads = [g * groups + int(i) for g in range(a.kv_heads)
                      for i in torch.argsort(scores.view(a.kv_heads, groups)[g])[: groups - per_group]]
    else:
        drop_heads = torch.argsort(scores)[: a.heads - keep_heads].tolist()
    keep = [h for h in range(a.heads) if h not in set(drop_heads)]
    # Head width: drop the same channels of every kept head, lowest |q| + |k| over the kept heads first.
    q, k = a.layer("q").weight.detach().abs().sum(1), a.layer("k").weight.detach().abs().sum(1)
    per_dim = q.view(a.heads, a.head_dim)[keep].sum(0) + k.view(a.kv_heads, a.head_dim).sum(0)
    drop_dims = torch.argsort(per_dim)[: a.head_dim - keep_dim].tolist()
    q_drop = sorted({h * a.head_dim + d for h in drop_heads for d in range(a.head_dim)} |
                    {h * a.head_dim + d for h in keep for d in drop_dims})
    kv_drop = sorted({h * a.head_dim + d for h in range(a.kv_heads) for d in drop_dims}) \
        if a.kv_heads < a.heads else q_drop
    if not q_drop:
        return
    if a.proj.o is None:  # q/k/v rows and the next layer's columns, through the graph (see AttentionPruner)
        DG.get_pruning_group(a.module, DG.get_pruner_of_module(a.module).prune_out_channels, q_drop).prune()
    else:
        tp.prune_linear_out_channels(a.layer("q"), q_drop)
        if kv_drop:
            tp.prune_linear_out_channels(a.layer("k"), kv_drop)
            tp.prune_linear_out_channels(a.layer("v"), kv_drop)
        # The output projection reads one value-width block per query head.
        tp.prune_linear_in_channels(a.layer("o"), q_drop)
    for table_owner, attr in a.tables:
        table = getattr(table_owner, attr)
        if len(keep) < table.shape[-1]:
            setattr(table_owner, attr, nn.Parameter(table.detach()[..., keep].clone(),
                                                    requires_grad=table.requires_grad))
    old_dim = a.head_dim
    a.heads, a.head_dim = len(keep), keep_dim
    a.kv_heads = a.layer("k").out_features // keep_dim
    sync_attributes(a, old_dim)


def sync_attributes(a: Attention, old_dim: int) -> None:
    """Write the head count, head width and inner width into the attributes the module's forward reads."""
    m = a.module
    for name in HEAD_ATTRS:
        if isinstance(getattr(m, name, None), int):
            setattr(m, name, a.heads)
    for name in HEAD_DIM_ATTRS:
        if isinstance(getattr(m, name, None), int):
            setattr(m, name, a.head_dim)
    for name in INNER_WIDTH_ATTRS:
        if isinstance(getattr(m, name, None), int):
            setattr(m, name, a.heads * a.head_dim)
    if isinstance(getattr(m, "num_key_value_groups", None), int):
        m.num_key_value_groups = a.heads // max(1, a.kv_heads)
    if isinstance(getattr(m, "num_key_value_heads", None), int):
        m.num_key_value_heads = a.kv_heads
    scaling = getattr(m, "scaling", None)
    if isinstance(scaling, float) and math.isclose(scaling, old_dim ** -0.5):
        m.scaling = a.head_dim ** -0.5  # as a model built from the pruned config computes it
