"""autocompress: automated compression for trained PyTorch models.

The public API: :class:`Task` (what a user brings), :func:`load_task`, :func:`profile_task` and
:class:`Profile`, :func:`export_model` and :func:`load` (exported models), and the :class:`AutocompressError`
hierarchy.
"""

from .errors import AutocompressError, ConfigError, DeviceError, MetricError, TaskError, TaskValidationError
from .export import export_model, load
from .profile import Profile, profile_model, profile_task
from .task import Task, load_task, validate_task

__version__ = "0.1.0"

__all__ = [
    "AutocompressError", "ConfigError", "DeviceError", "MetricError", "Profile", "Task", "TaskError",
    "TaskValidationError", "__version__", "export_model", "load", "load_task", "profile_model", "profile_task",
    "validate_task",
]
