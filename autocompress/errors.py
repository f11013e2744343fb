"""The error hierarchy.

Every error a user can cause is an :class:`AutocompressError`. Its message is one line in the form
``<what was received>; <what was expected>; <how to fix>`` so that the CLI can print it as
``error: ...`` without a traceback.
"""

from __future__ import annotations


class AutocompressError(Exception):
    """Base class of all errors that autocompress raises for bad input or unmet requirements."""

    exit_code = 2

    def __init__(self, received: str, expected: str | None = None, fix: str | None = None) -> None:
        parts = [received] + [p for p in (expected, fix) if p]
        super().__init__("; ".join(" ".join(p.split()) for p in parts))


class TaskError(AutocompressError):
    """A task could not be found, imported or built."""


class TaskValidationError(TaskError):
    """A task was built but breaks the Task contract (model, data, metric or example input)."""


class MetricError(TaskValidationError):
    """An unknown metric name or a metric that does not return a number."""


class ConfigError(AutocompressError):
    """A bad option value: objective, threshold, target, device and the like."""


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have."""


class DistillationError(AutocompressError):
    """Distillation or fine-tuning cannot run: no teacher for a teacher technique, nothing to train, bad cache."""


class QuantizationError(ConfigError):
    """A quantization mode, backend or input that cannot be applied to the model."""


class ExportError(AutocompressError):
    """A model cannot be written in the requested format, or a written file fails its reload check."""


def describe_error(exc: BaseException, limit: int = 400) -> str:
    """``exc`` as one short line for a user message: an autocompress error's own text (it is already a
    sentence), anything else as ``Type: first line``, cut to ``limit`` characters."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, AutocompressError):
        return " ".join(str(exc).split())[:limit]
    return f"{type(exc).__name__}: {' '.join(lines[0].split())[:limit]}" if lines else type(exc).__name__
