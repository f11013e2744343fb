"""Structured pruning: remove whole channels, neurons and attention heads, so layers really get smaller.

Built on Torch-Pruning's dependency graph: layers whose channels are coupled (residual adds, concatenations,
flatten into a linear layer, the q/k/v projections of one attention) are pruned together because the graph
says so, not because of name lists. What is pruned is chosen by two independent parts of a
:class:`PruningConfig`:

* the **technique** (a config record registered with its importance factory) scores channels:
  ``random``, ``magnitude`` (L1), ``bn_scale`` (network slimming), ``group_norm`` (group L2 over coupled
  parameters), ``lamp``;
* the **strategy** decides which layers may lose channels and how they are ranked: ``conv``, ``linear`` and
  ``attention`` prune one kind of layer with the same ratio in every layer; ``global`` prunes every kind and
  ranks channels across layers.

The model's inputs and outputs are never pruned (the graph shows which layers feed the output directly), the
caller's model is never modified (a deep copy is pruned), and every figure reported is measured on the pruned
model with :mod:`autocompress.profile`.

    result = prune(model, x, PruningConfig(technique="magnitude", strategy="global", ratio=0.3))
    result = solve_target(model, x, "magnitude", objective="flops", target=2.0)
    state = architecture_state(result.model); same = rebuild(model, state)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._tensors import ModelInput, call_model, describe, repeat_to_batch
from .config import Config, HandlerRegistry, register_config
from .errors import AutocompressError, ConfigError
from .profile import count_flops, count_params
from .progress import progress_bar

ARCHITECTURE_FORMAT = "autocompress.pruned-architecture"
ARCHITECTURE_VERSION = 1
OBJECTIVES = ("params", "flops")
# A note that explains a choice rather than a loss: kept in the result's notes, not raised as a warning.
_UNIFORM_NOTE = "Hugging Face model: layers pruned uniformly (its config holds one width per layer kind)"


class PruningError(AutocompressError):
    """A pruning request that cannot be carried out: bad config, nothing prunable, unreachable target."""


class PruningWarning(UserWarning):
    """Something was left unpruned or could not be expressed; the pruned model is still valid."""


def _import_tp() -> Any:
    import torch_pruning as tp

    return tp


# ============================================================================================ techniques
@register_config("pruning.random")
@dataclass(frozen=True)
class RandomImportanceConfig(Config):
    """Random channel scores: the baseline every other criterion has to beat. Seeded, so runs repeat."""

    seed: int = 0


@register_config("pruning.magnitude")
@dataclass(frozen=True)
class MagnitudeImportanceConfig(Config):
    """Lp norm (L1 by default) of each layer's own filters/neurons."""

    p: int = 1


@register_config("pruning.bn_scale")
@dataclass(frozen=True)
class BNScaleImportanceConfig(Config):
    """Network slimming: |gamma| of the BatchNorm after a layer. Layers without a following BatchNorm are kept."""


@register_config("pruning.group_norm")
@dataclass(frozen=True)
class GroupNormImportanceConfig(Config):
    """Group magnitude (DepGraph): the Lp norm over every parameter coupled to a channel, averaged."""

    p: int = 2


@register_config("pruning.lamp")
@dataclass(frozen=True)
class LAMPImportanceConfig(Config):
    """Layer-adaptive magnitude (LAMP): squared magnitude normalised by the layer's larger weights."""

    p: int = 2


# Names users and the search space use; each maps to its config type. Adding a technique = a config class,
# an entry here and a registered importance factory; nothing else changes.
TECHNIQUES: dict[str, type[Config]] = {
    "random": RandomImportanceConfig,
    "magnitude": MagnitudeImportanceConfig,
    "bn_scale": BNScaleImportanceConfig,
    "group_norm": GroupNormImportanceConfig,
    "lamp": LAMPImportanceConfig,
}

#: config type -> factory building a Torch-Pruning style importance: ``importance(group) -> 1-D scores``.
IMPORTANCE: HandlerRegistry[Callable[[Any], Callable[[Any], torch.Tensor | None]]] = HandlerRegistry(
    "pruning importance")


@IMPORTANCE.register(RandomImportanceConfig)
def _random_importance(config: RandomImportanceConfig) -> Callable[[Any], torch.Tensor | None]:
    generator = torch.Generator().manual_seed(config.seed)

    def importance(group: Any) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=generator)

    return importance


@IMPORTANCE.register(MagnitudeImportanceConfig)
def _magnitude_importance(config: MagnitudeImportanceConfig) -> Callable[[Any], torch.Tensor | None]:
    # "first": the root layer's own filters; "mean" normalisation keeps layers comparable in global ranking.
    return _import_tp().importance.MagnitudeImportance(p=config.p, group_reduction="first", normalizer="mean")


@IMPORTANCE.register(BNScaleImportanceConfig)
def _bn_scale_importance(config: BNScaleImportanceConfig) -> Callable[[Any], torch.Tensor | None]:
    return _import_tp().importance.BNScaleImportance(normalizer="mean")


@IMPORTANCE.register(GroupNormImportanceConfig)
def _group_norm_importance(config: GroupNormImportanceConfig) -> Callable[[Any], torch.Tensor | None]:
    return _import_tp().importance.GroupMagnitudeImportance(p=config.p, group_reduction="mean", normalizer="mean")


@IMPORTANCE.register(LAMPImportanceConfig)
def _lamp_importance(config: LAMPImportanceConfig) -> Callable[[Any], torch.Tensor | None]:
    return _import_tp().importance.LAMPImportance(p=config.p)


def technique_config(name: str, **params: Any) -> Config:
    """The config record of a technique by name, e.g. ``technique_config("magnitude", p=2)``."""
    cls = TECHNIQUES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PruningError(f"unknown pruning technique {name!r}", f"one of {', '.join(TECHNIQUES)}",
                           "pick one of these names")
    try:
        return cls(**params)
    except TypeError as exc:
        fields = [f.name for f in dataclasses.fields(cls)]
        raise PruningError(f"parameters {sorted(params)} for technique {name!r}",
                           f"parameters among {fields}", "remove the unknown parameters") from exc


