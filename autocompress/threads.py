"""CPU threads chosen deliberately: workers on one machine share its cores instead of fighting over them.

Training and measuring in torch use one intra-op thread per core by default, and torch's OpenMP threads spin
while they wait for each other. Beside another busy process on a 2-core machine that slowed a digits trial
from 1.5 s to 17.7 s: a spinning thread holds a core the neighbour needs, and waits on a thread the neighbour
has displaced. So, before every trial:

- ``--threads N`` (or ``OMP_NUM_THREADS``) is honoured as given;
- otherwise a worker takes at most ``cores // workers`` threads, where ``workers`` counts the live workers of
  the same study on this machine (each registers a file in the study's artifact folder while it runs), and no
  more threads than cores are idle at that moment (``/proc/stat`` over a fifth of a second), so a busy
  neighbour, ours or anyone's, gets its cores and our threads never wait on one another.

Measured on 2 cores (digits trials, ``studies/results/workers_compare.md``): beside a busy torch process a
trial took 14.6 s with two spinning threads, 6.1 s with two threads and ``OMP_WAIT_POLICY=PASSIVE`` and 3.3 s
with one thread; on a quiet machine two threads took 2.2–2.9 s and PASSIVE 4.2 s. Hence one thread per idle
core, and the default wait policy.
"""

from __future__ import annotations

import os
import socket
import time
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


IDLE_SAMPLE_SECONDS = 0.2


def idle_cores(interval: float = IDLE_SAMPLE_SECONDS) -> float | None:
    """How many cores sat idle over the last ``interval`` seconds (``/proc/stat``); None where unreadable."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields[:8])

    first = sample()
    time.sleep(interval)
    second = sample()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])


def threads_for(workers: int = 1, requested: int | None = None, idle: float | None = None) -> int:
    """Intra-op threads for one of ``workers`` processes on this machine: ``requested`` (``--threads``), else
    ``OMP_NUM_THREADS``, else an equal share of the cores, and no more than the ``idle`` cores (at least 1)."""
    if requested:
        return max(1, int(requested))
    share = max(1, available_cores() // max(1, workers))
    if idle is not None:
        share = min(share, max(1, round(idle)))
    return env_threads() or share


def trial_threads(workers: WorkerRegistry | None, requested: int | None = None) -> int:
    """The threads for a study trial starting now: :func:`threads_for` this study's live workers on this machine
    and the cores idle now (sampled only when neither ``--threads`` nor ``OMP_NUM_THREADS`` decides)."""
    decided = requested or env_threads()
    return threads_for(workers.live() if workers else 1, requested, idle=None if decided else idle_cores())


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
