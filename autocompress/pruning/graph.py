"""The dependency-graph side of pruning: which channels are coupled, what kind each coupled group is, and
pruning a group to a width or by whole attention heads.

Built on Torch-Pruning's :class:`~torch_pruning.DependencyGraph`: layers whose channels are coupled (residual
adds, concatenations, flatten into a linear layer, the q/k/v projections of one attention) form one group,
because the traced graph says so, not because of name lists. Each group is classified (conv, linear,
attention, a Hugging Face hidden width, a model output, or a width the config cannot express) so a strategy
can pick the kinds it prunes; groups that feed the model's output are never pruned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .attention import Attention, prune_attention
from .importance import Importance
from .transformers import config_widths, hf_width_config


def root_types() -> tuple[type, ...]:
    """The layer types whose output channels a group is rooted at (and pruned by)."""
    import torch_pruning as tp

    return (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM)


def is_batchnorm(module: nn.Module) -> bool:
    import torch_pruning as tp

    return isinstance(module, tp.ops.TORCH_BATCHNORM)


@dataclass
class Group:
    """One coupled channel group of the traced model."""

    kind: str  # conv | linear | attention | hidden | output | fixed
    roots: list[nn.Module]  # conv/linear layers whose output channels this group prunes
    width: int
    names: list[str]
    has_bn: bool
    group: Any  # the Torch-Pruning group with every channel


@dataclass
class Analysis:
    """Every coupled group of a model, and the attention structure pruned by heads."""

    groups: list[Group]
    mha_groups: list[list[nn.MultiheadAttention]]  # each: the MultiheadAttention modules sharing one width
    attention: list[Attention]  # recognised attentions whose heads or head widths can be pruned
    hf_hidden_roots: list[nn.Module]  # one root layer per group tied to the HF hidden size
    untraced: list[str]
    field_roots: dict[str, list[nn.Module]]  # HF config width field -> root layers of the groups it describes
    tied_hidden: bool = False  # the HF config derives the head width from the hidden size
    blocked: list[str] = field(default_factory=list)  # attentions kept whole, each with why


def channel_groups(pruner: Any, group: Any) -> int:
    """Into how many channel groups (group convolution, GroupNorm) the coupled ``group`` is split; 1 if none.

    Torch-Pruning counts this in ``BasePruner._get_channel_groups``, a private method. This is the same count
    from public parts only: the pruner's ``in_channel_groups``/``out_channel_groups`` (filled at construction
    with every grouped layer) and ``DependencyGraph.is_out_channel_pruning_fn``. tests/test_pruning.py checks
    it against the private method, so a change in how Torch-Pruning counts groups fails a test, not a study.
    """
    counts = []
    for dep, _ in group:
        by_module = pruner.out_channel_groups if pruner.DG.is_out_channel_pruning_fn(dep.handler) else \
            pruner.in_channel_groups
        if dep.target.module in by_module:
            counts.append(by_module[dep.target.module])
    return max(counts, default=1)


def touches_output(DG: Any, group: Any) -> bool:
    """Whether pruning this group would change the model's output (nodes with no consumer are outputs)."""
    for dep, _ in group:
        node = dep.target
        if node.outputs:
            continue
        if isinstance(node.module, nn.Module) and DG.is_in_channel_pruning_fn(dep.handler) and \
                not DG.is_out_channel_pruning_fn(dep.handler):
            continue  # input features of an output layer: the output keeps its size
        return True
    return False


