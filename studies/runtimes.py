"""Runtimes side by side: each task's trained model in torch and in ONNX Runtime, float and int8, one run.

For each task (``digits``, ``mnist``: CNNs; ``reviews``: a pretrained transformer encoder), the unpruned trained
model as each engine of :mod:`autocompress.quantization` makes it:

- torch fp32; torch.ao dynamic and static int8 (backend ``x86``);
- ONNX Runtime fp32, dynamic and static (QDQ, calibrated on 8 training batches) int8 (backend ``onnxruntime``);
- torchao's CPU int8 path (``Int8DynamicActivationInt8WeightConfig`` through ``quantize_``, eager), where torchao
  is installed (the optional extra: ``pip install -e .[runtimes]``; the row says so when it is missing).

Columns: size (the file a user deploys: ``torch.save`` of the state dict for torch, the ``.onnx`` file for ONNX
Runtime), batch-1 and batch-64 latency, and the task metric on its whole evaluation set. Latency: every model of
a task is timed in the same window, round-robin over ``ROUNDS[task]`` rounds (each round: the median of 30 passes after
5 warm-ups per model, fixed threads); the table gives the median round and the median per-round ratio to torch
fp32 (X-fold: higher is faster), and ONNX Runtime static int8 against torch.ao static int8 in the same rounds
(the median per-round ratio: the engines' head to head). A row that cannot be made says why (torch.ao static int8 cannot trace a model
fed a dict of tensors).

Writes ``studies/results/runtimes.md`` atomically:

    .venv/bin/python studies/runtimes.py [--tasks digits,mnist,reviews] [--rounds N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress import quantization as Q
from autocompress._io import atomic_write
from autocompress._tensors import call_model, repeat_to_batch, to_device
from autocompress.errors import describe_error
from autocompress.profile import default_threads, evaluate, fixed_threads, serialized_size_bytes
from autocompress.task import load_task

OUT = Path(__file__).parent / "results" / "runtimes.md"
TASKS = ("digits", "mnist", "reviews")
ROUNDS = {"digits": 15, "mnist": 15, "reviews": 5}  # the CNNs are cheap to time: more rounds, steadier medians
HEAD_TO_HEAD = ("ONNX Runtime static int8 (QDQ)", "torch.ao static int8")  # timed against each other as well
REPEATS = 3  # more windows of the head to head alone (with torch fp32), to show its spread
WARMUP, RUNS = 5, 30
BATCHES = (1, 64)
REFERENCE = "torch fp32"


def _engine(mode: str, backend: str) -> Callable[[Any], nn.Module]:
    def make(task: Any) -> nn.Module:
        config = Q.quantization_config(mode, backend=backend)
        return Q.quantize(task.model, config, task.train_loader(shuffle=False), task.example_input,
                          progress=False).model
    return make


def _torchao(task: Any) -> nn.Module:
    """torchao's int8 (int8 dynamic activations, int8 weights) on a copy, where torchao imports."""
    import copy

    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except Exception as exc:  # not installed, or built for another torch
        raise RuntimeError(f"torchao does not import here ({describe_error(exc).splitlines()[0][:120]})") from exc
    model = copy.deepcopy(task.model).eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


VARIANTS: dict[str, Callable[[Any], nn.Module]] = {
    REFERENCE: lambda task: task.model.eval(),
    "torch.ao dynamic int8": _engine("dynamic", "x86"),
    "torch.ao static int8": _engine("static", "x86"),
    "ONNX Runtime fp32": _engine("none", "onnxruntime"),
    "ONNX Runtime dynamic int8": _engine("dynamic", "onnxruntime"),
    "ONNX Runtime static int8 (QDQ)": _engine("static", "onnxruntime"),
    "torchao int8 (dynamic activations, int8 weights)": _torchao,
}


def size_bytes(model: nn.Module) -> int:
    onnx_bytes = getattr(model, "onnx_bytes", None)
    return len(onnx_bytes) if onnx_bytes else serialized_size_bytes(model)


