"""Workers on one machine share its cores: thread counts are chosen, not left to each process's default."""

import os
import subprocess
import sys

import pytest

from autocompress.threads import WorkerRegistry, available_cores, threads_for


def test_workers_on_one_machine_split_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with WorkerRegistry(tmp_path) as me:
            assert me.live() == 1 and threads_for(me.live()) == cores
            other = WorkerRegistry(tmp_path)
            other.entry = other.folder / f"{other.host}-{neighbour.pid}"
            other.entry.touch()  # a second worker of the same study, alive
            (other.folder / f"{other.host}-999999999").touch()  # a worker that died: no share, file removed
            assert me.live() == 2
            assert threads_for(me.live()) == max(1, cores // 2)
            assert not (other.folder / f"{other.host}-999999999").exists()
        assert not me.entry.exists()  # unregistered on exit
    finally:
        neighbour.kill()
        neighbour.wait()
    # What the user says wins: --threads, then OMP_NUM_THREADS.
    assert threads_for(2, requested=3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_for(1) == 1


def test_cli_asks_openmp_for_a_passive_wait_policy_before_torch_loads(monkeypatch):
    # Set before torch is imported (a later setting is not read by the OpenMP runtime): check in a fresh process.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys, autocompress.cli as cli\n"
            "assert 'torch' not in sys.modules, 'torch loaded before the CLI chose its thread policy'\n"
            "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import os; print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own choice is kept
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "ACTIVE"


@pytest.mark.parametrize("threads", [None, 1])
def test_each_study_trial_records_the_threads_it_ran_with(tmp_path, monkeypatch, threads):
    import autocompress.study as acs
    from autocompress.requirements import Requirements

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    study = acs.run_study("digits", Requirements(objective="size", max_drop=1, target=4, budget="low"), ["size"],
                          1, name="t", storage=f"sqlite:///{tmp_path}/t.db", n_neighbours=0, threads=threads)
    trial = study.get_trials(deepcopy=False)[0]
    assert trial.user_attrs["threads"] == (threads or available_cores())  # one worker: all the cores
