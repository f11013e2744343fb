"""Helpers for Hugging Face models that several parts of autocompress share."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Transformers' warnings and progress bars off for the duration, then as they were.

    Loading a folder reports weights left out on purpose (a pooler), and tracing a model probes every attribute,
    which makes a ``PreTrainedModel`` warn that its config's ``loss_type=None`` falls back to a causal-LM loss:
    neither is news to the user of a one-line-per-step run. Nothing is imported when transformers is not.
    """
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
