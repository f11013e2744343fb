"""What every module of the study package shares: its error class and the name of the study's own record."""

from __future__ import annotations

from ..errors import ConfigError

STUDY_SCHEMA_VERSION = 1
ATTR = "autocompress"  # the study user attribute holding what was measured once


class StudyError(ConfigError):
    """A bad study option: storage URL, study name, a trial that cannot be exported, a mismatched resume."""
