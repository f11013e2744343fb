"""CPU threads chosen deliberately: workers on one machine share its cores instead of fighting over them.

Training and measuring in torch use one intra-op thread per core by default. Two such processes on a 2-core
machine oversubscribe it, and OpenMP threads that spin while they wait for each other slowed a digits trial
from 1.5 s to 17.7 s. So:

- ``--threads N`` (or ``OMP_NUM_THREADS``) is honoured as given;
- otherwise each study worker takes ``cores // workers`` threads, where ``workers`` counts the live workers of
  the same study on this machine (each registers a file in the study's artifact folder while it runs), and
  re-checks that count before every trial, so a worker that starts or stops shifts the others' share;
- the CLI asks OpenMP for a passive wait policy (``OMP_WAIT_POLICY=PASSIVE``, unless set) before torch loads:
  a waiting thread sleeps instead of spinning on a core another process needs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

WORKERS_FOLDER = ".workers"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive int, or None when unset or not a number."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def threads_for(workers: int = 1, requested: int | None = None) -> int:
    """Intra-op threads for one of ``workers`` processes on this machine: ``requested`` (``--threads``), else
    ``OMP_NUM_THREADS``, else an equal share of the cores (at least 1)."""
    if requested:
        return max(1, int(requested))
    return env_threads() or max(1, available_cores() // max(1, workers))


def use_threads(threads: int) -> int:
    """Set torch's intra-op thread count (for training and measuring alike); returns it."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class WorkerRegistry:
    """The live workers of one study on this machine: a file per worker in ``<artifacts>/.workers/``.

    A worker that was killed leaves its file behind; it no longer counts once its process is gone.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder) / WORKERS_FOLDER
        self.host = socket.gethostname()
        self.entry = self.folder / f"{self.host}-{os.getpid()}"

    def __enter__(self) -> WorkerRegistry:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.entry.touch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.entry.unlink(missing_ok=True)

    def live(self) -> int:
        """How many workers of this study run on this machine now (this one included)."""
        count = 0
        for entry in self.folder.glob(f"{self.host}-*"):
            pid = entry.name.rpartition("-")[2]
            if pid.isdigit() and process_alive(int(pid)):
                count += 1
            elif pid.isdigit():
                entry.unlink(missing_ok=True)  # a worker that died: its share goes back to the others
        return max(1, count)
