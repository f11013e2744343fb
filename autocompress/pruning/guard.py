"""Time and memory limits around building the dependency graph, so a model it cannot handle fails in one line.

Torch-Pruning's graph walk can grow without bound on some architectures (indices mapped through every reshape
of a window attention). Building the graph runs inside :func:`guarded`: a timer checks the elapsed time and the
process's resident memory every quarter second and raises :class:`GraphTooCostly`, a :class:`PruningError`
naming the model and the limit, instead of hanging or being killed for memory. The limits default to
:data:`DEFAULT_SECONDS` and :data:`DEFAULT_MEMORY_MB` more than the process held when the build began (at most
half the memory the system has free); ``AUTOCOMPRESS_GRAPH_SECONDS`` / ``AUTOCOMPRESS_GRAPH_MEMORY_MB`` or
:func:`graph_limits` change them. The timer is a POSIX interval timer, so the guard acts in the main thread
(elsewhere the graph is built unguarded).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import PruningError

DEFAULT_SECONDS = 120.0
DEFAULT_MEMORY_MB = 4096.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class GraphTooCostly(PruningError):
    """Building the dependency graph went over its time or memory limit."""


@dataclass(frozen=True)
class GraphLimits:
    seconds: float
    memory_mb: float  # growth of resident memory while the graph is built


_override: list[GraphLimits] = []


def limits() -> GraphLimits:
    """The limits in force: the innermost :func:`graph_limits`, else the environment, else the defaults."""
    if _override:
        return _override[-1]
    seconds = float(os.environ.get("AUTOCOMPRESS_GRAPH_SECONDS", DEFAULT_SECONDS))
    memory = os.environ.get("AUTOCOMPRESS_GRAPH_MEMORY_MB")
    if memory is None:
        free = _available_mb()
        memory_mb = min(DEFAULT_MEMORY_MB, free / 2) if free else DEFAULT_MEMORY_MB
    else:
        memory_mb = float(memory)
    return GraphLimits(seconds, memory_mb)


@contextmanager
def graph_limits(seconds: float | None = None, memory_mb: float | None = None) -> Iterator[GraphLimits]:
    """Use these limits for graph builds inside the ``with`` block (None keeps the current one)."""
    current = limits()
    chosen = GraphLimits(current.seconds if seconds is None else seconds,
                         current.memory_mb if memory_mb is None else memory_mb)
    _override.append(chosen)
    try:
        yield chosen
    finally:
        _override.pop()


def rss_mb() -> float | None:
    """This process's resident memory in MiB (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Run the block under the graph limits; :class:`GraphTooCostly` names ``what`` and the limit passed."""
    bounds = limits()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    start, base = time.monotonic(), rss_mb() or 0.0

    def check(signum: int, frame: object) -> None:
        elapsed, grown = time.monotonic() - start, (rss_mb() or 0.0) - base
        if elapsed > bounds.seconds:
            raise GraphTooCostly(
                f"building the dependency graph of {what} took over {bounds.seconds:.0f} s",
                "a graph Torch-Pruning can walk in time",
                "raise AUTOCOMPRESS_GRAPH_SECONDS, or report this model (its layers' coupling is too costly "
                "to trace)")
        if grown > bounds.memory_mb:
            raise GraphTooCostly(
                f"building the dependency graph of {what} took over {bounds.memory_mb:.0f} MB more memory",
                "a graph Torch-Pruning can walk in memory",
                "raise AUTOCOMPRESS_GRAPH_MEMORY_MB, use a smaller example input, or report this model")

    previous = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.25)  # a first look at once, then four times a second
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
