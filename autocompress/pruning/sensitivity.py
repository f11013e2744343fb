"""Per-layer sensitivity: how much a model's loss rises when one layer alone loses channels, and the ratios it
suggests.

:func:`measure_sensitivity` prunes each prunable conv/linear layer (each coupled group, named by its root) alone
on a copy, at one ratio and without retraining, and records the rise of the mean loss over a few batches, with
the number of parameters tied to that layer's channels. :func:`layer_ratios` turns the scan into per-layer
ratios for :class:`~.config.PruningConfig` (``layer_ratios``), with a dial from the uniform hand recipe
(weight 0) to fully sensitivity-weighted (weight 1) at the same mean ratio, weighted by parameters or by MACs.

    scan = measure_sensitivity(model, x, batches)           # stored with a study: scan.to_dict()
    config = PruningConfig(strategy="uniform", ratio=0.5, layer_ratios=layer_ratios(scan, 0.5, weight=1.0))
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._tensors import ModelInput, call_model, logits_of
from ..config import Config
from ..profile import count_flops, count_params
from .config import PruningConfig
from .core import example, output_shapes, prunable_layers, run
from .errors import PruningError, PruningWarning
from .importance import technique_config, technique_name

MAX_LAYER_RATIO = 0.95  # no layer is asked to lose more than this share of its channels
KEEP_SPREAD = 2.0  # a weighted layer keeps between 1/KEEP_SPREAD and KEEP_SPREAD times the uniform kept fraction
VERSION = 1  # of the stored record

Loss = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sensitivity:
    """One sensitivity scan. ``scores``: layer -> rise of the mean loss when that layer alone is pruned at
    ``ratio`` (can be slightly negative: pruning may help by chance); ``params``: layer -> parameters tied to
    its channels (removed if all of them went); ``flops``: layer -> MACs per sample tied to them (empty in
    records made before it was measured); ``baseline_loss``: the unpruned model's mean loss. Layers are in the
    model's order."""

    scores: dict[str, float]
    params: dict[str, int]
    baseline_loss: float
    ratio: float
    technique: str = "magnitude"
    seconds: float = 0.0
    flops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "scores": dict(self.scores), "params": dict(self.params),
                "flops": dict(self.flops), "baseline_loss": self.baseline_loss, "ratio": self.ratio,
                "technique": self.technique, "seconds": self.seconds}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Sensitivity:
        """Rebuild a scan from :meth:`to_dict` output (e.g. read back from JSON)."""
        fields = ("scores", "params", "baseline_loss", "ratio")
        if not isinstance(data, dict) or any(k not in data for k in fields) or \
                not isinstance(data["scores"], dict) or set(data["scores"]) != set(data.get("params") or {}):
            raise PruningError(f"sensitivity record {str(data)[:80]!r}", f"a dict with {', '.join(fields)} "
                               "(scores and params naming the same layers)", "pass the output of Sensitivity.to_dict()")
        if data.get("version", 1) > VERSION:
            raise PruningError(f"sensitivity record of version {data['version']}", f"version {VERSION} or older",
                               "upgrade autocompress")
        return Sensitivity(scores={k: float(v) for k, v in data["scores"].items()},
                           params={k: int(data["params"][k]) for k in data["scores"]},
                           baseline_loss=float(data["baseline_loss"]), ratio=float(data["ratio"]),
                           technique=str(data.get("technique", "magnitude")), seconds=float(data.get("seconds", 0.0)),
                           flops={k: int(v) for k, v in (data.get("flops") or {}).items() if k in data["scores"]})


def mean_loss(model: nn.Module, batches: list[tuple[ModelInput, torch.Tensor]], loss_fn: Loss | None = None) -> float:
    """The row-weighted mean of ``loss_fn(output, target)`` over ``batches`` (cross-entropy of the logits by
    default), in eval mode without gradients."""
    total = rows = 0.0
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs, target in batches:
                out = call_model(model, inputs)
                loss = F.cross_entropy(logits_of(out), target) if loss_fn is None else loss_fn(out, target)
                n = len(target)
                total += float(loss) * n
                rows += n
    finally:
        model.train(was)
    return total / max(rows, 1.0)