def technique_name(config: Config) -> str:
    """The short name (``magnitude``, ...) of a technique config."""
    for name, cls in TECHNIQUES.items():
        if type(config) is cls:
            return name
    return config.KIND


# ============================================================================================ strategies
@dataclass(frozen=True)
class Strategy:
    """Which kinds of coupled channel groups may be pruned, and whether channels are ranked across layers."""

    name: str
    kinds: frozenset[str]
    global_ranking: bool
    description: str


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("linear", frozenset({"linear"}), False,
             "fully connected / MLP widths, the same ratio in every layer"),
    Strategy("conv", frozenset({"conv"}), False, "convolution channels, the same ratio in every layer"),
    Strategy("attention", frozenset({"attention"}), False,
             "attention heads (and the hidden width where the architecture ties it to the heads)"),
    Strategy("global", frozenset({"conv", "linear", "attention"}), True,
             "every prunable layer, channels ranked across layers"),
)}


def _strategy(name: str) -> Strategy:
    strategy = STRATEGIES.get(name) if isinstance(name, str) else None
    if strategy is None:
        raise PruningError(f"unknown pruning strategy {name!r}", f"one of {', '.join(STRATEGIES)}",
                           "pick one of these names")
    return strategy


# ============================================================================================ config
@register_config("pruning")
@dataclass(frozen=True)
class PruningConfig(Config):
    """One pruning action.

    ``ratio`` is the fraction of channels removed (per layer for ``conv``/``linear``/``attention``, over all
    selected layers for ``global``). ``head_ratio`` is the fraction of attention heads removed; ``None`` means
    the same as ``ratio``. ``steps`` prunes in that many equal steps (a callback can fine-tune between them).
    ``round_to`` keeps pruned channel counts at multiples of it. ``max_layer_ratio`` caps what global ranking
    may take from any one layer. ``technique`` may be given by name (``"magnitude"``).
    """

    technique: Config = MagnitudeImportanceConfig()
    strategy: str = "global"
    ratio: float = 0.5
    head_ratio: float | None = None
    steps: int = 1
    round_to: int | None = None
    max_layer_ratio: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.technique, str):
            object.__setattr__(self, "technique", technique_config(self.technique))
        if not isinstance(self.technique, Config):
            raise PruningError(f"technique {self.technique!r}", f"a technique name ({', '.join(TECHNIQUES)}) "
                               "or its config record", "pass e.g. technique='magnitude'")
        try:
            IMPORTANCE(self.technique)
        except ConfigError as exc:
            raise PruningError(f"technique config {type(self.technique).__name__}",
                               f"one of {', '.join(TECHNIQUES)}", "use a registered technique") from exc
        _strategy(self.strategy)
        _check_fraction("ratio", self.ratio)
        if self.head_ratio is not None:
            _check_fraction("head_ratio", self.head_ratio)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise PruningError(f"steps={self.steps!r}", "an integer of at least 1", "pass steps=1 or more")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise PruningError(f"round_to={self.round_to!r}", "None or a positive integer such as 8",
                               "pass round_to=None or round_to=8")
        if not isinstance(self.max_layer_ratio, (int, float)) or not 0.0 < self.max_layer_ratio <= 1.0:
            raise PruningError(f"max_layer_ratio={self.max_layer_ratio!r}", "a number in (0, 1]",
                               "pass e.g. max_layer_ratio=0.9")

    @property
    def effective_head_ratio(self) -> float:
        return self.ratio if self.head_ratio is None else self.head_ratio


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PruningError(f"{name}={value!r}", "a fraction of channels in [0, 1)", f"pass e.g. {name}=0.5")


