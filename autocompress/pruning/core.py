"""Prune a model as a :class:`PruningConfig` says: a deep copy, step by step, measured afterwards.

Channels of conv/linear groups go through a Torch-Pruning pruner (its importance wrapped so global ranking
never empties a layer); attention heads and the hidden widths tied to them go by whole head blocks (see
:mod:`.graph`); the attributes forward() reads are patched after each step (see :mod:`.transformers`).
The model's inputs and outputs are never pruned, the caller's model is never modified, and every figure
reported is measured on the pruned model with :mod:`autocompress.profile`.

When the pruned model breaks (Torch-Pruning met an operation it cannot follow, or the model no longer runs or
changes its output shapes), each prunable layer is tried alone on a copy; those whose pruning breaks the
model are kept whole, with a :class:`PruningWarning` naming them, and the pruning is done again without them.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .._tensors import ModelInput, call_model, describe, repeat_to_batch
from ..errors import describe_error
from ..profile import count_flops, count_params
from ..progress import progress_bar
from .config import PruneResult, PruningConfig, Strategy, strategy_named
from . import heads
from .errors import PruningError, PruningWarning
from .attention import customized_pruners, find_attention, opaque
from .graph import (Analysis, Group, LayerFloor, analyse, channel_groups, heads_to_remove, is_batchnorm,
                    prune_heads, root_types, touches_output)
from .guard import guarded
from .importance import IMPORTANCE, BNScaleImportanceConfig, Importance
from .transformers import hf_width_config, initial_heads, patch

# A note that explains a choice rather than a loss: kept in the result's notes, not raised as a warning.
UNIFORM_NOTE = "Hugging Face model: layers pruned uniformly (its config holds one width per layer kind)"

# What Torch-Pruning raises when it cannot follow an operation (an index mapping out of range, a failed
# internal check, shapes that stop matching while it prunes), and what a model whose coupled layers were
# pruned apart raises in forward. Anything else (TypeError, AttributeError, ...) is a bug and propagates.
PRUNING_FAILURES = (RuntimeError, ValueError, IndexError, KeyError, AssertionError)

# Torch-Pruning's tracing chatter, emitted as plain UserWarnings; our own notes say what matters.
_TRACING_CHATTER = (r"Unwrapped parameters detected", r"\[Warning\] Unknown operation")


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Hide Torch-Pruning's tracing warnings (only those, by message); every other warning shows."""
    with warnings.catch_warnings():
        for message in _TRACING_CHATTER:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def example(example_input: ModelInput) -> ModelInput:
    """One row of ``example_input``: a tensor or a dict of tensors, as the model takes it."""
    if not isinstance(example_input, (torch.Tensor, Mapping)):
        raise PruningError(f"example input {describe(example_input)}", "a tensor or a dict of tensors",
                           "pass one batch of model input")
    return repeat_to_batch(example_input, 1)


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