def analyse(model: nn.Module, DG: Any, attention: list[Attention]) -> Analysis:
    """Classify every coupled channel group of the traced model by the kind of layer it prunes."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    hf = hf_width_config(model)
    widths = config_widths(hf) if hf is not None else {}
    traced = [a for a in attention if a.module in DG.module2node]
    whole = {id(a.module): a for a in traced if a.kept_whole}
    leaves = {id(a.module) for a in traced}
    roots_of = root_types()
    groups: list[Group] = []
    mha_groups: list[list[nn.MultiheadAttention]] = []
    hidden_roots: list[nn.Module] = []
    field_roots: dict[str, list[nn.Module]] = {}
    for group in DG.get_all_groups(ignored_layers=[], root_module_types=roots_of):
        out_modules = [dep.target.module for dep, _ in group
                       if isinstance(dep.target.module, nn.Module) and DG.is_out_channel_pruning_fn(dep.handler)]
        in_modules = [dep.target.module for dep, _ in group
                      if isinstance(dep.target.module, nn.Module) and DG.is_in_channel_pruning_fn(dep.handler)]
        roots = [m for m in dict.fromkeys(out_modules) if isinstance(m, roots_of)]
        mhas = [m for m in dict.fromkeys(out_modules) if isinstance(m, nn.MultiheadAttention)]
        width = len(group[0].idxs)
        blocking = [whole[id(m)].name for m in out_modules + in_modules if id(m) in whole]
        if touches_output(DG, group):
            kind = "output"
        elif mhas:
            kind = "attention"  # torch MultiheadAttention ties its heads to the width it sits in
            mha_groups.append(mhas)
        elif blocking:
            kind, roots = "fixed", roots or []
            names.update({r: f"{names.get(r, '?')} (tied to {blocking[0]})" for r in roots})
        elif widths:
            touches_attention = any(id(m) in leaves for m in in_modules + out_modules)
            config_field = _hf_field(widths, width, touches_attention)
            kind = "fixed" if config_field is None else "hidden" if config_field == "hidden_size" else "linear"
            if config_field is not None:
                field_roots.setdefault(config_field, []).extend(roots[:1])
            if kind == "hidden":
                hidden_roots.append(roots[0])
        elif any(isinstance(m, tp.ops.TORCH_CONV) for m in roots):
            kind = "conv"
        else:
            kind = "linear"
        has_bn = any(is_batchnorm(m) for m in out_modules)
        groups.append(Group(kind, roots, width, [names.get(m, "?") for m in roots], has_bn, group))
    inside = {id(m) for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()}
    inside |= {id(m) for a in traced for m in a.module.modules()}
    untraced = [n for n, m in model.named_modules()
                if isinstance(m, roots_of) and m not in DG.module2node and id(m) not in inside]
    prunable = [a for a in traced if not a.kept_whole]
    # Rotary embeddings fix the head width, so the hidden width goes free (the config then records head_dim;
    # whether it builds the same model is checked in .transformers.patch_hf_config).
    tied = bool(widths) and not getattr(hf, "head_dim", None) and not any(a.rotary for a in prunable)
    blocked = [f"{a.name} ({a.kept_whole})" for a in traced if a.kept_whole]
    return Analysis(groups, mha_groups, prunable, hidden_roots, untraced, field_roots, tied, blocked)


def _hf_field(widths: dict[str, int], width: int, touches_attention: bool) -> str | None:
    """Which Hugging Face config field describes a group of ``width`` channels (None: no field, kept)."""
    if touches_attention and width == widths.get("hidden_size"):
        return "hidden_size"
    for name, value in widths.items():
        if value == width:
            return name
    return None


def heads_to_remove(fraction: float, heads: int) -> int:
    """The nearest whole number of ``heads`` to ``fraction`` of them, never all of them."""
    return max(0, min(heads - 1, int(math.floor(fraction * heads + 0.5 + 1e-9))))


class LayerFloor:
    """Wraps an importance so global ranking never takes more than ``max_ratio`` of a layer's channels."""

    def __init__(self, base: Importance, max_ratio: float, initial: dict[int, int]) -> None:
        import torch_pruning as tp

        self.base, self.max_ratio, self.initial = base, max_ratio, initial
        self.tiebreak = tp.importance.MagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")

    def __call__(self, group: Any) -> torch.Tensor | None:
        imp = self.base(group)
        if imp is None:
            return imp
        # Global ranking prunes every channel scoring <= the threshold, so equal scores (untrained BatchNorm
        # scales are all 1) would go all at once: break ties by a negligible share of the weight magnitude.
        imp = imp.detach().double().clone()  # float64: the offset must not vanish in rounding
        tie = self.tiebreak(group) if torch.unique(imp).numel() < imp.numel() else None
        if tie is not None and len(tie) == len(imp):
            imp += 1e-6 * (imp.abs().mean() + 1e-12) * tie.detach().double().to(imp.device)
        if self.max_ratio < 1.0:
            root = group[0].dep.target.module
            initial = self.initial.setdefault(id(root), len(imp))
            keep = min(len(imp), max(1, math.ceil(initial * (1.0 - self.max_ratio))))
            imp[torch.topk(imp, keep).indices] = float("inf")
        return imp


