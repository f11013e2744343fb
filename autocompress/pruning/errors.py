"""The pruning error and warning, shared by every module of the package."""

from __future__ import annotations

from ..errors import AutocompressError


class PruningError(AutocompressError):
    """A pruning request that cannot be carried out: bad config, nothing prunable, unreachable target."""


class PruningWarning(UserWarning):
    """Something was left unpruned or could not be expressed; the pruned model is still valid."""
