"""Where a study lives: storage URLs (SQLite, journal file, database server), opening them with retries, the
trial models' artifact folder and store, and loading an existing study by name."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import describe_error
from ._common import StudyError

DEFAULT_STORAGE = "sqlite:///studies/autocompress.db"
HEARTBEAT_SECONDS = 60
HEARTBEAT_GRACE_SECONDS = 600


def resolve_storage(url: str | None) -> tuple[Any, str]:
    """An Optuna storage for ``url`` and the URL as stored. ``journal:///path`` is a journal file."""
    import optuna

    url = url or DEFAULT_STORAGE
    if not isinstance(url, str) or "://" not in url:
        raise StudyError(f"storage {url!r}", "an Optuna storage URL such as sqlite:///studies/x.db, "
                         "postgresql://user@host/db or journal:///path/to/file.log", "fix --storage")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "journal":
        path = _journal_path(url)
        if not path:
            raise StudyError(f"storage {url!r} without a file path", "journal:///path/to/file.log",
                             "add the journal file path")
        from optuna.storages.journal import JournalFileBackend

        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path)), url
        except (OSError, ValueError) as exc:  # unwritable folder or file; a journal that is not JSON lines
            raise StudyError(f"journal storage {url!r} could not be opened ({describe_error(exc)})",
                             "a writable journal file path", "fix --storage") from exc
    if scheme.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is None:
            raise StudyError(f"storage {url!r}", "sqlite:///relative/path.db or sqlite:////absolute/path.db",
                             "fix --storage")
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudyError(f"storage {url!r}: its folder cannot be made ({describe_error(exc)})",
                                 "a SQLite file in a writable folder", "fix --storage") from exc
    from optuna.exceptions import OptunaError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _open_rdb(url), url
    # SQLAlchemyError: a bad URL, an unknown dialect, an unreachable server; ValueError: a port that is not a
    # number; ImportError: the dialect's driver is missing; RuntimeError: Optuna's table schema is of another
    # version; OptunaError: its other storage errors.
    except (SQLAlchemyError, ValueError, ImportError, RuntimeError, OptunaError) as exc:
        raise StudyError(f"storage {mask_url(url)!r} could not be opened ({describe_error(exc)})",
                         "a reachable Optuna storage URL (sqlite:///..., postgresql://..., journal:///...)",
                         "fix --storage, or start the database server") from exc


def _open_rdb(url: str, attempts: int = 5) -> Any:
    """``RDBStorage(url)``, retried when another worker is creating the same schema at the same moment.

    Two workers starting on a fresh PostgreSQL database both run ``CREATE TYPE``/``CREATE TABLE``; the loser gets
    a unique-key violation. Once the winner has committed, a retry finds the schema in place.
    """
    import random
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                # Optuna marks the heartbeat argument experimental; it is what finds dead workers elsewhere.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Workers on other machines: a trial whose worker stops beating for the grace period is failed
                # by the next worker (SQLite is one machine's file; dead local workers are found by pid).
                server = not url.lower().startswith("sqlite")
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS if server else None,
                                                  grace_period=HEARTBEAT_GRACE_SECONDS if server else None)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))


def storage_file(url: str) -> str | None:
    """The file behind a SQLite or journal storage URL (None for a server URL)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.startswith("sqlite"):
        return _sqlite_path(url)
    if scheme == "journal":
        return _journal_path(url) or None
    return None


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for output and logs (never to open the storage with)."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def _journal_path(url: str) -> str:
    """``journal:///abs/file.log`` (any number of slashes after ``//``) is absolute, ``journal://rel/file.log``
    relative to the working directory."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        rest = rest.lstrip("/")
        return os.path.normpath("/" + rest) if rest else ""
    return os.path.normpath(rest) if rest else ""


def _sqlite_path(url: str) -> str | None:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        return None
    path = rest[1:]
    return path or None


def artifact_dir(url: str, name: str) -> Path:
    """Where a study's trial models go: ``<file>.artifacts/`` beside a SQLite or journal file; else
    ``studies/artifacts/<name>/`` under the working directory (share it between machines, or pass --artifacts)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "journal":
        return Path(_journal_path(url) + ".artifacts").absolute()
    if scheme.startswith("sqlite"):
        path = _sqlite_path(url)
        if path and path != ":memory:":
            return Path(os.path.normpath(os.path.abspath(path)) + ".artifacts")
    from .._io import safe_component

    return Path("studies", "artifacts", safe_component(name)).absolute()


def load_study(name: str, storage: str | None = None) -> Any:
    """An existing study by name (a one-line error when there is none)."""
    import optuna

    backend, url = resolve_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
        raise StudyError(f"no study named {name!r} in {mask_url(url)}",
                         f"one of: {', '.join(known)}" if known else "an existing study",
                         "check --name and --storage, or run `autocompress study` first") from None


class AtomicArtifactStore:
    """A folder of trial models implementing Optuna's ``ArtifactStore`` protocol (``open_reader``, ``write``,
    ``remove``), one file per artifact id, as Optuna's ``FileSystemArtifactStore`` lays them out (either reads
    the other's folder). A write goes to a temporary name and is renamed into place, so a worker killed mid-write
    leaves no partial artifact."""

    def __init__(self, base_path: str | Path) -> None:
        self.base_path = Path(base_path)

    def path_of(self, artifact_id: str) -> Path:
        """The file of ``artifact_id``; an id that would lead out of the folder is refused."""
        root = os.path.abspath(self.base_path)
        path = os.path.abspath(os.path.join(root, artifact_id))
        if os.path.isabs(artifact_id) or os.path.commonpath([root, path]) != root or path == root:
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        return Path(path)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            return open(self.path_of(artifact_id), "rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {artifact_id} in {self.base_path}") from exc

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        from .._io import atomic_write

        atomic_write(self.path_of(artifact_id), lambda fh: shutil.copyfileobj(content_body, fh))

    def remove(self, artifact_id: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            os.remove(self.path_of(artifact_id))
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {artifact_id} in {self.base_path}") from exc