def prune_heads(DG: Any, importance: Importance, analysis: Analysis, heads_now: dict[int, int],
                inner_at_start: dict[int, int], target: float) -> None:
    """Remove ``heads_now[id(attention)]`` whole heads from each attention, lowest magnitude first.

    Where the Hugging Face config derives the head width from the hidden size (BERT, ViT, ...), the hidden
    width follows as heads x head width, and the head width shrinks too so the hidden width tracks ``target``
    (the fraction of channels removed so far) between whole heads. Rotary embeddings fix the head width.
    """
    for a in analysis.attention:
        keep_heads = a.heads - (0 if a.heads_fixed else heads_now.get(id(a.module), 0))
        if a.kv_heads < a.heads:  # grouped-query attention: whole query heads per key/value group
            keep_heads = a.kv_heads * max(1, round(keep_heads / a.kv_heads))
        keep_heads = max(1, keep_heads)
        keep_dim = a.head_dim
        if analysis.tied_hidden and not a.rotary:
            inner = inner_at_start.setdefault(id(a.module), a.heads * a.head_dim)
            keep_dim = max(1, min(a.head_dim, int(inner * (1.0 - target) + 1e-6) // keep_heads))
        if keep_heads < a.heads or keep_dim < a.head_dim:
            prune_attention(a, keep_heads, keep_dim, DG)
    if analysis.hf_hidden_roots and analysis.attention:
        _prune_hidden(DG, importance, analysis, inner_at_start, target)
    # torch.nn.MultiheadAttention: its heads are blocks of the width it sits in, shared by every layer.
    for mhas in analysis.mha_groups:
        remove = heads_now.get(id(mhas[0]), 0)
        heads = {m.num_heads for m in mhas}
        dims = {m.head_dim for m in mhas}
        if remove <= 0 or len(heads) != 1 or len(dims) != 1:
            continue
        h, size = heads.pop(), dims.pop()
        fn = DG.get_pruner_of_module(mhas[0]).prune_out_channels
        full = DG.get_pruning_group(mhas[0], fn, list(range(h * size)))
        scores = _scores(importance, full, h * size)
        drop = torch.argsort(scores.view(h, size).mean(1))[:remove].tolist()
        idxs = [i for j in sorted(drop) for i in range(j * size, (j + 1) * size)]
        for m in mhas:
            m.num_heads = h - remove  # set first: the pruner checks the new width divides by the heads
        DG.get_pruning_group(mhas[0], fn, idxs).prune()
        for m in mhas:
            m.head_dim = m.embed_dim // m.num_heads


def _prune_hidden(DG: Any, importance: Importance, analysis: Analysis, inner_at_start: dict[int, int],
                  target: float) -> None:
    """Prune the Hugging Face hidden width to what its config can say: heads x head width where the config
    derives one from the other, else ``target`` of the original, a multiple of the head count."""
    if analysis.tied_hidden:
        widths = {a.heads * a.head_dim for a in analysis.attention}
    else:
        heads = max(a.heads for a in analysis.attention)
        hidden = inner_at_start.setdefault(-1, DG.get_out_channels(analysis.hf_hidden_roots[0]))
        widths = {max(heads, int(hidden * (1.0 - target) + 1e-6) // heads * heads)}
    if len(widths) == 1:
        width = widths.pop()
        for root in analysis.hf_hidden_roots:
            _prune_to_width(DG, importance, root, width)


def _scores(importance: Importance, group: Any, width: int) -> torch.Tensor:
    scores = importance(group)
    if scores is None or len(scores) != width:
        import torch_pruning as tp

        # No score for this group (e.g. bn_scale without BatchNorm): rank by weight magnitude instead.
        scores = tp.importance.MagnitudeImportance(p=1, group_reduction="mean")(group)
    return torch.nan_to_num(scores.detach().float().cpu(), nan=0.0)


def _prune_to_width(DG: Any, importance: Importance, root: nn.Module, width: int) -> None:
    current = DG.get_out_channels(root)
    if current is None or current <= width:
        return
    fn = DG.get_pruner_of_module(root).prune_out_channels
    scores = _scores(importance, DG.get_pruning_group(root, fn, list(range(current))), current)
    drop = torch.argsort(scores)[: current - width].tolist()
    DG.get_pruning_group(root, fn, sorted(drop)).prune()