# ============================================================================================ result
@dataclass(frozen=True)
class PruneResult:
    """A pruned model and what pruning measurably did to it. FLOPs are MACs for one sample (see profile)."""

    model: nn.Module
    config: PruningConfig
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    notes: tuple[str, ...] = ()
    objective: str | None = None  # set by solve_target
    target: float | None = None
    reached: bool | None = None
    evaluations: int = 0

    @property
    def ratio(self) -> float:
        return self.config.ratio

    @property
    def steps(self) -> int:
        return self.config.steps

    @property
    def param_reduction(self) -> float:
        """``params_before / params_after``: 2.0 means half the parameters."""
        return self.params_before / max(self.params_after, 1)

    @property
    def flop_reduction(self) -> float:
        return self.flops_before / max(self.flops_after, 1)

    def reduction(self, objective: str = "params") -> float:
        return self.param_reduction if objective == "params" else self.flop_reduction

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as plain values (for reports and JSON)."""
        return {
            "config": self.config.to_dict(), "params_before": self.params_before, "params_after": self.params_after,
            "flops_before": self.flops_before, "flops_after": self.flops_after,
            "param_reduction": self.param_reduction, "flop_reduction": self.flop_reduction,
            "notes": list(self.notes), "objective": self.objective, "target": self.target, "reached": self.reached,
            "evaluations": self.evaluations,
        }


# ============================================================================================ model analysis
def _is_hf_self_attention(module: nn.Module) -> bool:
    # BERT-family self-attention (BertSelfAttention, RobertaSelfAttention, ViTSelfAttention, ...).
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) and \
        isinstance(getattr(module, "num_attention_heads", None), int) and \
        isinstance(getattr(module, "attention_head_size", None), int)


def _hf_config(model: nn.Module) -> Any:
    """The Hugging Face config of ``model``, or None (transformers is only looked at if already imported)."""
    if "transformers" not in sys.modules:
        return None
    from transformers import PretrainedConfig

    config = getattr(model, "config", None)
    return config if isinstance(config, PretrainedConfig) else None


def _hf_bert_config(model: nn.Module) -> Any:
    """The config of a BERT-family Hugging Face model, whose widths the config describes; else None."""
    config = _hf_config(model)
    if config is None or not hasattr(config, "hidden_size") or not hasattr(config, "intermediate_size"):
        return None
    return config if any(_is_hf_self_attention(m) for m in model.modules()) else None


@dataclass
class _Group:
    kind: str  # conv | linear | attention | hidden | output | fixed
    roots: list[nn.Module]  # conv/linear layers whose output channels this group prunes
    width: int
    names: list[str]
    has_bn: bool
    group: Any  # the Torch-Pruning group with every channel


@dataclass
class _Analysis:
    groups: list[_Group]
    mha_groups: list[list[nn.MultiheadAttention]]  # each: the MultiheadAttention modules sharing one width
    hf_attention: list[nn.Module]
    hf_hidden_roots: list[nn.Module]  # one root layer per group tied to the HF hidden size
    untraced: list[str]


def _root_types() -> tuple[type, ...]:
    tp = _import_tp()
    return (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM)


def _touches_output(DG: Any, group: Any) -> bool:
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


def _analyse(model: nn.Module, DG: Any) -> _Analysis:
    """Classify every coupled channel group of the traced model by the kind of layer it prunes."""
    tp = _import_tp()
    names = {m: n for n, m in model.named_modules()}
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    hf_config = _hf_bert_config(model)
    hf_attention = [m for m in model.modules() if _is_hf_self_attention(m) and m.query in DG.module2node]
    qkv = {id(getattr(m, n)) for m in hf_attention for n in ("query", "key", "value")}
    root_types = _root_types()
    groups: list[_Group] = []
    mha_groups: list[list[nn.MultiheadAttention]] = []
    hidden_roots: list[nn.Module] = []
    for group in DG.get_all_groups(ignored_layers=[], root_module_types=root_types):
        out_modules = [dep.target.module for dep, _ in group
                       if isinstance(dep.target.module, nn.Module) and DG.is_out_channel_pruning_fn(dep.handler)]
        in_modules = [dep.target.module for dep, _ in group
                      if isinstance(dep.target.module, nn.Module) and DG.is_in_channel_pruning_fn(dep.handler)]
        roots = [m for m in dict.fromkeys(out_modules) if isinstance(m, root_types)]
        mhas = [m for m in dict.fromkeys(out_modules) if isinstance(m, nn.MultiheadAttention)]
        width = len(group[0].idxs)
        if _touches_output(DG, group):
            kind = "output"
        elif mhas:
            kind = "attention"  # torch MultiheadAttention ties its heads to the width it sits in
            mha_groups.append(mhas)
        elif any(id(m) in qkv for m in out_modules):
            kind = "attention"
        elif hf_config is not None:
            kind = _hf_kind(hf_config, width, roots, in_modules, qkv, parents)
            if kind == "hidden":
                hidden_roots.append(roots[0])
        elif any(isinstance(m, tp.ops.TORCH_CONV) for m in roots):
            kind = "conv"
        else:
            kind = "linear"
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in out_modules)
        groups.append(_Group(kind, roots, width, [names.get(m, "?") for m in roots], has_bn, group))
    inside_mha = {id(m) for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()}
    untraced = [n for n, m in model.named_modules()
                if isinstance(m, root_types) and m not in DG.module2node and id(m) not in inside_mha]
    return _Analysis(groups, mha_groups, hf_attention, hidden_roots, untraced)


def _hf_kind(config: Any, width: int, roots: list[nn.Module], in_modules: list[nn.Module], qkv: set[int],
             parents: dict[nn.Module, nn.Module]) -> str:
    """A BERT-family group's kind, by the config width it is: hidden, intermediate (linear) or fixed."""
    intermediate = any(type(parents.get(r)).__name__.endswith("Intermediate") for r in roots)
    if any(id(m) in qkv for m in in_modules) or (width == config.hidden_size and not intermediate):
        # The config derives the head size as hidden_size / heads, so the hidden width follows the heads.
        return "hidden"
    if width == config.intermediate_size:
        return "linear"
    return "fixed"  # a width the config cannot express: kept


def _heads_to_remove(fraction: float, heads: int) -> int:
    # Nearest whole number of heads, never all of them.
    return max(0, min(heads - 1, int(math.floor(fraction * heads + 0.5 + 1e-9))))


class _LayerFloor:
    """Wraps an importance so global ranking never takes more than ``max_ratio`` of a layer's channels."""

    def __init__(self, base: Callable[[Any], torch.Tensor | None], max_ratio: float,
                 initial: dict[int, int]) -> None:
        self.base, self.max_ratio, self.initial = base, max_ratio, initial
        self.tiebreak = _import_tp().importance.MagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")

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


# ============================================================================================ architecture patches
# Attributes that forward() reads but Torch-Pruning does not know about. Each patcher fixes one family.
_PATCHERS: list[Callable[[nn.Module], list[str]]] = []


def _patcher(fn: Callable[[nn.Module], list[str]]) -> Callable[[nn.Module], list[str]]:
    _PATCHERS.append(fn)
    return fn


@_patcher
def _patch_torchvision_vit(model: nn.Module) -> list[str]:
    if "torchvision" not in sys.modules:
        return []
    from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

    for m in model.modules():
        if isinstance(m, VisionTransformer):
            m.hidden_dim = m.conv_proj.out_channels  # used to reshape patches in _process_input
        elif isinstance(m, EncoderBlock):
            m.num_heads = m.self_attention.num_heads
    return []


@_patcher
def _patch_hf(model: nn.Module) -> list[str]:
    attention = [m for m in model.modules() if _is_hf_self_attention(m)]
    for m in attention:
        m.all_head_size = m.query.out_features
        m.num_attention_heads = m.query.out_features // m.attention_head_size
    if _hf_config(model) is None:
        return []
    config = _hf_bert_config(model)
    if config is None:
        return [f"the config of {type(model).__name__} does not describe pruned widths: save_pretrained/"
                "from_pretrained cannot rebuild this model; use architecture_state/rebuild"]
    heads = {m.num_attention_heads for m in attention}
    hidden = {m.query.in_features for m in attention}
    head_size = {m.attention_head_size for m in attention}
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    intermediate = {m.out_features for m in model.modules() if isinstance(m, nn.Linear)
                    and type(parents.get(m)).__name__.endswith("Intermediate")}
    if len(heads) == len(hidden) == len(head_size) == 1 and len(intermediate) <= 1:
        h, d, s = heads.pop(), hidden.pop(), head_size.pop()
        if d // h == s:
            config.num_attention_heads, config.hidden_size = h, d
            if intermediate:
                config.intermediate_size = intermediate.pop()
            return []
    return ["the pruned widths (different per layer, or hidden size != heads x head size) cannot be written "
            "in a Hugging Face config: save_pretrained/from_pretrained cannot rebuild this model; "
            "use architecture_state/rebuild"]


