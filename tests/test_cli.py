import json
import os
import subprocess
import sys

import torch
from torchvision.models import resnet18

from .conftest import FIXTURES, run_cli

PROFILE_KEYS = {"arch_type", "layers", "params", "flops", "size_mb", "latency_ms", "metric"}


def test_profile_digits_json():
    result = run_cli("profile", "--task", "digits", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert PROFILE_KEYS <= set(data)
    assert data["arch_type"] == "cnn"
    assert set(data["latency_ms"]) == {"batch_1", "batch_64"}
    assert data["metric"]["name"] == "accuracy" and data["metric"]["value"] >= 0.97
    assert sum(layer["params"] for layer in data["layers"]) == data["params"]
    assert all(set(layer) == {"type", "count", "params", "flops"} for layer in data["layers"])


def test_profile_resnet18_task_file():
    result = run_cli("profile", "--task", str(FIXTURES / "resnet_task.py"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["arch_type"] == "cnn"
    assert data["params"] == sum(p.numel() for p in resnet18(num_classes=10).parameters())


def test_profile_bert_task_file_is_a_transformer():
    result = run_cli("profile", "--task", str(FIXTURES / "bert_task.py"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["arch_type"] == "transformer"
    assert data["flops"] > 0
    assert data["latency_ms"]["batch_1"] > 0 and data["latency_ms"]["batch_64"] > 0
    assert data["metric"]["name"] == "f1"


def test_human_output_is_a_table():
    result = run_cli("profile", "--task", "digits")
    assert result.returncode == 0, result.stderr
    assert "Conv2d" in result.stdout and "accuracy" in result.stdout and "MACs" in result.stdout


def test_user_error_is_one_line_exit_2_without_traceback(tmp_path):
    result = run_cli("profile", "--task", str(tmp_path / "missing.py"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: task file") and "does not exist" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "profile", "--task", str(tmp_path / "missing.py"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_bad_option_is_one_line_exit_2():
    result = run_cli("profile", "--device", "tpu")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid choice: 'tpu'" in result.stderr


def test_help_describes_every_option():
    result = run_cli("profile", "--help")
    assert result.returncode == 0
    for option in ("--task", "--device", "--threads", "--json", "--debug"):
        assert option in result.stdout
    assert "profile" in run_cli("--help").stdout


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        return
    result = run_cli("profile", "--task", "digits", "--device", "cuda")
    assert result.returncode == 2
    assert "no CUDA GPU is available" in result.stderr and "--device cpu" in result.stderr


def test_a_closed_pipe_is_not_an_error():
    """`autocompress ... --json | head`: the reader leaves before the output is written."""
    import os
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "autocompress", "profile", "--task", "digits", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    process.stdout.close()  # no reader any more: the JSON written seconds later meets a broken pipe
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0
    assert b"error" not in stderr and b"Traceback" not in stderr


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children_of(pid: int) -> list[int]:
    from pathlib import Path

    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process ended while we read
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def test_sigterm_to_dashboard_stops_its_server(tmp_path):
    # A supervisor stops `autocompress dashboard` with SIGTERM: the Streamlit child must not live on, listening.
    import signal
    import time

    from autocompress.dashboard_server import free_port

    port = free_port()
    command = [sys.executable, "-m", "autocompress", "dashboard", "--storage",
               f"sqlite:///{tmp_path}/none.db", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert proc.poll() is None, "the dashboard command exited before serving"
            assert time.monotonic() < deadline, "the dashboard did not start listening within 120 s"
            time.sleep(0.5)
        children = _children_of(proc.pid)
        assert children, "the dashboard runs Streamlit as a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not _listening(port), f"port {port} still served after SIGTERM"
        alive = [pid for pid in children if os.path.exists(f"/proc/{pid}") and
                 "zombie" not in open(f"/proc/{pid}/status").read()]
        assert not alive, f"Streamlit child {alive} outlived the dashboard command"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children + _children_of(proc.pid):
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
