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


def test_a_busy_neighbour_leaves_a_worker_one_thread_per_idle_core(monkeypatch):
    # Beside a busy process, threads that wait on each other spin on the cores it needs (a trial went from 1.5 s
    # to 17.7 s): a worker takes no more threads than cores are idle when its trial starts.
    from autocompress.threads import idle_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    assert threads_for(1, idle=0.2) == 1  # everything busy: still one thread
    assert threads_for(1, idle=1.0) == 1
    assert threads_for(1, idle=float(cores)) == cores
    assert threads_for(1, requested=2, idle=0.0) == 2  # --threads is the user's call
    idle = idle_cores(0.05)
    assert idle is not None and 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6


@pytest.mark.parametrize("threads", [None, 1])
def test_each_study_trial_records_the_threads_it_ran_with(tmp_path, monkeypatch, threads):
    import autocompress.study as acs
    from autocompress.requirements import Requirements

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    study = acs.run_study("digits", Requirements(objective="size", max_drop=1, target=4, budget="low"), ["size"],
                          1, name="t", storage=f"sqlite:///{tmp_path}/t.db", n_neighbours=0, threads=threads)
    trial = study.get_trials(deepcopy=False)[0]
    if threads:
        assert trial.user_attrs["threads"] == threads
    else:  # one worker: up to all the cores, fewer when other processes keep some busy
        assert 1 <= trial.user_attrs["threads"] <= available_cores()
