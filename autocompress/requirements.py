"""What the user wants: objective, allowed metric drop, target reduction, deployment backend and budget."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .config import Config, register_config
from .errors import ConfigError

OBJECTIVES = ("size", "flops", "latency", "energy")
TIMED_OBJECTIVES = ("latency", "energy")  # measured by running the model: its kernels' speed matters
BACKENDS = ("cpu", "gpu", "onnxruntime")
# The quantization engine backend each deployment backend uses (autocompress.quantization): torch.ao's x86
# kernels on cpu, none on gpu, ONNX Runtime's tools (and its CPU session for every measurement) on onnxruntime.
QUANTIZATION_BACKEND = {"cpu": "x86", "gpu": "gpu", "onnxruntime": "onnxruntime"}
BUDGETS = ("low", "high")
# Energy is measured with RAPL or estimated for CPU inference only; on CUDA every trial's cost would be NaN.
ENERGY_ON_GPU = ("--objective energy with --backend gpu", "energy is measured for the cpu backend only",
                 "use --backend cpu, or another objective (size, flops, latency) on gpu")


def check_objectives(requirements: Requirements, objectives: list[str] | tuple[str, ...]) -> None:
    """Refuse cost objectives the backend cannot measure (energy on gpu), before any work."""
    if requirements.backend == "gpu" and "energy" in objectives:
        raise ConfigError(ENERGY_ON_GPU[0].replace("--objective", "objective"), *ENERGY_ON_GPU[1:])


def parse_target(value: str | float | int) -> float:
    """An X-fold reduction from ``10``, ``"10"``, ``"10x"`` or a percentage reduction ``"90%"`` (= 10×)."""
    text = str(value).strip().lower()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent < 100:
                raise ValueError
            fold = 100.0 / (100.0 - percent)
        else:
            fold = float(re.sub(r"\s*[x×]$", "", text))
    except ValueError:
        raise ConfigError(f"target {value!r}", "an X-fold reduction ≥ 1 such as 10, 10x, or a percentage "
                          "reduction below 100% such as 90%", "pass e.g. --target 10") from None
    if not math.isfinite(fold) or fold < 1:
        raise ConfigError(f"target {value!r} ({fold:g}×)", "an X-fold reduction of at least 1×",
                          "pass e.g. --target 2 for half the cost")
    return fold


@register_config("requirements")
@dataclass(frozen=True)
class Requirements(Config):
    """The user's requirements.

    ``max_drop`` is the largest metric drop allowed: in percentage points for a fraction metric (accuracy, F1:
    1.0 = one point = 0.01), in the metric's own units for a raw one (see :mod:`autocompress.metrics`). A
    drop of 100 points or more is refused where the metric's scale is known (:func:`metrics.check_max_drop`).
    """

    objective: str = "size"
    max_drop: float = 1.0
    target: float = 2.0
    backend: str = "cpu"
    budget: str = "high"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r}", f"one of {', '.join(OBJECTIVES)}",
                              "pass e.g. --objective size")
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or \
                not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"max drop {self.max_drop!r}", "a finite drop ≥ 0: metric points for accuracy or F1 "
                              "(1 = one point), the metric's own units for a raw metric", "pass e.g. --max-drop 1")
        object.__setattr__(self, "target", parse_target(self.target))
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r}", f"one of {', '.join(BACKENDS)}",
                              "pass --backend cpu, --backend onnxruntime or --backend gpu")
        if self.backend == "gpu" and self.objective == "energy":
            raise ConfigError(ENERGY_ON_GPU[0], *ENERGY_ON_GPU[1:])
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget {self.budget!r}", f"one of {', '.join(BUDGETS)}",
                              "pass --budget low or --budget high")


def quantization_backend(backend: str) -> str:
    """The quantization config's backend for a deployment ``backend`` (:data:`QUANTIZATION_BACKEND`)."""
    return QUANTIZATION_BACKEND[backend]


def with_objectives(requirements: Requirements, objectives: list[str] | tuple[str, ...]) -> Requirements:
    """The requirements of a study that minimises ``objectives``: the primary objective (the one the target
    and the seed plan aim at) is ``requirements.objective`` when it is among them, else the first one."""
    check_objectives(requirements, objectives)
    if objectives and requirements.objective not in objectives:
        return requirements.replace(objective=objectives[0])
    return requirements