def _pass(model: nn.Module, x: Any) -> Callable[[], float]:
    def timed() -> float:
        times = []
        for i in range(WARMUP + RUNS):
            start = time.perf_counter()
            call_model(model, x)
            if i >= WARMUP:
                times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)
    return timed


def latencies(models: dict[str, nn.Module], example: Any, threads: int, rounds: int) -> dict[tuple[str, int], dict]:
    """Per (model, batch): the median round in ms, and the median per-round ratio to :data:`REFERENCE`."""
    samples: dict[tuple[str, int], list[float]] = {}
    names = list(models)
    with fixed_threads(threads), torch.inference_mode():
        for batch in BATCHES:
            x = repeat_to_batch(to_device(example, "cpu"), batch)
            runs = {name: _pass(models[name], x) for name in names}
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]  # a different model goes first each round
                for name in order:
                    samples.setdefault((name, batch), []).append(runs[name]())
    out = {}
    for (name, batch), values in samples.items():
        reference = samples[(REFERENCE, batch)]
        out[(name, batch)] = {"ms": statistics.median(values),
                              "ratio": statistics.median(a / b for a, b in zip(reference, values))}
    prefix, theirs = HEAD_TO_HEAD
    for (ours, batch) in samples:
        if ours.startswith(prefix) and (theirs, batch) in samples:
            # >1: ONNX Runtime faster; the same rounds, so both saw the same machine state
            out[(ours, batch)]["vs"] = statistics.median(
                a / b for a, b in zip(samples[(theirs, batch)], samples[(ours, batch)]))
    return out


