"""Progress bars for long work (training, pruning steps, calibration), drawn with rich on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        if self._progress is not None:
            kwargs = {"description": description} if description else {}
            self._progress.update(self._task_id, advance=steps, **kwargs)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[_Bar]:
    """A progress bar on stderr, shown only when stderr is a terminal and ``enabled`` is set."""
    if not enabled or not sys.stderr.isatty():
        yield _Bar(None, None)
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=_console, transient=True,
    ) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
