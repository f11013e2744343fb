"""Structured pruning: remove whole channels, neurons and attention heads, so layers really get smaller.

Built on Torch-Pruning's dependency graph: layers whose channels are coupled (residual adds, concatenations,
flatten into a linear layer, the q/k/v projections of one attention) are pruned together because the graph
says so, not because of name lists. What is pruned is chosen by two independent parts of a
:class:`PruningConfig`:

* the **technique** (a config record registered with its importance factory) scores channels:
  ``random``, ``magnitude`` (L1), ``bn_scale`` (network slimming), ``group_norm`` (group L2 over coupled
  parameters), ``lamp``;
* the **strategy** decides which layers may lose channels and how they are ranked: ``conv``, ``linear`` and
  ``attention`` prune one kind of layer with the same ratio in every layer; ``uniform`` prunes every kind with
  the same ratio in every layer; ``global`` prunes every kind and ranks channels across layers; ``heads_mlp`` (:mod:`.heads`, direct module surgery rather than the graph)
  removes whole attention heads and MLP channels of a transformer and keeps its residual (hidden) width.

The model's inputs and outputs are never pruned (the graph shows which layers feed the output directly), the
caller's model is never modified (a deep copy is pruned), and every figure reported is measured on the pruned
model with :mod:`autocompress.profile`. A pruned architecture is saved as a JSON record by
:mod:`autocompress._arch` (``capture``/``rebuild``), which the ``autocompress`` export format embeds.

    result = prune(model, x, PruningConfig(technique="magnitude", strategy="global", ratio=0.3))
    result = solve_target, solve_above, SOLVER_TOLERANCE(model, x, "magnitude", objective="flops", target=2.0)

``PruningConfig.layer_ratios`` gives named conv/linear layers ratios of their own (strategies ``uniform``,
``conv``, ``linear``); :mod:`.sensitivity` measures how much each layer hurts when pruned alone and turns that
into per-layer ratios (:func:`measure_sensitivity`, :func:`layer_ratios`).

Modules: :mod:`.importance` (techniques), :mod:`.config` (config, strategies, result), :mod:`.graph`
(dependency-graph analysis), :mod:`.transformers` (attention architectures), :mod:`.core` (:func:`prune`),
:mod:`.solver` (:func:`solve_target`), :mod:`.sensitivity`, :mod:`.errors`.
"""

from __future__ import annotations

from .config import OBJECTIVES, PER_LAYER_STRATEGIES, STRATEGIES, PruneResult, PruningConfig, Strategy
from .core import prunable_layers, prune
from .errors import PruningError, PruningWarning
from .importance import (IMPORTANCE, TECHNIQUES, BNScaleImportanceConfig, GroupNormImportanceConfig,
                         LAMPImportanceConfig, MagnitudeImportanceConfig, RandomImportanceConfig, technique_config,
                         technique_name)
from .sensitivity import Sensitivity, layer_ratios, measure_sensitivity
from .solver import SOLVER_TOLERANCE, solve_above, solve_target

__all__ = [
    "BNScaleImportanceConfig", "GroupNormImportanceConfig", "IMPORTANCE", "LAMPImportanceConfig",
    "MagnitudeImportanceConfig", "OBJECTIVES", "PER_LAYER_STRATEGIES", "PruneResult", "PruningConfig",
    "PruningError", "PruningWarning", "RandomImportanceConfig", "STRATEGIES", "Sensitivity", "Strategy",
    "TECHNIQUES", "layer_ratios", "measure_sensitivity", "prunable_layers", "prune", "SOLVER_TOLERANCE",
    "solve_above", "solve_target", "technique_config", "technique_name",
]
