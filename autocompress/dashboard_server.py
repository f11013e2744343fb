"""Starting the Streamlit dashboard on a study storage (``autocompress dashboard``), without importing Streamlit.

:func:`serve_dashboard` checks its inputs in one line each (a malformed storage URL, an unknown study, a port
that is taken), then runs ``python -m streamlit run dashboard/app.py`` as a child process and waits for it.
SIGTERM and SIGINT sent to this process are forwarded to the child, which is waited for (and killed if it
does not stop in time), so a supervisor that stops the command leaves no server behind on the port.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError

DEFAULT_STORAGE = "sqlite:///studies/autocompress.db"
STORAGE_ENV = "AUTOCOMPRESS_DASHBOARD_STORAGE"  # the URL reaches the app here, not on the process list
STUDY_ENV = "AUTOCOMPRESS_DASHBOARD_STUDY"
STOP_GRACE_SECONDS = 10.0  # after a forwarded signal, how long the server may take before it is killed


def wait_until_healthy(port: int, server: subprocess.Popen, timeout: float = 60.0, host: str = "127.0.0.1") -> bool:
    """Poll the started dashboard's health endpoint until it answers ``ok``: True, or False once ``server`` has
    exited or ``timeout`` seconds have passed (for callers that start it and then drive it, e.g. a browser)."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return True
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                return False
            time.sleep(0.5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (for callers that start a server, the dashboard or another, and then
    drive it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """A one-line error unless ``host:port`` can be bound now."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}", "a TCP port in 1..65535", "pass e.g. --port 8501")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"{host}:{port} is not free ({exc.strerror})", "a free port",
                              "pass another --port") from None


def _check_storage(url: str, name: str | None) -> None:
    from .study import load_study, resolve_storage, storage_file

    # A malformed URL or an unreachable server fails here, in one line. A SQLite or journal file is not opened
    # (that would create it): the dashboard itself says when it is missing.
    file = storage_file(url) if "://" in url else None
    if file is None:
        resolve_storage(url)
    if name and (file is None or Path(file).is_file()):
        load_study(name, url)  # a study that does not exist is a one-line error


def dashboard_command(host: str, port: int) -> list[str]:
    spec = importlib.util.find_spec("dashboard.app")
    if spec is None or spec.origin is None:
        raise ConfigError("no dashboard package installed beside autocompress", "the dashboard/ folder of the "
                          "autocompress checkout", "reinstall with `pip install -e .` from the checkout")
    return [sys.executable, "-m", "streamlit", "run", spec.origin, "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]


def run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` and wait for it; SIGTERM/SIGINT received meanwhile go to the child. Returns its exit code,
    or 0 when it stopped because this process was asked to stop."""
    child = subprocess.Popen(command, env=env)
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    handled = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Callable | int | None] = {s: signal.signal(s, forward) for s in handled}
    try:
        while True:
            try:
                code = child.wait(timeout=STOP_GRACE_SECONDS if stopping else None)
                break
            except subprocess.TimeoutExpired:  # asked to stop, but the server hangs
                child.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if child.poll() is None:  # an error of our own: never leave the server running
            child.kill()
            child.wait()
    return 0 if stopping else code


def serve_dashboard(storage: str | None = None, name: str | None = None, host: str = "127.0.0.1",
                    port: int = 8501, log: Callable[[str], None] | None = None) -> int:
    """Check the inputs, then serve the dashboard until it stops; the server's exit code (0 when stopped)."""
    from .study import mask_url

    url = storage or DEFAULT_STORAGE
    _check_storage(url, name)
    check_port_free(host, port)
    command = dashboard_command(host, port)
    env = dict(os.environ, **{STORAGE_ENV: url})
    if name:
        env[STUDY_ENV] = name
    if log:
        log(f"dashboard on http://{host}:{port} for {mask_url(url)} (Ctrl+C stops it)")
    return run_forwarding_signals(command, env)