def measure_sensitivity(model: nn.Module, example_input: ModelInput, batches: Iterable[tuple[ModelInput, Any]],
                        loss_fn: Loss | None = None, ratio: float = 0.5,
                        technique: Config | str = "magnitude") -> Sensitivity:
    """Prune each prunable conv/linear layer alone at ``ratio`` on a copy (no retraining) and measure how much
    the mean loss over ``batches`` ((input, target) pairs; a few batches of 64 rows are enough) rises over the
    unpruned model. ``loss_fn(output, target)`` defaults to cross-entropy of the logits. ``model`` is not
    modified. A layer that loses no channel at ``ratio`` (too narrow, or no score: ``bn_scale`` without a
    BatchNorm) is left out of the scan, so per-layer ratios leave it at the config's ``ratio``. A parameter
    shared by two layers' channels (a conv's input channels are the previous layer's output channels) counts
    for both."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise PruningError(f"sensitivity ratio {ratio!r}", "a fraction of channels in (0, 1)", "pass e.g. ratio=0.5")
    technique = technique_config(technique) if isinstance(technique, str) else technique
    data = list(batches)
    if not data:
        raise PruningError("no batches for the sensitivity scan", "a few (input, target) batches",
                           "pass e.g. the first 4 batches of the evaluation loader")
    start = time.perf_counter()
    x = example(example_input)
    reference = output_shapes(model, x)
    before = (count_params(model), count_flops(model, x))
    baseline = mean_loss(model, data, loss_fn)
    scores: dict[str, float] = {}
    params: dict[str, int] = {}
    flops: dict[str, int] = {}
    for names in prunable_layers(model, x, "uniform"):
        name = names[0]
        config = PruningConfig(technique=technique, strategy="uniform", ratio=0.0, layer_ratios={name: ratio})
        with warnings.catch_warnings():  # notes about other layers (kept whole, ...) repeat for every layer
            warnings.filterwarnings("ignore", category=PruningWarning)
            result = run(model, x, config, progress=False, before=before, reference=reference)
        width, left = _width(model, name), _width(result.model, name)
        removed = before[0] - result.params_after
        if left >= width or removed <= 0:
            continue
        params[name] = round(removed * width / (width - left))
        flops[name] = max(0, round((before[1] - result.flops_after) * width / (width - left)))
        scores[name] = mean_loss(result.model, data, loss_fn) - baseline
    if not math.isfinite(baseline) or not all(math.isfinite(s) for s in scores.values()):
        raise PruningError(f"a sensitivity scan with a non-finite loss (baseline {baseline})",
                           "finite losses on the batches", "check the loss function and the targets")
    return Sensitivity(scores=scores, params=params, baseline_loss=baseline, ratio=float(ratio),
                       technique=technique_name(technique), seconds=time.perf_counter() - start, flops=flops)


def _width(model: nn.Module, name: str) -> int:
    module = dict(model.named_modules())[name]
    for attr in ("out_channels", "out_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    raise PruningError(f"layer {name!r} of type {type(module).__name__}", "a conv or linear layer",
                       "report this model")


COSTS = ("params", "flops")  # what the dial's mean ratio is weighted by


def layer_ratios(sensitivity: Sensitivity, mean_ratio: float, weight: float,
                 cost: str = "params") -> tuple[tuple[str, float], ...]:
    """Per-layer ratios for ``PruningConfig.layer_ratios``: a dial from uniform to sensitivity-weighted.

    With ``s_l`` layer l's score (floored at 5% of the mean positive score, so a layer that did not hurt is
    not given an infinite ratio) and ``P_l`` its parameters::

        ratio_l = clip(c * s_l ** -weight, 1 - 2 k, min(0.95, 1 - k / 2))      with k = 1 - mean_ratio

    where ``c`` is found by bisection so that the parameter-weighted mean ``sum(P_l * ratio_l) / sum(P_l)``
    equals ``mean_ratio``: about as many parameters go as with the uniform recipe. With ``cost="flops"``,
    ``P_l`` is the layer's MACs instead, so that about as many MACs go: weighted by parameters, a CNN's
    sensitive early layers (few parameters, most MACs) were kept and its late ones cut, and on mnist's ResNet-8
    uniform 70% with dial 0.5 removed 4.7× MACs where uniform widths removed 10.5×. ``weight`` 0 gives every
    layer ``mean_ratio`` exactly (the uniform hand recipe); ``weight`` 1 makes a layer's ratio inversely
    proportional to how much it hurt, so the layers that hurt more keep more channels; weights in between
    interpolate geometrically (``(s_mean / s_l) ** weight``). Each layer keeps between half and twice the
    uniform kept fraction (:data:`KEEP_SPREAD`): the scan prunes one layer at a time at one ratio, and says
    little about two layers cut to 5% in series (on digits, unbounded weights sent the two least sensitive layers
    to 95% and lost 50 points where uniform widths at the same mean lost 1.3). Clipping is inside the bisection,
    so the mean holds after it (the channels a clipped layer cannot lose go to the others). With no positive score
    the scan says nothing and the ratios are uniform.
    """
    for label, value, top in (("mean_ratio", mean_ratio, MAX_LAYER_RATIO), ("weight", weight, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top:
            raise PruningError(f"{label}={value!r}", f"a number in [0, {top}]", f"pass e.g. {label}={top / 2:g}")
    if cost not in COSTS:
        raise PruningError(f"cost={cost!r}", f"one of {', '.join(COSTS)}", 'pass cost="params" or cost="flops"')
    names = list(sensitivity.scores)
    positive = [s for s in sensitivity.scores.values() if s > 0]
    if weight == 0 or not positive or mean_ratio == 0:
        return tuple((n, float(mean_ratio)) for n in names)
    floor = 0.05 * sum(positive) / len(positive)
    raw = {n: max(sensitivity.scores[n], floor) ** -weight for n in names}
    keep = 1.0 - mean_ratio
    lowest, highest = max(0.0, 1.0 - KEEP_SPREAD * keep), min(MAX_LAYER_RATIO, 1.0 - keep / KEEP_SPREAD)
    # A record made before MACs were scanned has none: it falls back to parameters.
    costs = sensitivity.flops if cost == "flops" and sensitivity.flops else sensitivity.params
    params = {n: max(costs.get(n, 0), 0) for n in names}
    if sum(params.values()) == 0:
        params = {n: 1 for n in names}
    total = sum(params.values())

    def mean_at(c: float) -> float:
        return sum(params[n] * min(max(c * raw[n], lowest), highest) for n in names) / total

    low, high = 0.0, highest / min(raw.values())  # at ``high`` every layer is at its highest ratio
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_at(middle) < mean_ratio else (low, middle)
    c = (low + high) / 2
    return tuple((n, round(min(max(c * raw[n], lowest), highest), 6)) for n in names)
