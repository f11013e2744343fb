"""autocompress: automated compression for trained PyTorch models.

The public API: :class:`Task` (what a user brings), :func:`load_task`, :func:`profile_task` and
:class:`Profile`, :func:`export_model` and :func:`load` (exported models), and the :class:`AutocompressError`
hierarchy.

The names are imported on first use (PEP 562): ``import autocompress`` (and ``autocompress --help``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import AutocompressError, ConfigError, DeviceError, MetricError, TaskError, TaskValidationError

__version__ = "0.1.0"

_LAZY = {"export_model": "export", "load": "export", "Profile": "profile", "profile_model": "profile",
         "profile_task": "profile", "Task": "task", "load_task": "task", "validate_task": "task"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")


__all__ = [
    "AutocompressError", "ConfigError", "DeviceError", "MetricError", "Profile", "Task", "TaskError",
    "TaskValidationError", "__version__", "export_model", "load", "load_task", "profile_model", "profile_task",
    "validate_task",
]
