"""The search space and its one-to-one mapping onto plans.

:func:`plan_from_trial` turns a trial's parameters into a :class:`~autocompress.plan.Plan`, and
:func:`trial_params_from_plan` goes back, so the selector's plan is enqueued as trial 0 (and a couple of
:func:`neighbours` after it). Conditional parameters (alpha, temperature, round_to) are suggested only when they
apply; choices depend on the model (no ``bn_scale`` without BatchNorm, only strategies whose layer categories
exist) and on the backend (gpu: no quantization; transformers: none or dynamic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._common import StudyError

# Hard distillation trains on the labels alone, exactly like fine-tuning: one of the two is enough to search.
DISTILLATION_TECHNIQUES = ("finetune", "soft", "combined")
# What studies made before that change searched over; they resume with it (Optuna refuses changed choices).
LEGACY_DISTILLATION_TECHNIQUES = ("finetune", "hard", "soft", "combined")
RATIO_RANGE = (0.0, 0.95)
STEPS_RANGE = (1, 3)
LR_RANGE = (1e-4, 3e-3)
TRANSFORMER_LR_RANGE = (1e-5, 3e-4)  # fine-tuning a pretrained transformer: above ~3e-4 it forgets what it knew
ALPHA_RANGE = (0.1, 0.9)
TEMPERATURE_RANGE = (1.0, 8.0)
ROUND_TO_CHOICES = (0, 16)  # 0: free widths
# The dial the seeded trials use: halfway from uniform widths to fully sensitivity-weighted ones.
EDGE_WEIGHT = 0.5
SENSITIVITY_WEIGHT_STEP = 0.25  # the dial from uniform widths (0) to fully sensitivity-weighted ones (1)
COMPUTE_OBJECTIVES = ("flops", "latency", "energy")  # the costs that MACs stand for
# The kept fraction (1 - ratio) is searched on a log scale around the seed's: from a third of it to three times
# it, and always over the hand recipe's region (50% to 90% of every layer's channels pruned).
KEEP_SPREAD = 3.0
KEEP_COVERS = (0.1, 0.5)
HEAD_RATIO_RANGE = (0.0, 0.75)  # heads_mlp: the share of heads removed (never all: the pruner keeps one)
# How a transformer's embeddings are stored: float, per-row int8, trimmed to the training ids, or both.
EMBEDDING_CHOICES = ("float", "int8", "trim", "trim+int8")


@dataclass(frozen=True)
class SearchSpace:
    """What the trials may choose for one model, backend and budget. Everything else in a plan is fixed."""

    techniques: tuple[str, ...]
    strategies: tuple[str, ...]
    quantization: tuple[str, ...]
    max_epochs: int
    backend: str  # the quantization config's backend: x86, gpu or onnxruntime
    patience: int | None = 3
    stop: str = "epochs"
    distillation: tuple[str, ...] = DISTILLATION_TECHNIQUES
    embeddings: tuple[str, ...] = ()  # searched embedding storage (EMBEDDING_CHOICES); empty: float, not searched
    lr_range: tuple[float, float] = LR_RANGE
    stops: tuple[str, ...] = ()  # searched stop modes (``distillation.stop``); empty: always ``stop``
    # The searched kept fraction ``pruning.keep`` (log scale, see keep_range_around); None: ``pruning.ratio``
    # uniform over RATIO_RANGE, as studies made before searched it.
    keep_range: tuple[float, float] | None = None
    # The per-layer sensitivity scan (``autocompress.pruning.Sensitivity.to_dict()``) that the ``uniform``
    # strategy's dial ``pruning.sensitivity_weight`` weighs widths by; None: no dial.
    sensitivity: dict[str, Any] | None = None
    # What the dial's mean ratio is weighted by: ``flops`` (MACs) when the study's first objective is compute
    # (MACs, latency, energy), so that a weighted trial removes about as many MACs as uniform widths do;
    # ``params`` for size.
    width_cost: str = "params"
    # Why choices were left out of this space (for the study's reasons); not part of what the trials search.
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def for_model(cls, profile: Any, requirements: Any, vocabulary: bool = False, seed_ratio: float | None = None,
                  sensitivity: dict[str, Any] | None = None, objectives: tuple[str, ...] = (),
                  seed_mode: str | None = None, unreachable: tuple[str, ...] = ()) -> SearchSpace:
        """The space for this model; ``vocabulary``: the task's token ids allow trimming the vocabulary;
        ``seed_ratio``: the seed plan's pruning ratio, which the kept fraction is searched around;
        ``sensitivity``: the per-layer scan the ``uniform`` strategy's dial uses; ``objectives``: the study's
        costs, for which quantization modes that cannot help are not proposed (:func:`proposable_quantization`),
        except ``seed_mode``, the seed plan's, which the study runs first; ``unreachable``: strategies that find
        no layer to prune in this model (see :func:`unreachable_strategies`), left out with a note."""
        from ..pruning import STRATEGIES, TECHNIQUES
        from ..requirements import quantization_backend
        from ..selection import BUDGET_EPOCHS, layer_category

        has_bn = any(layer.type.startswith("BatchNorm") for layer in profile.layers)
        notes: tuple[str, ...] = ()
        techniques = tuple(t for t in TECHNIQUES if t != "bn_scale" or has_bn)
        categories = {layer_category(layer.type) for layer in profile.layers}
        strategies = tuple(s for s in STRATEGIES if s == "global" or s in categories
                           or (s == "heads_mlp" and "attention" in categories)
                           # the hand recipe's pruning, for CNNs and MLPs (a transformer's widths are tied to its
                           # heads and hidden size: it has heads_mlp and attention)
                           or (s == "uniform" and profile.arch_type != "transformer"
                               and bool(categories & {"conv", "linear"})))
        notes += tuple(f"pruning strategy {s} left out: it finds no prunable layer in this model (its only "
                       "such layers feed the output)" for s in strategies if s in unreachable)
        strategies = tuple(s for s in strategies if s not in unreachable)
        if requirements.backend == "gpu":
            quantization: tuple[str, ...] = ("none",)
        elif requirements.backend == "onnxruntime" and profile.arch_type == "transformer":
            quantization = ("none", "dynamic", "static")  # ONNX Runtime's static QDQ takes attention models
        elif profile.arch_type == "transformer":
            quantization = ("none", "dynamic")  # static and QAT cannot trace attention fed dicts of tensors
        else:
            quantization = ("none", "dynamic", "static", "qat")
            if objectives:
                proposed, left_out = proposable_quantization(profile, quantization, objectives)
                notes += tuple(n for n in left_out if n.split()[1] != seed_mode)
                quantization = tuple(m for m in quantization if m in proposed or m == seed_mode)
        from ..transformer_route import applies

        route = applies(profile, requirements)  # transformers on CPU: embeddings searched, threshold stopping
        embeddings = EMBEDDING_CHOICES if route and vocabulary else ("float", "int8") if route else ()
        return cls(techniques=techniques, strategies=strategies, quantization=quantization,
                   max_epochs=BUDGET_EPOCHS[requirements.budget],
                   backend=quantization_backend(requirements.backend),
                   stop="threshold" if route else "epochs", embeddings=embeddings,
                   lr_range=TRANSFORMER_LR_RANGE if route else LR_RANGE,
                   # A pretrained encoder stops at the threshold to save epochs; trained to the end (with early
                   # stopping) it can also end better than the original, which only the search can weigh.
                   stops=("threshold", "epochs") if route else (),
                   keep_range=None if seed_ratio is None else keep_range_around(seed_ratio),
                   sensitivity=sensitivity if "uniform" in strategies else None, notes=notes,
                   width_cost="flops" if objectives and objectives[0] in COMPUTE_OBJECTIVES else "params")

    def to_dict(self) -> dict[str, Any]:
        return {"techniques": list(self.techniques), "strategies": list(self.strategies),
                "quantization": list(self.quantization), "max_epochs": self.max_epochs, "backend": self.backend,
                "patience": self.patience, "stop": self.stop, "distillation": list(self.distillation),
                "embeddings": list(self.embeddings), "lr_range": list(self.lr_range), "stops": list(self.stops),
                "keep_range": None if self.keep_range is None else list(self.keep_range),
                "sensitivity": self.sensitivity, "width_cost": self.width_cost}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(techniques=tuple(data["techniques"]), strategies=tuple(data["strategies"]),
                   quantization=tuple(data["quantization"]), max_epochs=int(data["max_epochs"]),
                   backend=data["backend"], patience=data.get("patience", 3), stop=data.get("stop", "epochs"),
                   distillation=tuple(data.get("distillation", LEGACY_DISTILLATION_TECHNIQUES)),
                   embeddings=tuple(data.get("embeddings", ())),
                   lr_range=tuple(data.get("lr_range", LR_RANGE)),  # type: ignore[arg-type]
                   stops=tuple(data.get("stops", ())),
                   keep_range=tuple(data["keep_range"]) if data.get("keep_range") else None,  # type: ignore[arg-type]
                   sensitivity=data.get("sensitivity"), width_cost=data.get("width_cost", "params"))

    def widths(self, ratio: float, weight: float) -> tuple[tuple[str, float], ...]:
        """Per-layer ratios at mean ``ratio`` and dial ``weight`` from the study's sensitivity scan (see
        :func:`autocompress.pruning.layer_ratios`), weighted by :attr:`width_cost`."""
        from ..pruning import Sensitivity, layer_ratios

        if self.sensitivity is None:
            raise ValueError("this search space has no sensitivity scan")
        return layer_ratios(Sensitivity.from_dict(self.sensitivity), ratio, weight, cost=self.width_cost)


def proposable_quantization(profile: Any, modes: tuple[str, ...], objectives: tuple[str, ...]
                            ) -> tuple[tuple[str, ...], list[str]]:
    """The quantization modes worth proposing for ``objectives``, and a reason for each one left out.

    A mode is left out when another mode in ``modes`` is expected to do at least as well for every objective and
    better for one (the selector's :func:`~autocompress.selection.quantization_gain`): dynamic int8 of a CNN
    quantizes only its linear layers, so for size static int8's 4x beats it, and for MACs and latency it gains
    nothing over static. A mode expected to gain nothing on any objective (any int8 mode for MACs alone) is left
    out too. ``none`` is always kept: it is the search's accuracy anchor.
    """
    from ..selection import quantization_gain

    gains = {m: [quantization_gain(profile, o, m) for o in objectives] for m in modes}
    kept, notes = [], []
    for mode in modes:
        if mode != "none" and all(g <= 1.0 for g in gains[mode]):
            notes.append(f"quantization {mode} not proposed: it is expected to gain nothing for "
                         f"{', '.join(objectives)} (int8 does the same MACs), and costs accuracy")
            continue
        better = next((o for o in modes if o != mode and all(a >= b for a, b in zip(gains[o], gains[mode]))
                       and any(a > b for a, b in zip(gains[o], gains[mode]))), None)
        if mode != "none" and better is not None:
            expected = ", ".join(f"{obj} {g:.2g}x vs {b:.2g}x" for obj, g, b in
                                 zip(objectives, gains[mode], gains[better]))
            notes.append(f"quantization {mode} not proposed: {better} is expected to do at least as well on every "
                         f"objective ({expected})")
            continue
        kept.append(mode)
    return tuple(kept), notes


def unreachable_strategies(model: Any, example_input: Any, strategies: tuple[str, ...] = ("conv", "linear")
                           ) -> tuple[str, ...]:
    """The layer-kind strategies among ``strategies`` that find no prunable layer in ``model`` (a ResNet's one
    linear layer is its classifier, whose outputs are the classes): every trial proposing one would fail."""
    from ..pruning import PruningError, prunable_layers

    out = []
    for strategy in strategies:
        try:
            if not prunable_layers(model, example_input, strategy):
                out.append(strategy)
        except PruningError:  # the model cannot be traced: the trials will say why
            pass
    return tuple(out)


def keep_range_around(seed_ratio: float) -> tuple[float, float]:
    """The searched kept fraction: a third to three times the seed's, widened to cover the hand recipe's region
    (KEEP_COVERS), within what RATIO_RANGE allows."""
    keep = 1.0 - seed_ratio
    low = max(1.0 - RATIO_RANGE[1], min(keep / KEEP_SPREAD, KEEP_COVERS[0]))
    high = min(1.0, max(keep * KEEP_SPREAD, KEEP_COVERS[1]))
    return round(low, 4), round(high, 4)


def _ratio_from_keep(keep: float) -> float:
    return round(min(RATIO_RANGE[1], max(RATIO_RANGE[0], 1.0 - keep)), 4)


def plan_from_trial(trial: Any, space: SearchSpace) -> Any:
    """The plan a trial's parameters describe. Parameters are suggested only where they apply."""
    from ..distillation import DistillationConfig, technique_from_name
    from ..embeddings import EmbeddingConfig
    from ..plan import Plan
    from ..pruning import PruningConfig
    from ..quantization import quantization_config

    mode = trial.suggest_categorical("quantization.mode", list(space.quantization))
    if space.keep_range is not None:
        ratio = _ratio_from_keep(trial.suggest_float("pruning.keep", *space.keep_range, log=True))
    else:
        ratio = trial.suggest_float("pruning.ratio", *RATIO_RANGE)
    technique = trial.suggest_categorical("pruning.technique", list(space.techniques))
    strategy = trial.suggest_categorical("pruning.strategy", list(space.strategies))
    steps = trial.suggest_int("pruning.steps", *STEPS_RANGE)
    head_ratio = None
    if strategy == "heads_mlp":
        head_ratio = trial.suggest_float("pruning.head_ratio", *HEAD_RATIO_RANGE)
    layer_ratios, weight = None, 0.0
    if strategy == "uniform" and space.sensitivity is not None:
        weight = trial.suggest_float("pruning.sensitivity_weight", 0.0, 1.0, step=SENSITIVITY_WEIGHT_STEP)
        if weight > 0 and ratio > 0:
            layer_ratios = space.widths(ratio, weight)
    embeddings = EmbeddingConfig()
    if space.embeddings:
        stored = trial.suggest_categorical("embeddings", list(space.embeddings))
        embeddings = EmbeddingConfig(trim_vocabulary="trim" in stored, int8="int8" in stored)
    round_to = None
    if mode in ("static", "qat"):  # fbgemm's int8 kernels like channel counts in multiples of 16
        round_to = trial.suggest_categorical("pruning.round_to", list(ROUND_TO_CHOICES)) or None
    distil = trial.suggest_categorical("distillation.technique", list(space.distillation))
    options: dict[str, float] = {}
    if distil in ("soft", "combined"):
        options["temperature"] = trial.suggest_float("distillation.temperature", *TEMPERATURE_RANGE, step=0.25)
    if distil == "combined":
        options["alpha"] = trial.suggest_float("distillation.alpha", *ALPHA_RANGE, step=0.05)
    lr = trial.suggest_float("distillation.lr", *space.lr_range, log=True)
    stop = trial.suggest_categorical("distillation.stop", list(space.stops)) if space.stops else space.stop
    return Plan(
        pruning=PruningConfig(technique=technique, strategy=strategy, ratio=ratio, steps=steps, round_to=round_to,
                              head_ratio=head_ratio, layer_ratios=layer_ratios,
                              sensitivity_weight=weight if layer_ratios else 0.0),
        distillation=DistillationConfig(technique=technique_from_name(distil, **options), stop=stop,
                                        max_epochs=space.max_epochs, patience=space.patience, lr=lr),
        quantization=quantization_config(mode, backend=space.backend),
        embeddings=embeddings,
    )


def embedding_choice(config: Any) -> str:
    """The search space's name (one of EMBEDDING_CHOICES) for an EmbeddingConfig."""
    trim, int8 = config.trim_vocabulary, config.int8
    return "trim+int8" if trim and int8 else "trim" if trim else "int8" if int8 else "float"


def _searched_technique(name: str) -> str:
    """The search space's name for a distillation technique: ``hard`` is searched as ``finetune``."""
    return "finetune" if name == "hard" else name


def canonical_plan(plan: Any) -> Any:
    """``plan`` as the trials run it: the same plan with hard distillation written as fine-tuning (they train
    identically), so ``plan_from_trial(FixedTrial(trial_params_from_plan(plan)), space) == canonical_plan(plan)``."""
    from ..distillation import FineTune

    if plan.distillation.technique.name != "hard":
        return plan
    return plan.replace(distillation=plan.distillation.replace(technique=FineTune()))


def trial_params_from_plan(plan: Any, space: SearchSpace | None = None) -> dict[str, Any]:
    """The trial parameters that :func:`plan_from_trial` maps back onto ``plan`` (for ``enqueue_trial``).

    A plan with hard distillation maps onto ``finetune`` (see :func:`canonical_plan`). With ``space``, a plan the
    search space cannot express raises :class:`StudyError`.
    """
    from ..pruning import technique_name

    p, d = plan.pruning, plan.distillation
    params: dict[str, Any] = {"quantization.mode": plan.quantization_mode}
    if space is not None and space.keep_range is not None:
        params["pruning.keep"] = round(1.0 - float(p.ratio), 6)
    else:
        params["pruning.ratio"] = float(p.ratio)
    params.update({"pruning.technique": technique_name(p.technique), "pruning.strategy": p.strategy,
                   "pruning.steps": int(p.steps)})
    if p.strategy == "uniform" and space is not None and space.sensitivity is not None:
        params["pruning.sensitivity_weight"] = float(p.sensitivity_weight if p.layer_ratios else 0.0)
    if p.strategy == "heads_mlp":
        params["pruning.head_ratio"] = float(p.effective_head_ratio)
    if plan.embeddings.enabled or (space is not None and space.embeddings):
        params["embeddings"] = embedding_choice(plan.embeddings)
    if plan.quantization_mode in ("static", "qat"):
        params["pruning.round_to"] = int(p.round_to or 0)
    name = _searched_technique(d.technique.name)
    params["distillation.technique"] = name
    if name in ("soft", "combined"):
        params["distillation.temperature"] = float(d.technique.temperature)
    if name == "combined":
        params["distillation.alpha"] = float(d.technique.alpha)
    params["distillation.lr"] = float(d.lr)
    if space is not None and space.stops:
        params["distillation.stop"] = d.stop
    if space is not None:
        _check_in_space(params, plan, space)
    return params


def _check_in_space(params: dict[str, Any], plan: Any, space: SearchSpace) -> None:
    p, d = plan.pruning, plan.distillation
    problems = []
    if params["quantization.mode"] not in space.quantization:
        problems.append(f"quantization {params['quantization.mode']}")
    if params["pruning.technique"] not in space.techniques:
        problems.append(f"technique {params['pruning.technique']}")
    if params["pruning.strategy"] not in space.strategies:
        problems.append(f"strategy {params['pruning.strategy']}")
    if params["distillation.technique"] not in space.distillation:
        problems.append(f"distillation {params['distillation.technique']}")
    if not RATIO_RANGE[0] <= p.ratio <= RATIO_RANGE[1] or not STEPS_RANGE[0] <= p.steps <= STEPS_RANGE[1]:
        problems.append(f"ratio {p.ratio} / steps {p.steps}")
    if "pruning.keep" in params and space.keep_range is not None and \
            not space.keep_range[0] - 1e-9 <= params["pruning.keep"] <= space.keep_range[1] + 1e-9:
        problems.append(f"kept fraction {params['pruning.keep']:.4f} outside {space.keep_range}")
    if p.layer_ratios and (p.strategy != "uniform" or space.sensitivity is None):
        problems.append("per-layer ratios (only the uniform strategy's sensitivity dial makes them)")
    if not space.lr_range[0] <= d.lr <= space.lr_range[1]:
        problems.append(f"lr {d.lr}")
    if p.round_to not in (None, *[r for r in ROUND_TO_CHOICES if r]):
        problems.append(f"round_to {p.round_to}")
    if d.max_epochs != space.max_epochs or d.stop not in (space.stops or (space.stop,)) or \
            d.patience != space.patience:
        problems.append(f"epochs {d.max_epochs} / stop {d.stop} / patience {d.patience}")
    if "embeddings" in params and params["embeddings"] not in space.embeddings:
        problems.append(f"embeddings {params['embeddings']}")
    if p.strategy == "heads_mlp" and not HEAD_RATIO_RANGE[0] <= p.effective_head_ratio <= HEAD_RATIO_RANGE[1]:
        problems.append(f"head_ratio {p.effective_head_ratio}")
    if problems:
        raise StudyError(f"a plan outside the study's search space ({', '.join(problems)})",
                         "a plan the trials can express", "check the plan against SearchSpace")


def translate_params(params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Enqueued parameters written for the other pruning-amount parameter (``pruning.ratio`` for a space that
    searches ``pruning.keep``, or the reverse), translated; anything else unchanged."""
    out = dict(params)
    if space.keep_range is not None and "pruning.ratio" in out and "pruning.keep" not in out:
        out["pruning.keep"] = round(1.0 - float(out.pop("pruning.ratio")), 6)
    elif space.keep_range is None and "pruning.keep" in out and "pruning.ratio" not in out:
        out["pruning.ratio"] = round(1.0 - float(out.pop("pruning.keep")), 6)
    return out


def hand_recipe(plan: Any, space: SearchSpace, ratio: float, weight: float = 0.0) -> Any:
    """``plan`` made the hand recipe at ``ratio``: the same share of every layer (``weight`` > 0: weighted by the
    study's sensitivity scan), combined distillation, static int8 where the space offers it."""
    from ..distillation import CombinedDistillation
    from ..quantization import quantization_config

    pruning = plan.pruning.replace(strategy="uniform", ratio=ratio, round_to=None, head_ratio=None,
                                   layer_ratios=None, sensitivity_weight=0.0)
    if weight > 0 and space.sensitivity is not None and ratio > 0:
        pruning = pruning.replace(layer_ratios=space.widths(ratio, weight), sensitivity_weight=weight)
    hand = plan.replace(pruning=pruning, distillation=plan.distillation.replace(technique=CombinedDistillation()))
    if "static" in space.quantization:
        hand = hand.replace(quantization=quantization_config("static", backend=space.backend))
    return hand


def edge_design(plan: Any, space: SearchSpace, ratio_range: tuple[float, float], count: int) -> list[Any]:
    """Start-up trials where the estimate puts the edge of what the threshold allows: the hand recipe (uniform)
    at the middle of the estimate's ratio range and at its high end, then the same weighted by the sensitivity
    scan (dial :data:`EDGE_WEIGHT`); ``count`` of them, in that order. The study's best reduction lies at that
    edge; these start the search there."""
    low, high = ratio_range
    if "uniform" not in space.strategies or high <= 0:
        return []
    cap = 1.0 - space.keep_range[0] if space.keep_range is not None else RATIO_RANGE[1]
    ratios = [round(min(cap, r), 4) for r in ((low + high) / 2, high)]
    design = [hand_recipe(plan, space, r, w) for w in (0.0, EDGE_WEIGHT) for r in dict.fromkeys(ratios)]
    return design[:count]


def neighbours(plan: Any, space: SearchSpace | None = None) -> list[Any]:
    """The seed's closest alternatives, most useful first (``--neighbours K`` enqueues the first K).

    The rule plan aims pruning at the target, so the threshold is what usually binds: the first neighbour keeps
    1.4× the channels, the second the same milder pruning recovered by combined distillation from the original
    (T=4, α=0.5), the third prunes harder (0.8× the channels kept), the fourth keeps 2× the channels. A seed
    that stops at the threshold (transformers) is first tried trained to the end, and a seed that trims the
    vocabulary also without trimming.
    Steps are in the kept fraction (1 − ratio), where they mean the same at 50% and at 90% pruning.

    With a ``space`` that searches the ``uniform`` strategy, the second neighbour (after the milder one) is the
    hand recipe at the seed's ratio (the same share of every layer, combined distillation, static int8 where the
    space quantizes), and a later one the same widths weighted by the sensitivity scan (dial 0.5): the search
    starts on the hand recipe's ground.
    """
    from ..distillation import CombinedDistillation

    r = plan.pruning.ratio
    keep = 1.0 - r

    def with_keep(factor: float) -> Any | None:
        ratio = round(min(RATIO_RANGE[1], max(RATIO_RANGE[0], 1.0 - keep * factor)), 4)
        return plan.replace(pruning=plan.pruning.replace(ratio=ratio)) if abs(ratio - r) > 1e-3 else None

    milder = with_keep(1.4)
    distilled = None
    if milder is not None and plan.distillation.technique.KIND != CombinedDistillation.KIND:
        distilled = milder.replace(distillation=milder.distillation.replace(technique=CombinedDistillation()))
    trained = None
    if plan.distillation.stop == "threshold":  # the same plan trained to the end: it may beat the original
        trained = plan.replace(distillation=plan.distillation.replace(stop="epochs"))
    untrimmed = None
    if plan.embeddings.trim_vocabulary:  # trimming costs the ids the training data never shows: try without it
        untrimmed = plan.replace(embeddings=plan.embeddings.replace(trim_vocabulary=False))
    hand = weighted = None
    if space is not None and "uniform" in space.strategies and plan.pruning.strategy != "uniform" and r > 0:
        hand = plan.replace(pruning=plan.pruning.replace(strategy="uniform", round_to=None, head_ratio=None),
                            distillation=plan.distillation.replace(technique=CombinedDistillation()))
        if "static" in space.quantization:
            from ..quantization import quantization_config

            hand = hand.replace(quantization=quantization_config("static", backend=space.backend))
        if space.sensitivity is not None:
            weighted = hand.replace(pruning=hand.pruning.replace(layer_ratios=space.widths(r, EDGE_WEIGHT),
                                                                 sensitivity_weight=EDGE_WEIGHT))
    candidates = [trained, milder, hand, untrimmed, distilled, weighted, with_keep(0.8), with_keep(2.0)]
    out: list[Any] = []
    for candidate in candidates:
        if candidate is not None and candidate not in out and candidate != plan:
            out.append(candidate)
    return out
