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


def tiny_bert(num_labels: int = 3, seq_len: int = 16):
    """A small random BertForSequenceClassification (2 layers, hidden 32, 4 heads) shared by the tests."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=seq_len, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


def _postgres_binary(name: str) -> str:
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        pytest.fail(f"PostgreSQL's {name} was not found; the PostgreSQL storage test needs a server "
                    "(apt-get install postgresql; .ci/run installs it)")
    return found


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1, in its own temporary cluster, for the test session.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user. A missing server is a
    failure, not a skip: the storage is part of what the project promises.
    """
    import shutil
    import tempfile
    import time

    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    as_root = os.geteuid() == 0
    owner = dict(user="postgres", group="postgres") if as_root else {}
    base = Path(tempfile.mkdtemp(prefix="autocompress-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    data, log = base / "data", base / "server.log"
    from autocompress.dashboard_server import free_port

    port = free_port()
    run = dict(capture_output=True, text=True, timeout=120, cwd=base, **owner)
    init = subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run)
    if init.returncode:
        pytest.fail(f"initdb failed: {init.stderr[-1000:]}")
    start = subprocess.run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                            f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], **run)
    if start.returncode:
        pytest.fail(f"PostgreSQL did not start: {start.stderr[-500:]} {log.read_text()[-1000:]}")
    import psycopg

    for _ in range(50):  # -w waits for the server; the TCP listener may lag a moment behind
        try:
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
            break
        except psycopg.OperationalError:
            time.sleep(0.2)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], **run)
        shutil.rmtree(base, ignore_errors=True)