def _prune_step(model: nn.Module, x: ModelInput, config: PruningConfig, importance: Importance,
                channel_ratio: float, heads_now: dict[int, int], initial: dict[int, int],
                first: bool, skip: frozenset[str] = frozenset(), target: float = 0.0,
                inner_at_start: dict[int, int] | None = None, fraction: float = 1.0) -> list[str]:
    """One pruning step on ``model`` in place: channels via a Torch-Pruning pruner, heads by head blocks.

    ``target`` is the fraction of channels removed once this step is done (the head widths follow it);
    ``fraction`` is the share of the steps done once this one is (per-layer ratios scale by it). ``initial``
    holds each group's width before the first step, by ``id`` of its root layer.
    """
    import torch_pruning as tp

    strategy = strategy_named(config.strategy)
    is_hf = hf_width_config(model) is not None
    global_ranking = strategy.global_ranking and not is_hf  # an HF config holds one width per layer kind
    scorer = LayerFloor(importance, config.max_layer_ratio, initial) if global_ranking else importance
    attention = find_attention(model)
    with _quiet_tracing(), guarded(type(model).__name__):
        try:
            with opaque(attention):  # each attention is one node of the graph (see .attention)
                pruner = tp.pruner.BasePruner(
                    model, x, importance=scorer, global_pruning=global_ranking, pruning_ratio=channel_ratio,
                    ignored_layers=[], round_to=config.round_to, root_module_types=list(root_types()),
                    forward_fn=call_model, output_transform=_tensors,
                    customized_pruners=customized_pruners(attention))
        except ZeroDivisionError as exc:  # Torch-Pruning's reshape index mapping met a width it inferred as 0
            raise PruningError(
                f"Torch-Pruning cannot map channels through a reshape in {type(model).__name__} "
                f"({describe_error(exc)}): a view that regroups channels, such as ShuffleNet's channel_shuffle",
                "a model whose reshapes keep channels in place", "no strategy can prune this model "
                "structurally; compress it with quantization or distillation instead") from exc
        DG = pruner.DG
        analysis = analyse(model, DG, attention)
    notes: list[str] = []
    selected = [g for g in analysis.groups if g.kind in strategy.kinds]
    width_groups = [g for g in selected if g.kind in ("conv", "linear")]
    if first:
        _check_prunable(model, config, strategy, analysis, selected)
        _check_layer_names(model, config, width_groups, is_hf)
        if analysis.blocked:
            notes.append(f"kept whole: {'; '.join(analysis.blocked)}")
        if analysis.untraced:
            notes.append(f"left unpruned, not reached by the dependency graph: {', '.join(analysis.untraced)}")
        if is_hf and strategy.global_ranking:
            notes.append(UNIFORM_NOTE)
        fixed = [n for g in analysis.groups if g.kind == "fixed" for n in g.names]
        unexpressible = [n for n in fixed if "(tied to " not in n]
        if unexpressible:
            notes.append(f"kept (width not expressible in the Hugging Face config): {', '.join(unexpressible)}")
        if len(unexpressible) < len(fixed):
            notes.append(f"kept (width tied to an attention kept whole): "
                         f"{', '.join(n for n in fixed if '(tied to ' in n)}")
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
    if strategy.name == "uniform" or config.layer_ratios is not None:
        skipped = {m for n, m in model.named_modules() if n in skip}
        with guarded(type(model).__name__):
            _prune_layers(pruner, importance, config, [g for g in width_groups if not skipped & set(g.roots)],
                          initial, fraction)
    elif channel_ratio > 0 and width_groups:
        with guarded(type(model).__name__):
            pruner.step()
    if "attention" in strategy.kinds:
        prune_heads(DG, importance, analysis, heads_now, {} if inner_at_start is None else inner_at_start, target)
    notes.extend(patch(model, analysis.field_roots))
    return notes


def _prune_layers(pruner: Any, importance: Importance, config: PruningConfig, groups: list[Group],
                  initial: dict[int, int], fraction: float) -> None:
    """Prune each conv/linear group alone to its own width: ``round(start * (1 - ratio * fraction))`` channels
    (a multiple of ``round_to`` where asked), ``start`` being its width before the first step and ``ratio`` its
    entry in ``layer_ratios``, else ``config.ratio``. The lowest-scoring channels go, as in Torch-Pruning's local
    pruning; counting from ``start`` rather than from the current width keeps rounding from piling up over steps.
    """
    asked = config.ratios_by_layer
    DG = pruner.DG
    chosen = []
    for g in groups:  # every score first, from the unpruned graph, as Torch-Pruning's pruner does
        ratio = next((asked[n] for n in g.names if n in asked), config.ratio)
        split = max(1, channel_groups(pruner, g.group))
        dims = g.width // split
        start = initial.setdefault(id(g.roots[0]), dims)
        keep = max(1, math.floor(start * (1.0 - ratio * fraction) + 0.5))
        if config.round_to:
            keep = max(config.round_to, math.floor(keep / config.round_to + 0.5) * config.round_to)
        scores = importance(g.group) if keep < dims else None
        if scores is None:  # nothing to remove, or no score (bn_scale without BatchNorm): kept whole
            continue
        scores = scores.detach().float().cpu().view(split, -1).mean(0)
        drop = torch.argsort(scores)[: dims - keep]
        chosen.append((g, sorted(int(i) + j * dims for j in range(split) for i in drop)))
    for g, idxs in chosen:
        root = g.group[0].dep
        DG.get_pruning_group(root.target.module, root.handler, idxs).prune()


