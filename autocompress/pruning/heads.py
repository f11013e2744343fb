"""Strategy ``heads_mlp``: remove whole attention heads and MLP channels, keeping the residual (hidden) width.

A head lives in a block of output rows of the query/key/value projections and the same block of input columns
of the attention's output projection; an MLP channel is one output row of the up (and gate) projection and one
input column of the down projection. Removing them never touches the residual stream, so embeddings,
LayerNorms and the model's outputs keep their width, and no dependency graph is needed: this is direct surgery
on the layers, fast on large models. Layers are found by their shape, not by class names:

* BERT family (BERT, RoBERTa, XLM-R, ELECTRA, ...): ``query``/``key``/``value`` + ``attention.output.dense``,
  ``intermediate.dense`` + ``output.dense``;
* Llama family (Llama, Mistral, Qwen2, ...): ``q_proj``/``k_proj``/``v_proj``/``o_proj`` +
  ``gate_proj``/``up_proj``/``down_proj``. With grouped-query attention a whole key/value head goes with the
  query heads that share it, so every group keeps its size.

Units are ranked per layer by the config's technique and the lowest go: ``random`` (seeded), or the Lp norm of
every weight coupled to the unit (rows and biases of the projections that produce it, columns of the one that
reads it), with the technique's ``p`` (``magnitude``, ``group_norm``; ``lamp``, whose order within one layer
is the magnitude order). Every layer keeps at least one head (group) and one channel.

``num_attention_heads``/``all_head_size`` (and ``num_heads``/``num_key_value_heads``/``intermediate_size``
where a module has them) are patched; the Hugging Face config is patched where it can express the result
(uniform widths, and a config with its own ``head_dim``, as Llama's); otherwise a note says that
``save_pretrained``/``from_pretrained`` cannot rebuild the model and the ``autocompress`` archive can.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .._arch import hf_config
from .._tensors import ModelInput
from ..errors import describe_error
from ..profile import count_flops, count_params
from .config import PruneResult, PruningConfig
from .errors import PruningError, PruningWarning
from .graph import heads_to_remove
from .importance import BNScaleImportanceConfig, RandomImportanceConfig
from .transformers import _SAVE_INSTEAD, is_hf_self_attention

STRATEGY = "heads_mlp"
_HEAD_ATTRS = ("num_attention_heads", "num_heads")  # query-head counts a module may keep as plain ints
_KV_ATTRS = ("num_key_value_heads",)


@dataclass
class Site:
    """One attention or MLP of one layer: the layers whose rows hold its units and those whose columns read them.

    A unit is a head (a key/value group under grouped-query attention) or an MLP channel; each layer in ``rows``
    holds ``out_features // units`` consecutive rows per unit, each in ``cols`` as many input columns.
    """

    kind: str  # attention | mlp
    name: str
    module: nn.Module  # whose plain attributes forward() reads
    rows: list[nn.Linear]
    cols: list[nn.Linear]
    units: int
    head_dim: int = 1
    initial: int = field(init=False)

    def __post_init__(self) -> None:
        self.initial = self.units

    def scores(self, p: int) -> torch.Tensor:
        """Per unit, the mean over coupled tensors of the sum of ``|w|**p`` over the unit's slice."""
        parts = []
        for layer in self.rows:
            parts.append(layer.weight.detach().float().abs().pow(p).reshape(self.units, -1).sum(1))
            if layer.bias is not None:
                parts.append(layer.bias.detach().float().abs().pow(p).reshape(self.units, -1).sum(1))
        for layer in self.cols:
            parts.append(layer.weight.detach().float().abs().pow(p).t().reshape(self.units, -1).sum(1))
        return torch.stack([t.cpu() for t in parts]).mean(0)

    def keep(self, kept: list[int]) -> None:
        """Keep only the units ``kept`` (sorted indices), in every coupled layer, and patch the attributes."""
        for layer in self.rows:
            idx = _block_indices(kept, layer.out_features // self.units, layer.weight.device)
            layer.weight = nn.Parameter(layer.weight.data.index_select(0, idx).clone(),
                                        requires_grad=layer.weight.requires_grad)
            if layer.bias is not None:
                layer.bias = nn.Parameter(layer.bias.data.index_select(0, idx).clone(),
                                          requires_grad=layer.bias.requires_grad)
            layer.out_features = len(idx)
        for layer in self.cols:
            idx = _block_indices(kept, layer.in_features // self.units, layer.weight.device)
            layer.weight = nn.Parameter(layer.weight.data.index_select(1, idx).clone(),
                                        requires_grad=layer.weight.requires_grad)
            layer.in_features = len(idx)
        self.units = len(kept)
        _patch_module(self)


def _block_indices(kept: list[int], block: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([u * block + i for u in kept for i in range(block)], dtype=torch.long, device=device)


def _patch_module(site: Site) -> None:
    """The plain attributes forward() (or a later pruning) reads; only those the module already has."""
    attrs = vars(site.module)
    if site.kind == "mlp":
        if isinstance(attrs.get("intermediate_size"), int):
            site.module.intermediate_size = site.rows[0].out_features
        return
    query, key = site.rows[0], site.rows[1]
    heads = query.out_features // site.head_dim
    for name in _HEAD_ATTRS:
        if isinstance(attrs.get(name), int):
            setattr(site.module, name, heads)
    for name in _KV_ATTRS:
        if isinstance(attrs.get(name), int):
            setattr(site.module, name, key.out_features // site.head_dim)
    if isinstance(attrs.get("all_head_size"), int):
        site.module.all_head_size = query.out_features


def _linear(module: nn.Module, *path: str) -> nn.Linear | None:
    for name in path:
        module = getattr(module, name, None)
    return module if isinstance(module, nn.Linear) else None


def find_sites(model: nn.Module) -> list[Site]:
    """Every attention and MLP of a BERT- or Llama-family model that heads_mlp can prune, in model order."""
    sites: list[Site] = []
    for name, m in model.named_modules():
        # BERT family: the attention block holds the self-attention (heads) and the output projection.
        sa, out = getattr(m, "self", None), _linear(m, "output", "dense")
        if isinstance(sa, nn.Module) and is_hf_self_attention(sa) and out is not None:
            d, h = sa.attention_head_size, sa.num_attention_heads
            qkv = [sa.query, sa.key, sa.value]
            if all(p.out_features == h * d for p in qkv) and out.in_features == h * d:
                sites.append(Site("attention", f"{name}.self", sa, qkv, [out], h, d))
            continue
        inner = _linear(m, "intermediate", "dense")
        if inner is not None and out is not None and out.in_features == inner.out_features:
            sites.append(Site("mlp", name, m, [inner], [out], inner.out_features))
            continue
        # Llama family: q/k/v/o projections with a head_dim; k/v may hold fewer heads (grouped-query attention).
        q, k, v, o = (_linear(m, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
        d = getattr(m, "head_dim", None)
        if None not in (q, k, v, o) and isinstance(d, int) and d > 0 and k.out_features % d == 0:
            groups = k.out_features // d
            if v.out_features == k.out_features and q.out_features % k.out_features == 0 and \
                    o.in_features == q.out_features:
                sites.append(Site("attention", name, m, [q, k, v], [o], groups, d))
            continue
        up, down, gate = _linear(m, "up_proj"), _linear(m, "down_proj"), _linear(m, "gate_proj")
        if up is not None and down is not None and down.in_features == up.out_features and \
                (gate is None or gate.out_features == up.out_features):
            sites.append(Site("mlp", name, m, [gate, up] if gate is not None else [up], [down], up.out_features))
    return sites


def head_units(model: nn.Module) -> dict[int, int]:
    """The removable head units of every attention heads_mlp knows, by ``id`` of the module: its heads, or its
    key/value groups under grouped-query attention (the solver uses these counts to find where heads go)."""
    return {id(s.module): s.units for s in find_sites(model) if s.kind == "attention"}


def _check(model: nn.Module, config: PruningConfig, sites: list[Site]) -> None:
    if isinstance(config.technique, BNScaleImportanceConfig):
        raise PruningError(f"technique 'bn_scale' with strategy {STRATEGY!r}", "a technique that ranks heads and "
                           "MLP channels by their weights (transformers have no BatchNorm to rank by)",
                           "use technique 'magnitude', 'group_norm', 'lamp' or 'random'")
    if sites:
        return
    linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    kinds = Counter(type(m).__name__ for m in model.modules() if not list(m.children()))
    found = ", ".join(f"{n} {k}" for k, n in kinds.most_common(4)) or "no layers"
    raise PruningError(f"strategy {STRATEGY!r} finds no attention heads nor MLP it knows in {type(model).__name__} "
                       f"(found {found}; {linear} Linear in all)", "BERT-style query/key/value + intermediate/output "
                       "layers or Llama-style q/k/v/o_proj + gate/up/down_proj", "use strategy 'linear' or 'global'")


def _to_remove(site: Site, config: PruningConfig, fraction_done: float) -> int:
    """How many of the site's original units are gone once ``fraction_done`` of the pruning is done."""
    if site.kind == "attention":
        return heads_to_remove(config.effective_head_ratio * fraction_done, site.initial)
    removed = min(site.initial - 1, int(math.floor(config.ratio * fraction_done * site.initial + 1e-9)))
    if config.round_to:  # keep a multiple of round_to channels (at least round_to)
        keep = min(site.initial, max(config.round_to,
                                     config.round_to * round((site.initial - removed) / config.round_to)))
        removed = site.initial - keep
    return removed


def prune_sites(sites: list[Site], config: PruningConfig, fraction_done: float,
                generator: torch.Generator) -> None:
    """Remove units from every site until ``fraction_done`` of the config's pruning is done, lowest first."""
    p = getattr(config.technique, "p", 1)
    for site in sites:
        remove = _to_remove(site, config, fraction_done) - (site.initial - site.units)
        if remove <= 0:
            continue
        if isinstance(config.technique, RandomImportanceConfig):
            scores = torch.rand(site.units, generator=generator)
        else:
            scores = site.scores(p)
        drop = set(torch.argsort(scores, stable=True)[:remove].tolist())
        site.keep([u for u in range(site.units) if u not in drop])


def patch_config(model: nn.Module, sites: list[Site]) -> list[str]:
    """Write the pruned widths into the Hugging Face config where it can hold them; notes where it cannot."""
    config = hf_config(model)
    if config is None:
        return []
    attention = [s for s in sites if s.kind == "attention"]
    mlp_widths = {s.units for s in sites if s.kind == "mlp"}
    cannot: list[str] = []
    if any(s.units != s.initial for s in sites if s.kind == "mlp"):
        if len(mlp_widths) == 1 and isinstance(getattr(config, "intermediate_size", None), int):
            config.intermediate_size = mlp_widths.pop()
        else:
            cannot.append("MLP widths differ between layers")
    if any(s.units != s.initial for s in attention):
        heads = {s.rows[0].out_features // s.head_dim for s in attention}
        kv = {s.rows[1].out_features // s.head_dim for s in attention}
        dims = {s.head_dim for s in attention}
        if len(heads) != 1 or len(kv) != 1 or len(dims) != 1:
            cannot.append("head counts differ between layers")
        elif getattr(config, "head_dim", None) != next(iter(dims)):
            cannot.append(f"{type(config).__name__} has no head_dim of its own: it derives the head size as "
                          f"hidden_size / num_attention_heads")
        else:
            config.num_attention_heads = heads.pop()
            if hasattr(config, "num_key_value_heads"):
                config.num_key_value_heads = kv.pop()
    if not cannot:
        return []
    return [f"the Hugging Face config cannot describe the pruned model ({'; '.join(cannot)}): save_pretrained/"
            f"from_pretrained cannot rebuild it; {_SAVE_INSTEAD}"]


def run(model: nn.Module, example_input: ModelInput, config: PruningConfig,
        callback: Callable[[int, nn.Module], None] | None = None, before: tuple[int, int] | None = None,
        measure_flops: bool = True, reference: list[torch.Size] | None = None) -> PruneResult:
    """Prune a deep copy of ``model`` by heads and MLP channels; measured like :func:`.core.run`."""
    from .core import PRUNING_FAILURES, _shapes_after, example, output_shapes

    x = example(example_input)
    _check(model, config, find_sites(model))
    if reference is None:
        reference = output_shapes(model, x)
    if before is None:
        before = (count_params(model), count_flops(model, x) if measure_flops else 0)
    subject = copy.deepcopy(model)
    sites = find_sites(subject)
    generator = torch.Generator().manual_seed(getattr(config.technique, "seed", 0))
    notes: list[str] = []
    if config.effective_head_ratio > 0 and not any(s.kind == "attention" for s in sites):
        notes.append(f"no attention heads found in {type(model).__name__}: only MLP channels pruned")
    if config.ratio > 0 and not any(s.kind == "mlp" for s in sites):
        notes.append(f"no MLP found in {type(model).__name__}: only attention heads pruned")
    with torch.no_grad():
        for step in range(1, config.steps + 1):
            prune_sites(sites, config, step / config.steps, generator)
            if callback is not None:
                with torch.enable_grad():
                    callback(step, subject)
    notes.extend(patch_config(subject, sites))
    try:
        out = _shapes_after(subject, x)
    except PRUNING_FAILURES as exc:  # a module found by shape whose forward reads a width we did not patch
        raise PruningError(f"the model pruned by {STRATEGY!r} fails on the example input: {describe_error(exc)}",
                           "a BERT- or Llama-family attention whose forward reads only the patched widths",
                           "use strategy 'attention' or 'global', or report this model") from exc
    if out != reference:
        raise PruningError(f"pruning by {STRATEGY!r} changed the output shapes {[tuple(r) for r in reference]} to "
                           f"{[tuple(o) for o in out]}", "outputs kept intact", "report this model")
    for note in notes:
        warnings.warn(note, PruningWarning, stacklevel=4)  # the caller of prune()
    return PruneResult(model=subject, config=config, params_before=before[0], params_after=count_params(subject),
                       flops_before=before[1], flops_after=count_flops(subject, x) if measure_flops else 0,
                       notes=tuple(notes))
