"""Knowledge distillation and plain fine-tuning: train a (pruned, fake-quantized, ...) student back up.

One config record per technique, each with its loss registered under the config type (no dispatch on names):

- :class:`FineTune` (``distillation.finetune``): cross-entropy on the labels, no teacher. The thesis's hard-target
  distillation is exactly this, so ``hard`` names it too (``HardDistillation`` is an alias, and stored
  ``distillation.hard`` records load as it).
- :class:`SoftDistillation` (``distillation.soft``): ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``.
- :class:`CombinedDistillation` (``distillation.combined``): ``α·hard + (1−α)·soft``.

:class:`DistillationConfig` (``distillation``) is the action: technique, stop mode (``threshold`` or
``epochs``), epochs, patience, optimizer, learning rate, seed. :func:`distill` runs it and returns a frozen
:class:`DistillResult`.

Who is modified: nobody the caller holds. The student is deep-copied and the copy is trained; the teacher runs
in eval mode under ``no_grad`` (and is copied first if it must move to another device), so neither the user's
model nor the teacher changes. Any ``nn.Module`` student trains, including one prepared for quantization-aware
training (its fake-quant observers are paused while it is evaluated, so that measuring does not move its scales).

Teacher outputs are computed once per call (or passed in with ``teacher_outputs=``, so that a study can share
them across trials) when the training inputs are not augmented: the training set is read once in a fixed order
to get one teacher output per sample index; every epoch then shuffles the indices and gathers the inputs and
the cached outputs by the same indices, so the pairing is exact.

Modules: :mod:`.techniques` (the technique configs, :class:`DistillationConfig` and the losses),
:mod:`.teacher` (teacher outputs and their cache), :mod:`.train` (:func:`distill` and its result).
"""

from .teacher import TEACHER_CACHE_MAX_BYTES, TeacherCacheRefused, compute_teacher_outputs, has_random_transform
from .techniques import (LOSSES, STOP_MODES, CombinedDistillation, DistillationConfig, DistillationTechnique,
                         FineTune, HardDistillation, SoftDistillation, distillation_loss, soft_loss, technique_from_name,
                         technique_names)
from .train import EVAL_BATCH_FACTOR, DistillResult, EpochCallback, distill

__all__ = ["CombinedDistillation", "DistillResult", "DistillationConfig", "DistillationTechnique", "EVAL_BATCH_FACTOR",
           "EpochCallback", "FineTune", "HardDistillation", "LOSSES", "STOP_MODES", "SoftDistillation",
           "TEACHER_CACHE_MAX_BYTES", "TeacherCacheRefused", "compute_teacher_outputs", "distill", "distillation_loss",
           "has_random_transform", "soft_loss", "technique_from_name", "technique_names"]