def _patch(model: nn.Module) -> list[str]:
    notes: list[str] = []
    for fn in _PATCHERS:
        notes.extend(fn(model))
    return notes


# ============================================================================================ pruning
def _example(example_input: ModelInput) -> ModelInput:
    if not isinstance(example_input, (torch.Tensor, Mapping)):
        raise PruningError(f"example input {describe(example_input)}", "a tensor or a dict of tensors",
                           "pass one batch of model input")
    return repeat_to_batch(example_input, 1)


def _forward(model: nn.Module, x: ModelInput) -> Any:
    return call_model(model, x)


def _tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor a model returns (tensor, tuple, dict, Hugging Face ModelOutput): all of them are outputs."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


class _Frozen:
    """Tracing needs autograd: make every parameter trainable, and give the user's flags back after."""

    def __init__(self, model: nn.Module) -> None:
        self.flags = {n: p.requires_grad for n, p in model.named_parameters()}
        self.training = model.training

    def unfreeze(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def restore(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            p.requires_grad_(self.flags.get(n, True))
        model.train(self.training)


def _prune_step(model: nn.Module, x: ModelInput, config: PruningConfig, importance: Callable[[Any], Any],
                channel_ratio: float, heads_now: dict[int, int], initial: dict[int, int],
                first: bool, skip: frozenset[str] = frozenset()) -> list[str]:
    """One pruning step on ``model`` in place: channels via a Torch-Pruning pruner, heads by head blocks."""
    tp = _import_tp()
    strategy = _strategy(config.strategy)
    is_hf = _hf_bert_config(model) is not None
    global_ranking = strategy.global_ranking and not is_hf  # an HF config holds one width per layer kind
    scorer = _LayerFloor(importance, config.max_layer_ratio, initial) if global_ranking else importance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's tracing chatter; our own notes say what matters
        pruner = tp.pruner.BasePruner(
            model, x, importance=scorer, global_pruning=global_ranking, pruning_ratio=channel_ratio,
            ignored_layers=[], round_to=config.round_to, root_module_types=list(_root_types()),
            forward_fn=_forward, output_transform=_tensors)
    DG = pruner.DG
    analysis = _analyse(model, DG)
    notes: list[str] = []
    selected = [g for g in analysis.groups if g.kind in strategy.kinds]
    if first:
        _check_prunable(model, config, strategy, analysis, selected)
        if analysis.untraced:
            notes.append(f"left unpruned, not reached by the dependency graph: {', '.join(analysis.untraced)}")
        if is_hf and strategy.global_ranking:
            notes.append(_UNIFORM_NOTE)
        fixed = [n for g in analysis.groups if g.kind == "fixed" for n in g.names]
        if fixed:
            notes.append(f"kept (width not expressible in the Hugging Face config): {', '.join(fixed)}")
        if isinstance(config.technique, BNScaleImportanceConfig):
            no_bn = [n for g in selected if not g.has_bn and g.kind in ("conv", "linear") for n in g.names]
            if no_bn:
                notes.append(f"kept by bn_scale (no BatchNorm follows them): {', '.join(no_bn)}")
    # Torch-Pruning prunes conv/linear groups; attention and tied hidden widths are pruned by head blocks below.
    pruner.ignored_layers.extend(m for g in analysis.groups if g.kind not in strategy.kinds - {"attention"}
                                 for m in g.roots)
    if skip:  # layers found to break the model when pruned: kept whole
        pruner.ignored_layers.extend(m for n, m in model.named_modules() if n in skip)
    if global_ranking:
        cap = _global_cap(pruner, config, selected, initial)
        if channel_ratio > cap:
            if first:
                notes.append(f"ratio {config.ratio} is more than global ranking can take while keeping "
                             f"{1 - config.max_layer_ratio:.0%} of every layer; pruned at ratio {cap:.3f}")
            channel_ratio = cap
            pruner.pruning_ratio = cap  # the pruner was built before the cap could be measured
            pruner.per_step_pruning_ratio = pruner.iterative_pruning_ratio_scheduler(cap, 1)
    if channel_ratio > 0 and any(g.kind in ("conv", "linear") for g in selected):
        pruner.step()
    if "attention" in strategy.kinds:
        _prune_heads(DG, importance, analysis, heads_now)
    notes.extend(_patch(model))
    return notes


def _global_cap(pruner: Any, config: PruningConfig, selected: list[_Group], initial: dict[int, int]) -> float:
    """The largest global ratio that leaves every layer its floor (see :class:`_LayerFloor`).

    Torch-Pruning prunes every channel scoring at or below the threshold; if the ratio asked for more
    channels than lie above the floors, the threshold would be infinite and whole layers would be skipped.
    """
    bn_only = isinstance(config.technique, BNScaleImportanceConfig)
    total = free = 0
    for g in selected:
        if g.kind not in ("conv", "linear") or (bn_only and not g.has_bn):
            continue
        dims = g.width // max(1, pruner._get_channel_groups(g.group))
        start = initial.setdefault(id(g.group[0].dep.target.module), g.width)
        keep = min(g.width, max(1, math.ceil(start * (1.0 - config.max_layer_ratio))))
        total += dims
        free += max(0, dims - keep)
    return max(0.0, free / total - 1e-6) if total else 0.0


def _check_prunable(model: nn.Module, config: PruningConfig, strategy: Strategy, analysis: _Analysis,
                    selected: list[_Group]) -> None:
    if not selected:
        kinds = sorted({g.kind for g in analysis.groups} & {"conv", "linear", "attention"})
        fix = f"use strategy {' or '.join(repr(k) for k in kinds)} or 'global'" if kinds else \
            "this model has no layer whose channels can be removed without changing its inputs or outputs"
        raise PruningError(f"strategy {strategy.name!r} finds no prunable {strategy.name} layers in "
                           f"{type(model).__name__}", f"a model with such layers ({strategy.description})", fix)
    if isinstance(config.technique, BNScaleImportanceConfig):
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if not has_bn:
            raise PruningError(f"technique 'bn_scale' on {type(model).__name__}, which has no BatchNorm layer",
                               "a model with BatchNorm after the layers to prune (network slimming ranks "
                               "channels by the BatchNorm scale)", "use technique 'magnitude', 'group_norm' or 'lamp'")


def _prune_heads(DG: Any, importance: Callable[[Any], Any], analysis: _Analysis, heads_now: dict[int, int]) -> None:
    """Remove ``heads_now[id(attention)]`` whole heads from each attention, lowest importance first."""
    tp = _import_tp()
    # Hugging Face BERT-family: heads live in q/k/v; the hidden width follows as heads x head size.
    for sa in analysis.hf_attention:
        remove = heads_now.get(id(sa), 0)
        if remove <= 0:
            continue
        size = sa.attention_head_size
        full = DG.get_pruning_group(sa.query, tp.prune_linear_out_channels, list(range(sa.query.out_features)))
        scores = _scores(importance, full, sa.query.out_features)
        heads = torch.argsort(scores.view(-1, size).mean(1))[:remove].tolist()
        idxs = [i for h in sorted(heads) for i in range(h * size, (h + 1) * size)]
        DG.get_pruning_group(sa.query, tp.prune_linear_out_channels, idxs).prune()
        sa.num_attention_heads -= remove
        sa.all_head_size = sa.query.out_features
    if analysis.hf_attention and any(heads_now.values()):
        widths = {sa.num_attention_heads * sa.attention_head_size for sa in analysis.hf_attention}
        if len(widths) == 1:
            width = widths.pop()
            for root in analysis.hf_hidden_roots:
                _prune_to_width(DG, importance, root, width)
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


def _scores(importance: Callable[[Any], Any], group: Any, width: int) -> torch.Tensor:
    scores = importance(group)
    if scores is None or len(scores) != width:
        # No score for this group (e.g. bn_scale without BatchNorm): rank by weight magnitude instead.
        scores = _import_tp().importance.MagnitudeImportance(p=1, group_reduction="mean")(group)
    return torch.nan_to_num(scores.detach().float().cpu(), nan=0.0)


def _prune_to_width(DG: Any, importance: Callable[[Any], Any], root: nn.Module, width: int) -> None:
    current = DG.get_out_channels(root)
    if current is None or current <= width:
        return
    fn = DG.get_pruner_of_module(root).prune_out_channels
    scores = _scores(importance, DG.get_pruning_group(root, fn, list(range(current))), current)
    drop = torch.argsort(scores)[: current - width].tolist()
    DG.get_pruning_group(root, fn, sorted(drop)).prune()


def _initial_heads(model: nn.Module) -> dict[int, int]:
    heads = {id(m): m.num_attention_heads for m in model.modules() if _is_hf_self_attention(m)}
    heads.update({id(m): m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)})
    return heads


def _run(model: nn.Module, example_input: ModelInput, config: PruningConfig,
         callback: Callable[[int, nn.Module], None] | None = None, progress: bool = True,
         before: tuple[int, int] | None = None, measure_flops: bool = True,
         reference: list[torch.Size] | None = None) -> PruneResult:
    """Prune a deep copy of ``model``; measure it. Never raises for "nothing removed" (callers decide).

    ``before`` (params, FLOPs) and ``reference`` (output shapes) of the unpruned model save work when known.
    When the pruned model breaks (Torch-Pruning met an operation it cannot follow, or the model no longer runs
    or changes its output shapes), each prunable layer is tried alone on a copy; those whose pruning breaks the
    model are left unpruned, with a warning naming them, and the pruning is done again without them.
    """
    x = _example(example_input)
    if reference is None:
        reference = _output_shapes(model, x)
    if before is None:
        before = (count_params(model), count_flops(model, x) if measure_flops else 0)
    try:
        subject, notes = _attempt(model, x, config, callback, progress, reference, frozenset())
    except _Broken as first_failure:
        unprunable = _unprunable_layers(model, x, reference)
        if not unprunable:
            raise first_failure.error from None
        try:
            subject, notes = _attempt(model, x, config, callback, progress, reference, frozenset(unprunable))
        except _Broken as again:
            raise again.error from None
        modules = dict(model.named_modules())
        named = ", ".join(f"{n} ({type(modules[n]).__name__})" for n in unprunable)
        notes.insert(0, f"left unpruned (pruning them breaks the model; the dependency graph cannot follow "
                        f"their coupling): {named}")
    notes = list(dict.fromkeys(notes))
    for note in notes:
        if note != _UNIFORM_NOTE:
            warnings.warn(note, PruningWarning, stacklevel=3)
    return PruneResult(model=subject, config=config, params_before=before[0], params_after=count_params(subject),
                       flops_before=before[1], flops_after=count_flops(subject, x) if measure_flops else 0,
                       notes=tuple(notes))


class _Broken(Exception):
    """A pruning attempt that left the model broken; ``error`` is the PruningError to show if nothing helps."""

    def __init__(self, error: PruningError) -> None:
        super().__init__(str(error))
        self.error = error


def _attempt(model: nn.Module, x: ModelInput, config: PruningConfig,
             callback: Callable[[int, nn.Module], None] | None, progress: bool, reference: list[torch.Size],
             skip: frozenset[str]) -> tuple[nn.Module, list[str]]:
    """One pruning of a deep copy, keeping the layers named in ``skip``; raises :class:`_Broken`."""
    subject = copy.deepcopy(model)
    flags = _Frozen(subject)
    importance = IMPORTANCE(config.technique)(config.technique)
    initial_heads = _initial_heads(subject)
    head_fraction = config.effective_head_ratio
    notes: list[str] = []
    removed_heads: dict[int, int] = {k: 0 for k in initial_heads}
    floors: dict[int, int] = {}
    with progress_bar(f"pruning ({config.strategy}, ratio {config.ratio:.2f})", total=config.steps,
                      enabled=progress and config.steps > 1) as bar:
        for step in range(1, config.steps + 1):
            done, target = config.ratio * (step - 1) / config.steps, config.ratio * step / config.steps
            # Channel ratio relative to the current widths, so that after step i the model has lost
            # ratio * i / steps of its original channels; a hair less avoids int() rounding one channel too far.
            relative = max(0.0, 1.0 - (1.0 - target) / (1.0 - done) - 1e-9)
            heads_now = {}
            for key, h0 in initial_heads.items():
                want = _heads_to_remove(head_fraction * step / config.steps, h0)
                heads_now[key] = want - removed_heads[key]
                removed_heads[key] = want
            flags.unfreeze(subject)
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    notes.extend(_prune_step(subject, x, config, importance, relative, heads_now, floors, step == 1,
                                             skip))
            except AutocompressError:
                raise
            except Exception as exc:  # Torch-Pruning met an operation it cannot follow
                raise _Broken(PruningError(
                    f"pruning {type(model).__name__} with strategy {config.strategy!r} failed: "
                    f"{type(exc).__name__}: {exc}", "layers whose coupling the dependency graph can trace",
                    "try strategy 'conv' or 'linear', or report this model")) from exc
            flags.restore(subject)
            if callback is not None:
                callback(step, subject)
            bar.advance()
    flags.restore(subject)
    try:
        out = _shapes_after(subject, x)
    except Exception as exc:
        raise _Broken(PruningError(f"the pruned model fails on the example input: {exc}",
                                   "an architecture whose coupled layers the dependency graph sees",
                                   f"use another strategy than {config.strategy!r}, or report this model")) from exc
    if out != reference:
        raise _Broken(PruningError(f"pruning changed the output shapes {[tuple(r) for r in reference]} to "
                                   f"{[tuple(o) for o in out]}", "outputs kept intact",
                                   "report this model; use strategy 'conv' or 'linear' meanwhile"))
    return subject, notes


def _shapes_after(model: nn.Module, x: ModelInput) -> list[torch.Size]:
    with torch.no_grad():
        was = model.training
        try:
            return [t.shape for t in _tensors(_forward(model.eval(), x))]
        finally:
            model.train(was)


def _unprunable_layers(model: nn.Module, x: ModelInput, reference: list[torch.Size]) -> list[str]:
    """The conv/linear layers whose own channel group, pruned by one channel on a copy, breaks the model."""
    tp = _import_tp()
    names = [n for n, m in model.named_modules() if isinstance(m, _root_types())]
    broken = []
    for name in names:
        subject = copy.deepcopy(model)
        module = dict(subject.named_modules())[name]
        out_fn = tp.prune_conv_out_channels if isinstance(module, tp.ops.TORCH_CONV) else \
            tp.prune_linear_out_channels
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
                warnings.simplefilter("ignore")
                graph = tp.DependencyGraph().build_dependency(subject, example_inputs=x, forward_fn=_forward,
                                                             output_transform=_tensors, verbose=False)
                group = graph.get_pruning_group(module, out_fn, idxs=[0])
                if _touches_output(graph, group):
                    continue  # never pruned anyway
                group.prune()
            if _shapes_after(subject, x) != reference:
                broken.append(name)
        except Exception:
            broken.append(name)
    return broken


def _output_shapes(model: nn.Module, x: ModelInput) -> list[torch.Size]:
    try:
        return _shapes_after(model, x)
    except Exception as exc:
        raise PruningError(f"the model fails on the example input {describe(x)}: {exc}",
                           "a model that runs on its example input", "pass an input the model accepts") from exc


def prune(model: nn.Module, example_input: ModelInput, config: PruningConfig | None = None,
          callback: Callable[[int, nn.Module], None] | None = None, progress: bool = True) -> PruneResult:
    """Prune a copy of ``model`` as ``config`` says and measure it; ``model`` itself is left untouched.

    ``callback(step, model)`` runs after each of ``config.steps`` steps (fine-tune there). Raises
    :class:`PruningError` when nothing can be pruned or nothing was removed.
    """
    config = config or PruningConfig()
    result = _run(model, example_input, config, callback, progress)
    if config.ratio > 0 and result.params_after >= result.params_before:
        why = f" ({'; '.join(result.notes)})" if result.notes else ""
        raise PruningError(f"pruning at ratio {config.ratio} with strategy {config.strategy!r} removed no "
                           f"parameters{why}", "a ratio, strategy and technique that remove at least one channel",
                           "raise the ratio, or use another strategy or technique")
    return result


# ============================================================================================ target solver
def solve_target(model: nn.Module, example_input: ModelInput, technique: Config | str = "magnitude",
                 strategy: str = "global", objective: str = "params", target: float = 2.0,
                 tolerance: float = 0.05, round_to: int | None = None, max_ratio: float = 0.95,
                 max_layer_ratio: float = 0.9, max_evals: int = 24, widen: bool = True,
                 progress: bool = True) -> PruneResult:
    """Find the pruning ratio that makes ``model`` ``target`` times smaller in ``objective`` (within
    ``tolerance``, relative), measuring the real counts of a pruned copy at each try (bisection on the ratio).

    Attention heads come in whole units, so the reduction jumps as a head goes; the solver then holds the head
    count and moves the other widths. If the strategy cannot reach the target, it widens to ``global`` (when
    ``widen``); if that fails too, the result has ``reached=False`` and a note saying what was reached and why.
    """
    if objective not in OBJECTIVES:
        raise PruningError(f"objective {objective!r}", f"one of {', '.join(OBJECTIVES)}", "pass objective='params'")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 1.0:
        raise PruningError(f"target {target!r}", "a reduction factor above 1 (2.0 = half)", "pass e.g. target=2.0")
    if not 0 < tolerance < 1:
        raise PruningError(f"tolerance {tolerance!r}", "a relative tolerance in (0, 1)", "pass e.g. 0.05")
    if not 0 < max_ratio < 1:
        raise PruningError(f"max_ratio {max_ratio!r}", "a fraction in (0, 1)", "pass e.g. 0.95")
    technique = technique_config(technique) if isinstance(technique, str) else technique
    base = PruningConfig(technique=technique, strategy=strategy, ratio=0.0, round_to=round_to,
                         max_layer_ratio=max_layer_ratio)
    x = _example(example_input)
    reference = _output_shapes(model, x)
    before = (count_params(model), count_flops(model, x))
    solver = _Solver(model, x, objective, float(target), tolerance, max_evals, before, reference)
    with progress_bar(f"solving {target}x {objective}", total=max_evals, enabled=progress) as bar:
        solver.bar = bar
        try:
            result, why = solver.search(base, max_ratio)
        except PruningError as exc:  # e.g. the strategy finds no layer of its kind in this model
            if not widen or strategy == "global":
                raise
            solver.max_evals += max_evals  # the widened search gets a budget of its own
            result, why = solver.search(base.replace(strategy="global"), max_ratio)
            notes = [f"{exc}; widened to 'global'"] + ([why] if why else [])
        else:
            notes = [why] if why else []
            if not solver.hit(result) and widen and strategy != "global":
                solver.max_evals += max_evals
                widened, why = solver.search(base.replace(strategy="global"), max_ratio)
                if solver.hit(widened) or solver.error(widened) < solver.error(result):
                    notes = [f"strategy {strategy!r} could not reach {target}x {objective} (best "
                             f"{result.reduction(objective):.2f}x); widened to 'global'"] + ([why] if why else [])
                    result = widened
    # Every figure is measured on the returned model itself; a params search did not count its FLOPs yet.
    final = result if objective == "flops" else dataclasses.replace(result, flops_after=count_flops(result.model, x))
    for note in final.notes:
        if note != _UNIFORM_NOTE:
            warnings.warn(note, PruningWarning, stacklevel=2)
    reached = solver.hit(final)
    if not reached:
        notes = notes or [f"reached {final.reduction(objective):.2f}x {objective}, not {target}x"]
        warnings.warn(f"target {target}x {objective} not reached: {notes[-1]}", PruningWarning, stacklevel=2)
    return dataclasses.replace(final, notes=tuple(notes) + final.notes, objective=objective, target=float(target),
                               reached=reached, evaluations=solver.evals)


class _Solver:
    def __init__(self, model: nn.Module, x: ModelInput, objective: str, target: float, tolerance: float,
                 max_evals: int, before: tuple[int, int], reference: list[torch.Size]) -> None:
        self.model, self.x, self.objective, self.target = model, x, objective, target
        self.tolerance, self.max_evals, self.before, self.reference = tolerance, max_evals, before, reference
        self.evals, self.bar = 0, None
        self.head_counts = sorted(set(_initial_heads(model).values()))

    def reduction(self, result: PruneResult) -> float:
        return result.reduction(self.objective)

    def error(self, result: PruneResult) -> float:
        return abs(self.reduction(result) / self.target - 1.0)

    def hit(self, result: PruneResult) -> bool:
        return self.error(result) <= self.tolerance

    def evaluate(self, config: PruningConfig) -> PruneResult:
        self.evals += 1
        if self.bar is not None:
            self.bar.advance()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PruningWarning)
            return _run(self.model, self.x, config, progress=False, before=self.before,
                        measure_flops=self.objective == "flops", reference=self.reference)

    def search(self, base: PruningConfig, max_ratio: float) -> tuple[PruneResult, str]:
        """Bisection on ``ratio``; then, at a jump where heads go, bisection with the head count held."""
        top = self.evaluate(base.replace(ratio=max_ratio))
        if self.reduction(top) < self.target * (1 - self.tolerance):
            return top, (f"strategy {base.strategy!r} reaches at most {self.reduction(top):.2f}x {self.objective} "
                         f"(ratio {max_ratio}): the layers it may prune hold too little of the model")
        heads = self.head_counts if "attention" in _strategy(base.strategy).kinds else []
        best, (lo, at_lo), (hi, at_hi) = self._bisect(base, (0.0, None), (max_ratio, top), heads)
        if self.hit(best):
            return best, ""
        if heads:
            # Heads go whole, so the reduction jumps where one more head per layer goes. Hold the head count
            # below the jump and prune more channels, else hold the count above it and prune fewer.
            for held, bracket in ((lo, ((lo, at_lo), (max_ratio, None))), (hi, ((0.0, None), (hi, at_hi)))):
                if self.evals >= self.max_evals:
                    break
                if len(heads) == 1:  # the canonical ratio of that head count: k / heads
                    held = _heads_to_remove(held, heads[0]) / heads[0]
                fixed = base.replace(head_ratio=round(held, 6))
                (a, ra), (b, rb) = bracket
                # Results at the bracket ends were pruned with the same head count: reuse them.
                found, _, _ = self._bisect(fixed, (a, ra), (b, rb))
                if self.error(found) < self.error(best):
                    best = found
                if self.hit(best):
                    return best, ""
        return best, (f"the {self.objective} reduction jumps between ratios {lo:.3f} and {hi:.3f} (whole channels "
                      f"or heads go at once); closest reached: {self.reduction(best):.2f}x at ratio "
                      f"{best.config.ratio:.3f}")

    def _bisect(self, base: PruningConfig, low: tuple[float, PruneResult | None],
                high: tuple[float, PruneResult | None], heads: list[int] = ()) -> tuple[PruneResult, tuple, tuple]:
        """Bisection (guided by log-linear interpolation) for the ratio in [low, high]: best and final bracket.

        With ``heads`` (head counts of the attention layers, head ratio following the ratio), it stops as soon
        as the bracket holds a single step in the number of heads removed: the caller handles that jump.
        """
        (lo, at_lo), (hi, at_hi) = low, high
        if at_hi is None:
            at_hi = self.evaluate(base.replace(ratio=hi))
        if at_lo is None and lo > 0 or base.head_ratio is not None and at_lo is None:
            at_lo = self.evaluate(base.replace(ratio=lo))
        red_lo = self.reduction(at_lo) if at_lo is not None else 1.0
        red_hi = self.reduction(at_hi)
        best = min((r for r in (at_lo, at_hi) if r is not None), key=self.error)
        if red_hi < self.target or red_lo > self.target:
            return best, (lo, at_lo), (hi, at_hi)  # the target is outside this bracket
        def removed(ratio: float) -> int:
            return sum(_heads_to_remove(ratio, h) for h in heads)

        while not self.hit(best) and self.evals < self.max_evals and hi - lo > 1e-3:
            if heads and removed(hi) - removed(lo) == len(heads):
                break
            if red_hi > red_lo > 0:
                t = (math.log(self.target) - math.log(red_lo)) / (math.log(red_hi) - math.log(red_lo))
                mid = lo + min(0.8, max(0.2, t)) * (hi - lo)  # interpolate, but keep shrinking the bracket
            else:
                mid = (lo + hi) / 2
            result = self.evaluate(base.replace(ratio=round(mid, 6)))
            if self.error(result) < self.error(best):
                best = result
            if self.reduction(result) < self.target:
                lo, at_lo, red_lo = mid, result, self.reduction(result)
            else:
                hi, at_hi, red_hi = mid, result, self.reduction(result)
        return best, (lo, at_lo), (hi, at_hi)