def _check_layer_names(model: nn.Module, config: PruningConfig, groups: list[Group], is_hf: bool) -> None:
    """Every layer named in ``layer_ratios`` is a prunable conv/linear layer, coupled layers share one ratio."""
    asked = config.ratios_by_layer
    if not asked:
        return
    if is_hf:
        raise PruningError(f"layer_ratios on the Hugging Face model {type(model).__name__}",
                           "a model whose layers may have widths of their own (an HF config holds one width "
                           "per layer kind)", "prune it without layer_ratios (strategy 'uniform' or 'global')")
    known = [n for g in groups for n in g.names]
    unknown = [n for n in asked if n not in known]
    if unknown:
        shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
        raise PruningError(f"layer_ratios names {unknown[0]!r}, not a prunable layer of {type(model).__name__} "
                           f"for strategy {config.strategy!r}", f"names among its prunable layers: {shown}",
                           "use these names (from model.named_modules()); inputs and outputs are never pruned")
    for g in groups:
        named = [n for n in g.names if n in asked]
        if len({asked[n] for n in named}) > 1:
            raise PruningError(f"layer_ratios giving the coupled layers {', '.join(named)} different ratios",
                               "one ratio per coupled group (their channels are pruned together)",
                               f"give them the same ratio, or name only {named[0]!r}")


def _global_cap(pruner: Any, config: PruningConfig, selected: list[Group], initial: dict[int, int]) -> float:
    """The largest global ratio that leaves every layer its floor (see :class:`.graph.LayerFloor`).

    Torch-Pruning prunes every channel scoring at or below the threshold; if the ratio asked for more
    channels than lie above the floors, the threshold would be infinite and whole layers would be skipped.
    """
    bn_only = isinstance(config.technique, BNScaleImportanceConfig)
    total = free = 0
    for g in selected:
        if g.kind not in ("conv", "linear") or (bn_only and not g.has_bn):
            continue
        dims = g.width // max(1, channel_groups(pruner, g.group))
        start = initial.setdefault(id(g.group[0].dep.target.module), g.width)
        keep = min(g.width, max(1, math.ceil(start * (1.0 - config.max_layer_ratio))))
        total += dims
        free += max(0, dims - keep)
    return max(0.0, free / total - 1e-6) if total else 0.0


def _check_prunable(model: nn.Module, config: PruningConfig, strategy: Strategy, analysis: Analysis,
                    selected: list[Group]) -> None:
    heads = "attention" in strategy.kinds and any(not a.heads_fixed or not a.rotary for a in analysis.attention)
    if not selected and not heads:
        kinds = sorted({g.kind for g in analysis.groups} & {"conv", "linear", "attention"})
        fix = f"use strategy {' or '.join(repr(k) for k in kinds)} or 'global'" if kinds else \
            "this model has no layer whose channels can be removed without changing its inputs or outputs"
        if analysis.blocked:
            fix = f"{analysis.blocked[0]} is kept whole and blocks the widths around it; {fix}"
        raise PruningError(f"strategy {strategy.name!r} finds no prunable {strategy.name} layers in "
                           f"{type(model).__name__}", f"a model with such layers ({strategy.description})", fix)
    if isinstance(config.technique, BNScaleImportanceConfig) and not any(is_batchnorm(m) for m in model.modules()):
        raise PruningError(f"technique 'bn_scale' on {type(model).__name__}, which has no BatchNorm layer",
                           "a model with BatchNorm after the layers to prune (network slimming ranks "
                           "channels by the BatchNorm scale)", "use technique 'magnitude', 'group_norm' or 'lamp'")


