import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in models are trained into a per-run cache, so tests never depend on the user's cache."""
    cache = tmp_path_factory.mktemp("autocompress-cache")
    previous = os.environ.get("AUTOCOMPRESS_CACHE_DIR")
    os.environ["AUTOCOMPRESS_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("AUTOCOMPRESS_CACHE_DIR", None)
    else:
        os.environ["AUTOCOMPRESS_CACHE_DIR"] = previous


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "autocompress", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=os.environ.copy())
