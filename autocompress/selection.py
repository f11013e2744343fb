"""The rule-based selector: from a Profile and Requirements to a seed plan, with a reason for each choice.

The rules follow the thesis (section 4.2) as restated in the design notes, with its code's bugs fixed:

- pruning strategy: for ``size``, greedily take the layer types holding the most parameters until the needed
  removal fits under an 80% cap of what they hold; for ``flops``, ``latency`` and ``energy``, take the
  compute-heavy types (conv for CNNs, attention and linear/MLP for transformers, linear for MLPs). Past the
  80% cap, prune all layers (``global``).
- pruning technique: group-norm for transformers, magnitude (L1) for a linear strategy, BN-scale for a conv
  strategy on a model with BatchNorm, LAMP otherwise.
- distillation: hard-target when compute is scarce or the metric is accuracy, soft-target for nuanced metrics
  (F1, perplexity), combined otherwise.
- quantization: none for a GPU backend, dynamic for transformers (static/QAT cannot trace their attention),
  none for a MACs objective (int8 does the same multiply-adds), QAT on CPU with compute to retrain, else static
  when more than 2 points may be lost or when dynamic int8 would touch too few weights to matter, else dynamic.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from .metrics import check_max_drop, drop_unit
from .profile import Profile
from .requirements import TIMED_OBJECTIVES, Requirements, quantization_backend

CAP = 0.80  # above this share of the chosen layers' weights, recovery drops sharply (thesis 4.2.2)
QUANT_DROP_RULE = 2.0  # points: above it static PTQ is allowed, else dynamic (thesis 4.2.4)
# Below this estimated size gain, dynamic int8 is not worth choosing: it quantizes only linear layers, and a CNN
# whose only linear layer is its classifier gains about 1.0× (measured on mnist's ResNet-8: the seed then pruned
# 95% to make up for it and lost 6.9 points).
DYNAMIC_WORTH = 1.2

# Estimated X-fold gains that quantization adds on top of pruning, per objective. Size: int8 weights are
# 4× smaller than fp32 (dynamic mode quantizes only linear layers). MACs do not change. Latency and energy:
# a conservative estimate; the pipeline measures the real figure and backs off when it is off.
INT8_SIZE_GAIN = 4.0
INT8_LATENCY_GAIN = {"static": 1.5, "qat": 1.5, "dynamic": 1.0, "none": 1.0}


@dataclass(frozen=True)
class Reason:
    """One decision of the selector: what was chosen, and the rule with the numbers behind it."""

    decision: str
    choice: str
    rule: str

    def __str__(self) -> str:
        return f"{self.decision} = {self.choice}: {self.rule}"


def layer_category(layer_type: str) -> str:
    """``conv``, ``linear``, ``attention`` or ``other`` for a layer type name from a Profile."""
    if layer_type.endswith(("SelfAttention", "Attention")) or layer_type == "MultiheadAttention":
        return "attention"
    if layer_type == "Conv1D":  # Hugging Face GPT-2's Conv1D is a linear layer with transposed weights
        return "linear"
    if "Conv" in layer_type:
        return "conv"
    if "Linear" in layer_type:
        return "linear"
    return "other"


def category_shares(profile: Profile, of: str) -> dict[str, float]:
    """The share of parameters (``of="params"``) or MACs (``of="flops"``) held by each layer category."""
    total = getattr(profile, of) or 1
    shares: dict[str, float] = {"conv": 0.0, "linear": 0.0, "attention": 0.0, "other": 0.0}
    for layer in profile.layers:
        shares[layer_category(layer.type)] += getattr(layer, of) / total
    return shares


def quantization_gain(profile: Profile, objective: str, mode: str) -> float:
    """The estimated X-fold reduction that quantization ``mode`` adds for ``objective``."""
    if mode == "none":
        return 1.0
    if objective == "size":
        if mode == "dynamic":
            linear = category_shares(profile, "params")["linear"]
            return 1.0 / (1.0 - linear * (1.0 - 1.0 / INT8_SIZE_GAIN))
        return INT8_SIZE_GAIN
    if objective in ("latency", "energy"):
        return INT8_LATENCY_GAIN.get(mode, 1.0)
    return 1.0  # int8 does the same number of MACs


def choose_quantization(profile: Profile, req: Requirements) -> tuple[str, Reason]:
    if req.backend == "gpu":
        return "none", Reason("quantization", "none", "the backend is gpu, and int8 kernels here run on CPU only")
    if req.backend == "onnxruntime" and profile.arch_type == "transformer" and req.objective != "flops":
        return "static", Reason("quantization", "static",
                                "transformer on ONNX Runtime: static QDQ int8, calibrated on training batches, "
                                "quantizes the linear layers' weights and activations (those layers hold "
                                f"{100 * category_shares(profile, 'params')['linear']:.0f}% of parameters); the "
                                "study tries dynamic int8 where static loses more than the threshold")
    if profile.arch_type == "transformer":
        # torch.ao's static and QAT paths cannot trace attention blocks that take dicts of tensors, and
        # attention's matmuls stay float anyway; int8 Linear weights are the standard CPU path for transformers.
        return "dynamic", Reason("quantization", "dynamic",
                                 "transformer on CPU: dynamic int8 quantizes its linear layers, which hold "
                                 f"{100 * category_shares(profile, 'params')['linear']:.0f}% of parameters; "
                                 "static and QAT int8 cannot trace its attention")
    if req.objective == "flops":
        return "none", Reason("quantization", "none",
                              "the objective is MACs, which int8 does not reduce (it does the same multiply-adds "
                              "in 8 bits): quantizing would cost accuracy for nothing")
    if req.budget == "high":
        where = ("ONNX Runtime with compute to retrain: quantization-aware training keeps the most accuracy (the "
                 "trained fake-quant model is exported as QDQ ONNX)" if req.backend == "onnxruntime" else
                 "CPU backend with compute to retrain: quantization-aware training keeps the most accuracy")
        return "qat", Reason("quantization", "qat", where)
    allowed, what = _allowed_points(profile, req)
    if allowed > QUANT_DROP_RULE:
        return "static", Reason("quantization", "static",
                                f"low budget and {what} may be lost (> {QUANT_DROP_RULE:g}): "
                                "static int8 quantizes weights and activations")
    dynamic_gain = quantization_gain(profile, "size", "dynamic")
    if dynamic_gain < DYNAMIC_WORTH:
        linear = category_shares(profile, "params")["linear"]
        return "static", Reason("quantization", "static",
                                f"low budget and only {what} may be lost, but dynamic int8 quantizes only linear "
                                f"layers, which hold {100 * linear:.0f}% of parameters (about {dynamic_gain:.2f}× "
                                "smaller): static int8 quantizes the convolutions too")
    return "dynamic", Reason("quantization", "dynamic",
                             f"low budget and only {what} may be lost (≤ {QUANT_DROP_RULE:g}): "
                             "dynamic int8 keeps activations in float and loses least")


def _allowed_points(profile: Profile, req: Requirements) -> tuple[float, str]:
    """The allowed drop in points for the quantization rule, and how to say it. A raw metric's drop (in its own
    units) counts as the percentage of the original value it is."""
    metric = profile.metric or {}
    if drop_unit(metric) == "points" or not metric.get("value"):
        return req.max_drop, f"{req.max_drop:g} points"
    points = 100.0 * req.max_drop / abs(float(metric["value"]))
    return points, f"{req.max_drop:g} {metric.get('name') or 'metric'} units ({points:.2g}% of its value)"


def pruning_fold_needed(profile: Profile, req: Requirements, quant_mode: str) -> tuple[float, Reason]:
    gain = quantization_gain(profile, req.objective, quant_mode)
    fold = max(1.0, req.target / gain)
    unit = {"size": "size", "flops": "MACs", "latency": "latency", "energy": "energy (estimate)"}[req.objective]
    return fold, Reason("pruning.target", f"{fold:.2f}x",
                        f"the {req.target:g}× {unit} target over an estimated {gain:.2f}× from {quant_mode} "
                        f"quantization leaves {fold:.2f}× for pruning")


def _compute_heavy(profile: Profile) -> list[str]:
    if profile.arch_type == "transformer":
        return ["attention", "linear"]
    if profile.arch_type == "cnn":
        return ["conv"]
    return ["linear"]


def _strategy_of(categories: list[str]) -> str:
    if categories == ["conv"]:
        return "conv"
    if categories == ["linear"]:
        return "linear"
    if set(categories) <= {"attention", "linear"} and "attention" in categories:
        return "attention"  # heads and MLP widths of the transformer blocks
    return "global"


def choose_strategy(profile: Profile, req: Requirements, pruning_fold: float) -> tuple[str, Reason]:
    """Which layers to prune, from the parameter (size) or MAC (other objectives) distribution."""
    needed = 1.0 - 1.0 / pruning_fold  # the fraction of the model's params or MACs that must go
    if req.objective == "size":
        shares = category_shares(profile, "params")
        ranked = [c for c in sorted(("conv", "linear", "attention"), key=lambda c: -shares[c]) if shares[c] > 0]
        chosen: list[str] = []
        held = 0.0
        for category in ranked:
            chosen.append(category)
            held += shares[category]
            if needed <= CAP * held:
                break
        what, unit = "parameters", "size"
    else:
        shares = category_shares(profile, "flops")
        chosen = [c for c in _compute_heavy(profile) if shares[c] > 0] or _compute_heavy(profile)
        held = sum(shares[c] for c in chosen)
        what, unit = "MACs", req.objective
    names = " and ".join(chosen)
    of_held = needed / held if held else float("inf")
    if needed <= CAP * held:
        strategy = _strategy_of(chosen)
        return strategy, Reason("pruning.strategy", strategy,
                                f"{names} layers hold {100 * held:.0f}% of {what}; the {pruning_fold:.2f}× "
                                f"{unit} pruning target needs {100 * of_held:.0f}% of them, under the "
                                f"{100 * CAP:.0f}% cap")
    return "global", Reason("pruning.strategy", "global",
                            f"{names} layers hold {100 * held:.0f}% of {what}; the {pruning_fold:.2f}× {unit} "
                            f"pruning target would need {100 * of_held:.0f}% of them, over the {100 * CAP:.0f}% cap, "
                            "so all layers are pruned")


def choose_technique(profile: Profile, strategy: str) -> tuple[str, Reason]:
    has_bn = any(layer.type.startswith("BatchNorm") for layer in profile.layers)
    if profile.arch_type == "transformer":
        return "group_norm", Reason("pruning.technique", "group_norm",
                                    "transformer: group-norm scores coupled heads and MLP channels together")
    if strategy == "linear":
        return "magnitude", Reason("pruning.technique", "magnitude",
                                   "the strategy targets linear layers: L1 magnitude ranks their neurons well")
    if strategy == "conv" and has_bn:
        return "bn_scale", Reason("pruning.technique", "bn_scale",
                                  "the strategy targets conv layers followed by BatchNorm: BN scales rank channels")
    why = "no BatchNorm to score conv channels" if strategy == "conv" else f"a {strategy} strategy"
    return "lamp", Reason("pruning.technique", "lamp", f"LAMP is the general default ({why})")


def choose_distillation(profile: Profile, req: Requirements) -> tuple[str, Reason]:
    metric = (profile.metric or {}).get("name") or ""
    # Hard-target distillation is cross-entropy on the ground-truth labels, which is fine-tuning: one technique.
    hard = "hard targets (cross-entropy on the labels, i.e. fine-tuning)"
    if req.budget == "low":
        return "finetune", Reason("distillation", "finetune", f"low compute budget: {hard} converge fastest")
    if metric == "accuracy":
        return "finetune", Reason("distillation", "finetune", f"the metric is accuracy: {hard} favour confident "
                                  "top-1")
    if metric in ("f1", "perplexity"):
        return "soft", Reason("distillation", "soft",
                              f"the metric is {metric}: soft targets carry the teacher's class probabilities")
    return "combined", Reason("distillation", "combined",
                              f"the metric {metric or '(custom)'} is neither accuracy nor a nuanced one: "
                              "combine labels and the teacher's soft targets")


# ------------------------------------------------------------------------------------------------ the plan
INT8_ROUND_TO = 16
SIZE_CALIBRATION_ROUNDS = 4
CNN_FLOPS_TECHNIQUES = ("lamp", "magnitude")  # compared by the selector for a MACs target


def int8_copy(model: nn.Module, example_input: Any, mode: str = "static") -> nn.Module | None:
    """An int8 ``mode`` copy of ``model`` (QAT's converted model is a static one) calibrated with the example
    input; None where quantization fails (the trial will say why). For quick measurements before training."""
    from .errors import QuantizationError
    from .quantization import quantization_config, quantize

    config = quantization_config("static" if mode == "qat" else mode, backend="x86")
    try:
        return quantize(model, config, calibration_loader=[example_input], example_input=example_input,
                        progress=False).model
    except QuantizationError:
        return None


def quantized_size_reduction(profile: Profile, pruned: nn.Module, example_input: Any, mode: str) -> float | None:
    """The size reduction of ``pruned`` after int8 ``mode``, measured on :func:`int8_copy`; None where
    quantization fails."""
    from .profile import serialized_size_mb

    quantized = int8_copy(pruned, example_input, mode)
    return None if quantized is None else profile.size_mb / serialized_size_mb(quantized)


BUDGET_EPOCHS = {"low": 5, "high": 15}  # retraining epochs the budget buys (with patience-3 early stopping)
PRUNING_OBJECTIVE = {"size": "params", "flops": "flops", "latency": "flops", "energy": "flops"}


@dataclass(frozen=True)
class Selection:
    """The selector's answer: the plan, one reason per decision, and the requirements it answers.

    ``pruning_target`` is the X-fold reduction (params for size, MACs otherwise) left for pruning once the
    quantization's estimated gain is counted.
    """

    plan: Any
    reasons: tuple[Reason, ...]
    requirements: Requirements
    pruning_target: float

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "reasons": [str(r) for r in self.reasons],
                "requirements": self.requirements.to_dict(), "pruning_target": self.pruning_target}


def _estimated_ratio(fold: float) -> float:
    # Structured pruning shrinks both sides of a weight matrix: keeping (1-r) of the channels keeps ≈(1-r)².
    return min(0.95, 1.0 - 1.0 / math.sqrt(fold))


def select(profile: Profile, requirements: Requirements, model: nn.Module | None = None,
           example_input: Any = None, progress: bool = False, vocabulary: Any = None) -> Selection:
    """Pick the seed plan for ``profile`` under ``requirements``.

    With the model and an example input, the pruning ratio comes from the target solver (real counts of
    pruned copies); without them, from an estimate, and the reason says so.
    """
    from .distillation import DistillationConfig, technique_from_name
    from .plan import Plan
    from .pruning import SOLVER_TOLERANCE, PruningConfig, PruningWarning, solve_above
    from .quantization import quantization_config

    check_max_drop(profile.metric or {}, requirements.max_drop)
    from . import transformer_route

    if model is not None and transformer_route.applies(profile, requirements):
        # Transformers on CPU: trim, int8 embeddings and linears first, then prune only as far as still needed.
        return transformer_route.select_transformer(profile, requirements, model, example_input, vocabulary)
    reasons: list[Reason] = []
    quant_mode, reason = choose_quantization(profile, requirements)
    reasons.append(reason)
    fold, reason = pruning_fold_needed(profile, requirements, quant_mode)
    reasons.append(reason)
    strategy, reason = choose_strategy(profile, requirements, fold)
    reasons.append(reason)
    technique, reason = choose_technique(profile, strategy)
    reasons.append(reason)

    # fbgemm's int8 kernels are fastest on channel counts that are multiples of 16 (60 channels ran 26% slower
    # than 64 with 11% fewer MACs; studies/results/quantization_compare.md), so int8 plans timed for speed keep
    # such widths. For size and FLOPs they only cost: a 2% ratio took resnet18's 64-channel layers to 48.
    round_to = INT8_ROUND_TO if quant_mode in ("static", "qat") and requirements.objective in TIMED_OBJECTIVES \
        else None
    if round_to:
        reasons.append(Reason("pruning.round_to", str(round_to), f"{quant_mode} int8 on x86 runs fastest on "
                              f"channel counts that are multiples of {round_to}"))
    objective = PRUNING_OBJECTIVE[requirements.objective]
    unit = "parameters" if objective == "params" else "MACs"
    if fold <= 1.0 + 1e-9:
        ratio = 0.0
        reasons.append(Reason("pruning.ratio", "0", "quantization alone is estimated to reach the target"))
    elif model is not None and example_input is not None:
        def solve(granularity: int | None, pruning_fold: float, by: str | None = None) -> Any:
            return solve_above(model, example_input, by or technique, strategy, objective, pruning_fold,
                               round_to=granularity, progress=progress)

        def solve_fold(pruning_fold: float) -> Any:
            nonlocal round_to
            solved = solve(round_to, pruning_fold)
            if round_to and not solved.reached:
                # Widths in steps of 16 can jump over the target on small layers; free widths land on it.
                reasons.append(Reason("pruning.round_to", "none", f"widths in multiples of {round_to} cannot "
                                      f"land within {100 * SOLVER_TOLERANCE:.0f}% of {pruning_fold:.2f}× {unit} "
                                      "here"))
                round_to = None
                solved = solve(None, pruning_fold)
            return solved

        with warnings.catch_warnings():
            # A target the solver misses is reported in the reasons, not also as a warning.
            warnings.filterwarnings("ignore", category=PruningWarning)
            solved = solve_fold(fold)
            if objective == "flops" and profile.arch_type != "transformer":
                # Techniques spread the same ratio differently over layers, and MACs sit in a few of them: the
                # technique that reaches the MACs target removing the fewest channels keeps the most capacity.
                for alternative in CNN_FLOPS_TECHNIQUES:
                    if alternative == technique:
                        continue
                    tried = solve(round_to, fold, by=alternative)
                    close = tried.reduction(objective) >= solved.reduction(objective) * (1 - SOLVER_TOLERANCE)
                    if close and tried.ratio < solved.ratio - 0.02:
                        reasons.append(Reason("pruning.technique", alternative,
                                              f"{alternative} reaches {fold:.2f}× {unit} removing "
                                              f"{tried.ratio:.0%} of the channels where {technique} needs "
                                              f"{solved.ratio:.0%}: fewer channels removed keep more capacity"))
                        technique, solved = alternative, tried
            if requirements.objective == "size" and quant_mode != "none":
                # int8 stores a scale and zero point per output channel (float64 and int64 in torch), which
                # weigh more as layers narrow: on small models the real gain is well under 4×. Measure it on
                # the pruned copy and aim pruning higher until the quantized copy reaches the target.
                history: list[tuple[float, float]] = []  # (pruning fold, measured int8 size reduction)
                for _ in range(SIZE_CALIBRATION_ROUNDS):
                    measured = quantized_size_reduction(profile, solved.model, example_input, quant_mode)
                    if measured is None or measured >= requirements.target * (1 - SOLVER_TOLERANCE):
                        if measured is not None and history:
                            reasons.append(Reason("pruning.target", f"{fold:.2f}x",
                                                  f"{quant_mode} int8 of the pruned copy measured {measured:.2f}× "
                                                  f"size: the {requirements.target:g}× target is reached"))
                        break
                    history.append((solved.param_reduction, measured))
                    # Size grows sub-linearly with the pruning fold: step by the elasticity seen so far.
                    elasticity = 1.0
                    if len(history) > 1:
                        (f1, m1), (f2, m2) = history[-2], history[-1]
                        if f2 > f1 and m2 > m1:
                            elasticity = min(1.0, max(0.2, math.log(m2 / m1) / math.log(f2 / f1)))
                    new_fold = fold * (requirements.target / measured) ** (1 / elasticity)
                    reasons.append(Reason("pruning.target", f"{new_fold:.2f}x",
                                          f"{quant_mode} int8 of the pruned copy measured {measured:.2f}× size, "
                                          f"short of {requirements.target:g}× (per-channel scales weigh more on "
                                          f"narrow layers): pruning aims at {new_fold:.2f}× instead"))
                    fold = new_fold
                    solved = solve_fold(fold)
                    if not solved.reached:
                        break
        ratio = solved.ratio
        if solved.config.strategy != strategy:
            strategy = solved.config.strategy
            reasons.append(Reason("pruning.strategy", strategy, "the target solver widened the strategy to reach "
                                  f"{fold:.2f}× {unit}"))
        verdict = "reached" if solved.reached else "could not reach"
        notes = f" ({'; '.join(solved.notes)})" if solved.notes and not solved.reached else ""
        reasons.append(Reason("pruning.ratio", f"{ratio:.3f}",
                              f"the target solver {verdict} {fold:.2f}× {unit}: {solved.reduction(objective):.2f}× "
                              f"measured on a pruned copy at ratio {ratio:.3f}{notes}"))
    else:
        ratio = _estimated_ratio(fold)
        reasons.append(Reason("pruning.ratio", f"{ratio:.3f}",
                              f"estimated: keeping (1−r) of the channels keeps about (1−r)² of {unit}; "
                              "the target solver refines it when the model is at hand"))

    distil_name, reason = choose_distillation(profile, requirements)
    reasons.append(reason)
    epochs = BUDGET_EPOCHS[requirements.budget]
    reasons.append(Reason("distillation.epochs", str(epochs),
                          f"a {requirements.budget} budget buys up to {epochs} epochs, with early stopping "
                          "(patience 3) keeping the best model"))
    backend = quantization_backend(requirements.backend)
    plan = Plan(
        pruning=PruningConfig(technique=technique, strategy=strategy, ratio=round(ratio, 4), round_to=round_to),
        distillation=DistillationConfig(technique=technique_from_name(distil_name), stop="epochs",
                                        max_epochs=epochs, patience=3),
        quantization=quantization_config(quant_mode, backend=backend),
    )
    return Selection(plan=plan, reasons=tuple(reasons), requirements=requirements, pruning_target=fold)


def plan_task(task: Any, requirements: Requirements, threads: int | None = None,
              progress: bool = False) -> tuple[Profile, Selection]:
    """Profile ``task``'s model on the deployment backend and pick its seed plan: ``(profile, selection)``."""
    from .device import require_backend
    from .pipeline import measurement_device
    from .profile import profile_task

    require_backend(requirements.backend)
    check_max_drop({"scale": task.resolved_metric.scale}, requirements.max_drop)  # before the work
    from .transformer_route import task_vocabulary

    profile = profile_task(task, device=measurement_device(requirements), threads=threads)
    vocabulary = task_vocabulary(task, task.model) if profile.arch_type == "transformer" else None
    return profile, select(profile, requirements, task.model, task.example_input, progress=progress,
                           vocabulary=vocabulary)