def run(model: nn.Module, example_input: ModelInput, config: PruningConfig,
        callback: Callable[[int, nn.Module], None] | None = None, progress: bool = True,
        before: tuple[int, int] | None = None, measure_flops: bool = True,
        reference: list[torch.Size] | None = None) -> PruneResult:
    """Prune a deep copy of ``model``; measure it. Never raises for "nothing removed" (callers decide).

    ``before`` (params, FLOPs) and ``reference`` (output shapes) of the unpruned model save work when known.
    Layers whose pruning breaks the model are kept whole, with a warning (see the module docstring).
    """
    if config.strategy == heads.STRATEGY:  # direct surgery on heads and MLP channels, no dependency graph
        return heads.run(model, example_input, config, callback, before, measure_flops, reference)
    x = example(example_input)
    if reference is None:
        reference = output_shapes(model, x)
    if before is None:
        before = (count_params(model), count_flops(model, x) if measure_flops else 0)
    try:
        subject, notes = _attempt(model, x, config, callback, progress, reference, frozenset())
    except _Broken as first_failure:
        unprunable = _unprunable_layers(model, x, reference)
        if not unprunable:
            raise first_failure.error from first_failure.__cause__
        try:
            subject, notes = _attempt(model, x, config, callback, progress, reference, frozenset(unprunable))
        except _Broken as again:
            raise again.error from again.__cause__
        modules = dict(model.named_modules())
        named = ", ".join(f"{n} ({type(modules[n]).__name__})" for n in unprunable)
        notes.insert(0, f"left unpruned (pruning them breaks the model; the dependency graph cannot follow "
                        f"their coupling): {named}")
    notes = list(dict.fromkeys(notes))
    for note in notes:
        if note != UNIFORM_NOTE:
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
    importance = IMPORTANCE.apply(config.technique)
    heads_at_start = initial_heads(subject)
    head_fraction = config.effective_head_ratio
    notes: list[str] = []
    removed_heads: dict[int, int] = {k: 0 for k in heads_at_start}
    floors: dict[int, int] = {}
    inner_at_start: dict[int, int] = {}
    with progress_bar(f"pruning ({config.strategy}, ratio {config.ratio:.2f})", total=config.steps,
                      enabled=progress and config.steps > 1) as bar:
        for step in range(1, config.steps + 1):
            done, target = config.ratio * (step - 1) / config.steps, config.ratio * step / config.steps
            # Channel ratio relative to the current widths, so that after step i the model has lost
            # ratio * i / steps of its original channels; a hair less avoids int() rounding one channel too far.
            relative = max(0.0, 1.0 - (1.0 - target) / (1.0 - done) - 1e-9)
            heads_now = {}
            for key, h0 in heads_at_start.items():
                want = heads_to_remove(head_fraction * step / config.steps, h0)
                heads_now[key] = want - removed_heads[key]
                removed_heads[key] = want
            flags.unfreeze(subject)
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    notes.extend(_prune_step(subject, x, config, importance, relative, heads_now, floors, step == 1,
                                             skip, target, inner_at_start, step / config.steps))
            except PRUNING_FAILURES as exc:  # Torch-Pruning met an operation it cannot follow
                raise _Broken(PruningError(
                    f"pruning {type(model).__name__} with strategy {config.strategy!r} failed: "
                    f"{describe_error(exc)}", "layers whose coupling the dependency graph can trace",
                    "try strategy 'conv' or 'linear', or report this model")) from exc
            flags.restore(subject)
            if callback is not None:
                callback(step, subject)
            bar.advance()
    flags.restore(subject)
    try:
        out = _shapes_after(subject, x)
    except PRUNING_FAILURES as exc:
        raise _Broken(PruningError(f"the pruned model fails on the example input: {describe_error(exc)}",
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
            return [t.shape for t in _tensors(call_model(model.eval(), x))]
        finally:
            model.train(was)


def _unprunable_layers(model: nn.Module, x: ModelInput, reference: list[torch.Size]) -> list[str]:
    """The conv/linear layers whose own channel group, pruned by one channel on a copy, breaks the model."""
    import torch_pruning as tp

    names = [n for n, m in model.named_modules() if isinstance(m, root_types())]
    broken = []
    for name in names:
        subject = copy.deepcopy(model)
        module = dict(subject.named_modules())[name]
        out_fn = tp.prune_conv_out_channels if isinstance(module, tp.ops.TORCH_CONV) else \
            tp.prune_linear_out_channels
        try:
            with _traced(subject, x) as (graph, _):
                group = graph.get_pruning_group(module, out_fn, idxs=[0])
                if touches_output(graph, group):
                    continue  # never pruned anyway
                group.prune()
            if _shapes_after(subject, x) != reference:
                broken.append(name)
        except PRUNING_FAILURES:
            broken.append(name)
    return broken


@contextmanager
def _traced(model: nn.Module, x: ModelInput) -> Iterator[tuple[Any, list[Any]]]:
    """Torch-Pruning's dependency graph of ``model`` (attention as opaque nodes) and the attentions found;
    the graph is meant to be used inside the block."""
    import torch_pruning as tp

    attention = find_attention(model)
    with _quiet_tracing(), torch.inference_mode(False), torch.enable_grad(), \
            guarded(type(model).__name__), opaque(attention):
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, forward_fn=call_model,
                                                     output_transform=_tensors, verbose=False,
                                                     customized_pruners=customized_pruners(attention))
        yield graph, attention


def prunable_layers(model: nn.Module, example_input: ModelInput, strategy: str = "uniform") -> list[list[str]]:
    """The conv/linear layers ``strategy`` may prune, one list of names per coupled group (layers whose channels
    are pruned together, the group's root first), in the model's order. These are the names ``layer_ratios``
    takes; the model is not modified."""
    kinds = strategy_named(strategy).kinds & {"conv", "linear"}
    subject = copy.deepcopy(model)
    _Frozen(subject).unfreeze(subject)  # tracing needs autograd
    with _traced(subject, example(example_input)) as (graph, attention):
        analysis = analyse(subject, graph, attention)
    order = {name: i for i, (name, _) in enumerate(subject.named_modules())}
    return sorted((list(g.names) for g in analysis.groups if g.kind in kinds), key=lambda names: order[names[0]])


def output_shapes(model: nn.Module, x: ModelInput) -> list[torch.Size]:
    """The shapes of every tensor ``model`` returns on ``x``; a :class:`PruningError` if it fails."""
    try:
        return _shapes_after(model, x)
    except Exception as exc:  # the user's model may raise anything on a wrong input; the message keeps why
        raise PruningError(f"the model fails on the example input {describe(x)}: {describe_error(exc)}",
                           "a model that runs on its example input", "pass an input the model accepts") from exc


def prune(model: nn.Module, example_input: ModelInput, config: PruningConfig | None = None,
          callback: Callable[[int, nn.Module], None] | None = None, progress: bool = True) -> PruneResult:
    """Prune a copy of ``model`` as ``config`` says and measure it; ``model`` itself is left untouched.

    ``callback(step, model)`` runs after each of ``config.steps`` steps (fine-tune there). Raises
    :class:`PruningError` when nothing can be pruned or nothing was removed.
    """
    config = config or PruningConfig()
    result = run(model, example_input, config, callback, progress)
    asked = config.ratio > 0 or any(r > 0 for _, r in config.layer_ratios or ())
    if asked and result.params_after >= result.params_before:
        why = f" ({'; '.join(result.notes)})" if result.notes else ""
        raise PruningError(f"pruning at ratio {config.ratio} with strategy {config.strategy!r} removed no "
                           f"parameters{why}", "a ratio, strategy and technique that remove at least one channel",
                           "raise the ratio, or use another strategy or technique")
    return result
