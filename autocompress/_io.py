"""Files: the user cache directory and atomic writes (temporary file, then rename)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import platformdirs


def cache_dir() -> Path:
    """Where trained built-in models are cached: ``$AUTOCOMPRESS_CACHE_DIR`` or the user cache directory."""
    root = os.environ.get("AUTOCOMPRESS_CACHE_DIR") or platformdirs.user_cache_dir("autocompress")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp(path: Path) -> Path:
    """An empty temporary file beside ``path`` with the permissions a normal new file would get.

    ``mkstemp`` creates files readable by the owner only; a file the user receives should follow the umask.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it into place.

    A crash leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_component(text: str, fallback: str = "unnamed") -> str:
    """``text`` as one safe file-name component: letters, digits, ``.``, ``_`` and ``-`` only, never ``.``/``..``
    or empty, so a study or trial name cannot lead a path out of its folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip(".")
    return cleaned[:120] or fallback
