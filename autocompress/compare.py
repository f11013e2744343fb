"""Measurements side by side: the original and a candidate timed in the same window, interleaved.

On a shared machine a model's latency moves with whatever else runs (10× with one busy neighbour on two
cores). A ratio of a candidate measured now to an original measured once, at a study's start, reports that
noise as a gain. :func:`latency_side_by_side` times both models in alternating rounds after a warm-up, so
that load falls on both alike, and reports the median of the per-round ratios; :func:`energy_side_by_side`
does the same for energy (RAPL where readable, else the estimate from the same-window latencies and MACs).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._tensors import ModelInput, call_model, repeat_to_batch, to_device
from .device import resolve_device
from .profile import (_rapl_energy_uj, default_threads, estimate_energy_mj, fixed_threads,  # one RAPL reader
                      is_quantized, runs_int8)

ROUNDS = 7  # alternating rounds; the ratio is the median over them
RUNS_PER_ROUND = 5  # timed forward passes per model and round
WARMUP_RUNS = 3  # per model, before the first round
BATCH = 64


def _runner(model: nn.Module, example_input: ModelInput, batch: int, device: str | torch.device) -> tuple[
        Callable[[], None], Callable[[], None]]:
    """A forward pass of ``model`` at ``batch`` on its measuring device (int8: CPU), and the sync to time it."""
    dev = torch.device("cpu") if is_quantized(model) else resolve_device(device)
    x = to_device(repeat_to_batch(to_device(example_input, "cpu"), batch), dev)
    if not is_quantized(model) and any(p.device != dev for p in model.parameters()):
        model = copy.deepcopy(model).to(dev)  # the caller's model stays where it is
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return (lambda: call_model(model, x)), sync


def _interleaved(measure_a: Callable[[], float], measure_b: Callable[[], float], rounds: int) -> tuple[
        list[float], list[float]]:
    """Alternate the two measurements ``rounds`` times, swapping which goes first each round."""
    a, b = [], []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(measure_a())
            b.append(measure_b())
        else:
            b.append(measure_b())
            a.append(measure_a())
    return a, b


def _summary(original: list[float], candidate: list[float], unit: str, method: str) -> dict[str, Any]:
    ratios = [o / c for o, c in zip(original, candidate) if c > 0]
    return {f"original_{unit}": statistics.median(original), f"compressed_{unit}": statistics.median(candidate),
            "ratio": statistics.median(ratios) if ratios else float("nan"), "rounds": len(ratios),
            "method": method, f"original_rounds_{unit}": original, f"compressed_rounds_{unit}": candidate}


@contextmanager
def _eval_mode(models: tuple[nn.Module, ...], threads: int) -> Iterator[None]:
    """Both models in eval mode under inference_mode and fixed threads; the callers' modes restored after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with fixed_threads(threads), torch.inference_mode():
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def latency_side_by_side(original: nn.Module, candidate: nn.Module, example_input: ModelInput,
                         batch: int = BATCH, device: str | torch.device = "cpu", threads: int | None = None,
                         rounds: int = ROUNDS, runs: int = RUNS_PER_ROUND) -> dict[str, Any]:
    """Batch-``batch`` latency of both models in one window: ``original_ms``, ``compressed_ms`` (medians of the
    per-round medians) and ``ratio`` (the median per-round original / candidate: the X-fold reduction)."""
    run_a, sync_a = _runner(original, example_input, batch, device)
    run_b, sync_b = _runner(candidate, example_input, batch, device)

    def timed(run: Callable[[], None], sync: Callable[[], None]) -> Callable[[], float]:
        def measure() -> float:
            times = []
            for _ in range(runs):
                sync()
                start = time.perf_counter()
                run()
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
            return statistics.median(times)
        return measure

    with _eval_mode((original, candidate), threads or default_threads()):
        for _ in range(WARMUP_RUNS):
            run_a(), run_b()
        a, b = _interleaved(timed(run_a, sync_a), timed(run_b, sync_b), rounds)
    return _summary(a, b, "ms", "interleaved")


def energy_side_by_side(original: nn.Module, candidate: nn.Module, example_input: ModelInput,
                        flops: tuple[int, int], latency: dict[str, Any], batch: int = BATCH,
                        threads: int | None = None, rounds: int = ROUNDS, runs: int = RUNS_PER_ROUND) -> dict[
                            str, Any]:
    """Batch-``batch`` energy (mJ) of both models in one window: RAPL rounds, interleaved, where the counter is
    readable; else the estimate from MACs (``flops``: original, candidate) and the same-window latencies of
    :func:`latency_side_by_side` (``latency``)."""
    threads = threads or default_threads()
    if _rapl_energy_uj() is not None:
        run_a, _ = _runner(original, example_input, batch, "cpu")
        run_b, _ = _runner(candidate, example_input, batch, "cpu")

        def joules(run: Callable[[], None]) -> Callable[[], float]:
            def measure() -> float:
                start = _rapl_energy_uj()
                for _ in range(runs):
                    run()
                end = _rapl_energy_uj()
                return (end - start) / 1000.0 / runs if start is not None and end is not None else float("nan")
            return measure

        with _eval_mode((original, candidate), threads):
            for _ in range(WARMUP_RUNS):
                run_a(), run_b()
            a, b = _interleaved(joules(run_a), joules(run_b), rounds)
        if all(v > 0 for v in a + b):
            return _summary(a, b, "mj", "rapl")
    # The estimate of each round from that round's latencies, so that the ratio keeps the pairing.
    a = [estimate_energy_mj(ms, flops[0], batch, threads, runs_int8(original))
         for ms in latency["original_rounds_ms"]]
    b = [estimate_energy_mj(ms, flops[1], batch, threads, runs_int8(candidate))
         for ms in latency["compressed_rounds_ms"]]
    return _summary(a, b, "mj", "estimate")
