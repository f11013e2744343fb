"""Distillation techniques: one frozen config per technique with its loss registered under the config type,
and :class:`DistillationConfig`, the action a plan holds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, HandlerRegistry, config_from_name, family_names, register_alias, register_config
from ..errors import ConfigError, DistillationError

STOP_MODES = ("threshold", "epochs")



@dataclass(frozen=True)
class LossBatch:
    """What a loss handler scores: one batch's student and teacher logits, its targets and the task's loss."""

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    targets: Any
    loss_fn: Callable[..., torch.Tensor] = F.cross_entropy


LossFn = Callable[[Any, LossBatch], torch.Tensor]


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DistillationTechnique(Config):
    """Base of the technique configs. ``uses_teacher``: whether its loss needs the teacher's outputs."""

    uses_teacher: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.KIND.rpartition(".")[2]


def _check_temperature(kind: str, temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"{kind} temperature {temperature!r}", "a finite number > 0 (typically 1 to 10)",
                          "set temperature to e.g. 4.0")


@register_config("distillation.finetune")
@dataclass(frozen=True)
class FineTune(DistillationTechnique):
    """Training on the ground-truth labels with ``task.loss_fn`` (cross-entropy by default); no teacher output.

    This is also the thesis's hard-target distillation, which is why ``"hard"`` names this technique too.
    """


# The thesis's "hard distillation" is cross-entropy on the ground-truth labels: exactly fine-tuning. One
# technique, not two (a duplicate doubles a sampler's work for nothing); "hard" records and names load as it.
HardDistillation = FineTune
register_alias("distillation.hard", FineTune.KIND)


