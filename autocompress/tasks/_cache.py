"""The built-in tasks' trained-model cache: a state dict loaded with ``weights_only=True``, or trained and saved
atomically; a file that is corrupt or holds another architecture is rebuilt, with a one-line reason logged."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from .._io import atomic_write
from ..errors import describe_error

log = logging.getLogger("autocompress.tasks")
M = TypeVar("M", bound=nn.Module)

# What an unusable cache file raises: torch.load on an empty file (EOFError) or garbage (UnpicklingError, OSError),
# load_state_dict on another architecture (RuntimeError) or on something that is no state dict (TypeError).
UNUSABLE = (RuntimeError, OSError, EOFError, TypeError, ValueError, pickle.UnpicklingError)


def load_state(path: Path, model: M) -> M:
    """``model`` with the state dict cached at ``path`` (never unpickles code); raises what an unusable file does."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"the file holds a {type(state).__name__}, not a state dict")
    model.load_state_dict(state)  # strict: another architecture's keys or shapes raise RuntimeError
    return model.eval()


def cached_model(path: Path, empty: Callable[[], M], train: Callable[[], M], what: str) -> M:
    """The model cached at ``path`` (loaded into ``empty()``), else ``train()``'s, whose state dict is cached."""
    if path.is_file():
        try:
            return load_state(path, empty())
        except UNUSABLE as exc:
            log.warning("cached %s %s is unusable (%s); retraining", what, path, describe_error(exc, limit=200))
    model = train()
    atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))
    return model