def one_task(name: str, rounds: int, threads: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    task = load_task(name)
    metric = task.resolved_metric
    rows: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    for variant, make in VARIANTS.items():
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = make(task)
                value = evaluate(model, task.eval_loader(), metric)
        except Exception as exc:  # a row that cannot be made says why
            rows.append({"task": name, "variant": variant, "error": describe_error(exc).splitlines()[0][:160]})
            log(f"{name}: {variant}: not made ({rows[-1]['error']})")
            continue
        models[variant] = model
        rows.append({"task": name, "variant": variant, "size": size_bytes(model), "metric": value,
                     "metric_name": metric.name, "seconds": time.perf_counter() - started})
        log(f"{name}: {variant}: {rows[-1]['size'] / 1e3:.1f} kB, {metric.name} {value:.4f}")
    timed = latencies(models, task.example_input, threads, rounds)
    for row in rows:
        for batch in BATCHES:
            if (row["variant"], batch) in timed:
                row[f"b{batch}"] = timed[(row["variant"], batch)]
    pair = (REFERENCE, *HEAD_TO_HEAD)
    if all(name in models for name in pair):
        # The head to head again, in windows of its two engines alone: how much of the difference is the window.
        spread = []
        for _ in range(REPEATS):
            again = latencies({name: models[name] for name in pair}, task.example_input, threads, rounds)
            spread.append(again[(HEAD_TO_HEAD[0], 64)]["vs"])
        ours = next(r for r in rows if r["variant"] == HEAD_TO_HEAD[0])
        ours["b64"]["alone"] = spread
        log(f"{name}: head to head alone at batch 64: {', '.join(f'{v:.2f}' for v in spread)}")
    return rows


def markdown(rows: list[dict[str, Any]], threads: int, rounds: int | None, seconds: float) -> str:
    import onnxruntime

    def rounds_of(task: str) -> int:
        return rounds or ROUNDS.get(task, 5)

    lines = ["# Runtimes side by side", "",
             "Produced by `.venv/bin/python studies/runtimes.py` (one run). Machine: "
             f"{platform.platform()}, {threads} threads for torch and for ONNX Runtime sessions. Versions: python "
             f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. "
             f"Took {seconds:.0f} s.", "",
             "Each task's trained model, unpruned. Size: the file a user deploys (`torch.save` of the state dict; "
             "the `.onnx` file). Latency: all models of a task timed in one window, round-robin over "
             f"{' / '.join(f'{rounds_of(t)}' for t in dict.fromkeys(r['task'] for r in rows))} rounds "
             f"({', '.join(dict.fromkeys(r['task'] for r in rows))}; each: median of {RUNS} passes after {WARMUP} "
             "warm-ups); the median round, and in "
             "brackets the median per-round speed-up over torch fp32. Metric: the whole evaluation set.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        group = [r for r in rows if r["task"] == task]
        name = next((r["metric_name"] for r in group if "metric_name" in r), "metric")
        lines += [f"## {task}", "", f"| engine | size kB | batch-1 ms | batch-64 ms | {name} |",
                  "|---|---:|---:|---:|---:|"]
        for r in group:
            if "error" in r:
                lines.append(f"| {r['variant']} | — | — | — | not made: {r['error']} |")
                continue
            cells = [f"{r[f'b{b}']['ms']:.3f} ({r[f'b{b}']['ratio']:.2f}×)" if f"b{b}" in r else "—"
                     for b in BATCHES]
            lines.append(f"| {r['variant']} | {r['size'] / 1e3:.1f} | {cells[0]} | {cells[1]} | {r['metric']:.4f} |")
        for ours in [r for r in group if r["variant"].startswith(HEAD_TO_HEAD[0]) and "vs" in r.get("b64", {})]:
            lines += ["", f"{ours['variant']} against {HEAD_TO_HEAD[1]}, the median per-round ratio over "
                      f"{rounds_of(task)} rounds (> 1: ONNX Runtime faster): batch 1 {ours['b1']['vs']:.2f}×, "
                      f"batch 64 {ours['b64']['vs']:.2f}×."]
            alone = ours["b64"].get("alone")
            if alone:
                lines += ["", f"The same head to head at batch 64 in {len(alone)} more windows, each timing only "
                          f"torch fp32 and the two static int8 engines ({rounds_of(task)} rounds each): "
                          f"{', '.join(f'{v:.2f}×' for v in alone)}. " + _verdict(alone + [ours["b64"]["vs"]],
                                                                                 ours["b1"]["vs"])]
        lines.append("")
    return "\n".join(lines)


def _verdict(batch64: list[float], batch1: float) -> str:
    """What the head to head says, from its ratios (> 1: ONNX Runtime faster)."""
    if min(batch64) >= 1.0:
        return "ONNX Runtime's static int8 is at least as fast as torch.ao's in every window."
    if max(batch64) >= 1.0:
        return ("The windows disagree (ratios on both sides of 1): at batch 64 the two engines' int8 programs are "
                "within this machine's window-to-window spread of each other.")
    return (f"At batch 64 ONNX Runtime's static int8 took {100 * (1 / max(batch64) - 1):.0f}-"
            f"{100 * (1 / min(batch64) - 1):.0f}% more time than torch.ao's in every window here, while at batch 1 "
            f"it is {batch1:.1f}× faster (torch.ao's per-call overhead dominates one sample). Why not at batch 64 is "
            "not settled: the ratio depends on what else is timed in the window. In the window of "
            "`studies/ort_static_variants.py` (torch fp32, torch.ao static and five ONNX Runtime static programs) "
            "the same program ran as fast or faster than torch.ao's, and none of the quantizer's other options "
            "(per-tensor weights, Conv/Gemm only, QOperator, uint8 weights) was faster than its default. A likely "
            "cause, not measured: both engines' thread pools spin-wait after a call, so on these 2 cores the "
            "engine timed first slows the next; timing each engine in a process of its own would settle it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=None, help="rounds for every task (default: per task, "
                        f"{', '.join(f'{k} {v}' for k, v in ROUNDS.items())})")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    threads = default_threads()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.tasks.split(","):
        rows += one_task(name, args.rounds or ROUNDS.get(name, 5), threads,
                         lambda s: print(s, file=sys.stderr, flush=True))
    text = markdown(rows, threads, args.rounds, time.perf_counter() - started)
    atomic_write(args.out, lambda f: f.write(text.encode()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