# ============================================================================================ save / rebuild
_SKIPPED_ATTRIBUTES = {"training"}


def _primitive(value: Any) -> bool:
    # Exact types only: a str or int subclass (an Enum) would need its class to unpickle.
    if value is None or type(value) in (bool, int, float, str):
        return True
    if isinstance(value, (tuple, list)):
        return all(_primitive(v) for v in value)
    return False


def architecture_state(pruned: nn.Module) -> dict[str, Any]:
    """The pruned architecture and its weights as tensors and plain values only.

    Save it with ``torch.save`` and read it with ``torch.load(weights_only=True)``; :func:`rebuild` turns it
    back into a model, given the original (unpruned) model to start from. No pickled classes are involved.
    """
    modules: dict[str, dict[str, Any]] = {}
    for name, module in pruned.named_modules():
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(module).items()
                 if not k.startswith("_") and k not in _SKIPPED_ATTRIBUTES and _primitive(v)}
        modules[name] = {"type": type(module).__name__, "attributes": attrs}
    tensors = {n: p.detach().cpu().clone() for n, p in pruned.named_parameters()}
    buffers = {n: b.detach().cpu().clone() for n, b in pruned.named_buffers()}
    state: dict[str, Any] = {"format": ARCHITECTURE_FORMAT, "version": ARCHITECTURE_VERSION, "modules": modules,
                             "parameters": tensors, "buffers": buffers, "hf_config": {}}
    config = _hf_config(pruned)
    if config is not None:
        state["hf_config"] = {k: getattr(config, k) for k in ("hidden_size", "num_attention_heads",
                                                              "intermediate_size") if hasattr(config, k)}
    return state