@register_config("distillation.soft")
@dataclass(frozen=True)
class SoftDistillation(DistillationTechnique):
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, batch-mean."""

    uses_teacher: ClassVar[bool] = True
    temperature: float = 4.0

    def __post_init__(self) -> None:
        _check_temperature(self.KIND, self.temperature)


@register_config("distillation.combined")
@dataclass(frozen=True)
class CombinedDistillation(DistillationTechnique):
    """``alpha · hard + (1 − alpha) · soft``."""

    uses_teacher: ClassVar[bool] = True
    temperature: float = 4.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        _check_temperature(self.KIND, self.temperature)
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"{self.KIND} alpha {self.alpha!r}", "a number in [0, 1] (the weight of the hard loss)",
                              "set alpha to e.g. 0.5")


def technique_names() -> list[str]:
    """Short names of the registered techniques (``combined``, ``finetune``, ``soft``, ...)."""
    return family_names("distillation")


def technique_from_name(name: str, **params: Any) -> DistillationTechnique:
    """A technique config from its short name and parameters, e.g. ``technique_from_name("soft", temperature=2)``
    (``"hard"`` gives :class:`FineTune`). See :func:`autocompress.config.config_from_name`."""
    config = config_from_name("distillation", name, **params)
    assert isinstance(config, DistillationTechnique)
    return config


@register_config("distillation")
@dataclass(frozen=True)
class DistillationConfig(Config):
    """One distillation (or fine-tuning) run.

    - ``technique``: a :class:`DistillationTechnique` config (its own parameters live there).
    - ``stop``: ``"threshold"`` trains until the eval metric reaches ``target_metric`` (and returns that
      model); ``"epochs"`` trains ``max_epochs`` epochs. Both stop early after ``patience`` epochs without
      improvement (``None`` disables it) and at ``max_epochs`` at the latest (0: no training at all).
    - ``target_metric``: the absolute metric value to reach (in ``epochs`` mode it is only reported, as
      ``DistillResult.target_epoch``). A ``threshold`` plan may leave it None: the pipeline then derives it
      from the requirements (halfway into the allowed drop); :func:`distill` itself needs it.
    - ``optimizer``: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9); ``lr`` and ``weight_decay`` apply to it.
    - ``batch_size``: training batch size (``None``: the task's).
    - ``cache_teacher``: compute teacher outputs once (``True``), on every batch (``False``, needed for
      augmented inputs), or decide automatically (``None``: cache when the training set is a map-style Dataset
      with no random transform).
    - ``seed``: the shuffling order and every random draw in training (dropout) follow it.
    """

    technique: DistillationTechnique = FineTune()
    stop: str = "epochs"
    max_epochs: int = 10
    patience: int | None = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int | None = None
    target_metric: float | None = None
    cache_teacher: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.technique, DistillationTechnique):
            raise ConfigError(f"distillation technique {self.technique!r}",
                              f"a technique config ({', '.join(technique_names())})",
                              "pass e.g. technique=SoftDistillation(temperature=4.0)")
        if self.stop not in STOP_MODES:
            raise ConfigError(f"stop mode {self.stop!r}", f"one of {', '.join(STOP_MODES)}",
                              "use stop='threshold' with target_metric, or stop='epochs'")
        # 0 epochs is a plan without retraining (a baseline the study may try); distill() then returns the
        # student as it is, measured.
        if not (isinstance(self.max_epochs, int) and not isinstance(self.max_epochs, bool) and self.max_epochs >= 0):
            raise ConfigError(f"max_epochs {self.max_epochs!r}", "an integer ≥ 0 (0 = no retraining)",
                              "set max_epochs to e.g. 10")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience >= 1):
            raise ConfigError(f"patience {self.patience!r}", "an integer ≥ 1, or None to disable early stopping",
                              "set patience to e.g. 3")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"learning rate {self.lr!r}", "a finite number ≥ 0", "set lr to e.g. 1e-3")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay {self.weight_decay!r}", "a number ≥ 0", "set weight_decay to 0")
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r}", f"one of {', '.join(sorted(_OPTIMIZERS))}",
                              "set optimizer to 'adam'")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch_size {self.batch_size!r}", "an integer ≥ 1, or None for the task's",
                              "set batch_size to e.g. 64")


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float, float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
}


# --------------------------------------------------------------------------------------------- losses
LOSSES: HandlerRegistry[LossFn] = HandlerRegistry("distillation loss")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` with batch-mean reduction.

    Computed from log-softmaxes (``log_target=True``) for numerical stability. The T² factor keeps the
    gradient scale of the soft term independent of T (Hinton et al., 2015). Logits with more than two
    dimensions (per-token outputs) are flattened to rows of classes, so the mean is over positions.
    """
    t = float(temperature)
    classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, classes).float()
    q = teacher_logits.reshape(-1, classes).to(s)
    return F.kl_div(F.log_softmax(s / t, dim=-1), F.log_softmax(q / t, dim=-1), log_target=True,
                    reduction="batchmean") * (t * t)


@LOSSES.register(FineTune)
def _hard_loss(config: DistillationTechnique, batch: LossBatch) -> torch.Tensor:
    return batch.loss_fn(batch.student_logits, batch.targets)


@LOSSES.register(SoftDistillation)
def _soft_loss(config: SoftDistillation, batch: LossBatch) -> torch.Tensor:
    return soft_loss(batch.student_logits, batch.teacher_logits, config.temperature)


@LOSSES.register(CombinedDistillation)
def _combined_loss(config: CombinedDistillation, batch: LossBatch) -> torch.Tensor:
    hard = batch.loss_fn(batch.student_logits, batch.targets)
    soft = soft_loss(batch.student_logits, batch.teacher_logits, config.temperature)
    return config.alpha * hard + (1.0 - config.alpha) * soft


def distillation_loss(technique: DistillationTechnique, student_logits: torch.Tensor, targets: Any,
                      teacher_logits: torch.Tensor | None = None,
                      loss_fn: Callable[..., torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """The loss of ``technique`` on one batch (the handler registered for its config type)."""
    if technique.uses_teacher and teacher_logits is None:
        raise DistillationError(f"technique {technique.KIND!r} without teacher outputs",
                                "teacher logits for a technique that distils from a teacher",
                                "pass teacher_logits, or use FineTune")
    return LOSSES.apply(technique, LossBatch(student_logits, teacher_logits, targets, loss_fn))