def rebuild(original: nn.Module, state: dict[str, Any]) -> nn.Module:
    """The pruned model described by ``state`` (from :func:`architecture_state`), built from a copy of the
    unpruned ``original``: layers are resized and filled with the saved weights. ``original`` is untouched."""
    if not isinstance(state, dict) or state.get("format") != ARCHITECTURE_FORMAT:
        raise PruningError("a state that is not a pruned-architecture record",
                           "the output of autocompress.pruning.architecture_state", "save that dict and load it")
    if state.get("version", 1) > ARCHITECTURE_VERSION:
        raise PruningError(f"pruned-architecture record of version {state.get('version')}",
                           f"version {ARCHITECTURE_VERSION} or older", "upgrade autocompress")
    model = copy.deepcopy(original)
    found = dict(model.named_modules())
    missing = [n for n in state["modules"] if n not in found]
    wrong = [n for n, rec in state["modules"].items() if n in found and type(found[n]).__name__ != rec["type"]]
    if missing or wrong:
        raise PruningError(f"a pruned-architecture record whose layers {(missing + wrong)[:5]} do not match "
                           f"{type(original).__name__}", "the original model the pruned one was made from",
                           "pass the same unpruned model that was pruned")
    replaced: dict[int, nn.Parameter] = {}
    params, buffers = state["parameters"], state["buffers"]
    for module_name, module in found.items():
        prefix = f"{module_name}." if module_name else ""
        for key, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) in replaced:  # tied weights stay tied
                module._parameters[key] = replaced[id(param)]
            elif prefix + key in params:
                new = nn.Parameter(params[prefix + key].to(param.device, param.dtype), param.requires_grad)
                replaced[id(param)] = new
                module._parameters[key] = new
        for key, buffer in list(module._buffers.items()):
            if buffer is not None and prefix + key in buffers:
                module._buffers[key] = buffers[prefix + key].to(buffer.device, buffer.dtype)
    for module_name, record in state["modules"].items():
        module = found[module_name]
        for key, value in record["attributes"].items():
            if key in vars(module):
                setattr(module, key, tuple(value) if isinstance(getattr(module, key), tuple) else value)
    config = _hf_config(model)
    if config is not None:
        for key, value in state.get("hf_config", {}).items():
            setattr(config, key, value)
    return model


__all__ = [
    "ARCHITECTURE_FORMAT", "BNScaleImportanceConfig", "GroupNormImportanceConfig", "IMPORTANCE",
    "LAMPImportanceConfig", "MagnitudeImportanceConfig", "OBJECTIVES", "PruneResult", "PruningConfig",
    "PruningError", "PruningWarning", "RandomImportanceConfig", "STRATEGIES", "Strategy", "TECHNIQUES",
    "architecture_state", "prune", "rebuild", "solve_target", "technique_config", "technique_name",
]


