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
(the median per-round ratio: the engines' head to head), then each of the two profiled alone in its own
profiler (ONNX Runtime's session profiler, ``torch.profiler``): ms per pass by kind of operator, which says where
the difference is. A row that cannot be made says why (torch.ao static int8 cannot trace a model
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


def _kind(op: str) -> str:
    """convolutions, linear layers or everything else, from an operator's name in either profiler (QLinearAdd and
    QLinearGlobalAveragePool are ONNX Runtime's int8 add and pooling, not linear layers)."""
    lowered = op.lower()
    if "conv" in lowered:
        return "convolutions"
    if any(k in lowered for k in ("gemm", "matmul", "quantized::linear", "aten::linear", "aten::addmm")):
        return "linear layers"
    return "everything else"


def _ort_op_ms(model: nn.Module, x: Any, threads: int) -> dict[str, float]:
    """ms per batch-64 pass by operator type in ONNX Runtime's own profiler (the program's bytes in a profiling
    session with the same threads; the warm-up passes left out)."""
    import json
    import tempfile

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = f"{folder}/ort"
        session = onnxruntime.InferenceSession(model.onnx_bytes, sess_options=options,
                                               providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(WARMUP + RUNS):
            session.run(None, feed)
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = runs[WARMUP]["ts"]
    out: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"]["op_name"]
            out[op] = out.get(op, 0.0) + e["dur"] / 1000.0 / RUNS
    return out


def _torch_op_ms(model: nn.Module, x: Any, threads: int) -> dict[str, float]:
    """ms per batch-64 pass by operator (self CPU time in torch's profiler, after warm-up passes)."""
    from torch.profiler import ProfilerActivity, profile

    with fixed_threads(threads), torch.inference_mode():
        for _ in range(WARMUP):
            call_model(model, x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(RUNS):
                call_model(model, x)
    return {e.key: e.self_cpu_time_total / 1000.0 / RUNS for e in prof.key_averages()}


def op_breakdown(models: dict[str, nn.Module], example: Any, threads: int) -> dict[str, Any]:
    """Where the batch-64 time of the two static int8 programs goes, each profiled alone: ms per pass by kind of
    operator (convolutions, linear layers, everything else), and the busiest operators of each kind."""
    x = repeat_to_batch(to_device(example, "cpu"), 64)
    ours, theirs = HEAD_TO_HEAD
    out: dict[str, Any] = {}
    for name, profiler in ((ours, _ort_op_ms), (theirs, _torch_op_ms)):
        ops = profiler(models[name], x, threads)
        kinds: dict[str, float] = {}
        names: dict[str, list[str]] = {}
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1]):
            kinds[_kind(op)] = kinds.get(_kind(op), 0.0) + ms
            if ms >= 0.01 * sum(ops.values()) and _kind(op) != "everything else":
                names.setdefault(_kind(op), []).append(op)
        with fixed_threads(threads), torch.inference_mode():
            alone = _pass(models[name], x)()  # unprofiled, nothing else timed in between
        out[name] = {"kinds": kinds, "ops": names, "alone_ms": alone}
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
        ours["b64"]["ops"] = op_breakdown(models, task.example_input, threads)
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
                                                                                 ours["b1"]["vs"],
                                                                                 ours["b64"].get("ops"))]
            if ours["b64"].get("ops"):
                lines += _ops_table(ours["b64"]["ops"])
        lines.append("")
    return "\n".join(lines)


def _verdict(batch64: list[float], batch1: float, ops: dict[str, Any] | None) -> str:
    """What the head to head says, from its ratios (> 1: ONNX Runtime faster) and the operator profiles."""
    where = (" " + _where(ops)) if ops else ""
    if min(batch64) >= 1.0:
        return "ONNX Runtime's static int8 is at least as fast as torch.ao's in every window." + where
    if max(batch64) >= 1.0:
        return ("The windows disagree (ratios on both sides of 1): at batch 64 the two engines' int8 programs are "
                "within this machine's window-to-window spread of each other." + where)
    return (f"At batch 64 ONNX Runtime's static int8 took {100 * (1 / max(batch64) - 1):.0f}-"
            f"{100 * (1 / min(batch64) - 1):.0f}% more time than torch.ao's in every window here, while at batch 1 "
            f"it is {batch1:.1f}× faster (torch.ao's per-call overhead dominates one sample)." + where +
            " None of ONNX Runtime's quantizer options (per-tensor weights, Conv/Gemm only, QOperator, uint8 "
            "weights; `studies/ort_static_variants.py`) made its programs faster than the default.")


def _where(ops: dict[str, Any]) -> str:
    """One sentence from :func:`op_breakdown`: the kind of operator where the two programs differ most."""
    ours, theirs = (ops[name]["kinds"] for name in HEAD_TO_HEAD)
    kinds = [k for k in dict.fromkeys([*ours, *theirs])]
    gaps = {k: ours.get(k, 0.0) - theirs.get(k, 0.0) for k in kinds}
    widest = max(gaps, key=lambda k: abs(gaps[k]))
    names = {name: ", ".join(ops[name]["ops"].get(widest, [])) or widest for name in HEAD_TO_HEAD}
    rest = max((abs(v) for k, v in gaps.items() if k != widest), default=0.0)
    alone = [ops[name]["alone_ms"] for name in HEAD_TO_HEAD]
    overhead = max(sum(ops[name]["kinds"].values()) - ops[name]["alone_ms"] for name in HEAD_TO_HEAD)
    if overhead > abs(gaps[widest]) / 2:
        # A profiler's per-operator cost is fixed: on a small model it can exceed the gap it is meant to split.
        return (f"Timed alone (each program on its own, unprofiled, median of {RUNS} batch-64 passes) ONNX Runtime's "
                f"takes {alone[0]:.2f} ms and torch.ao's {alone[1]:.2f} ms ({alone[0] / alone[1]:.2f}× torch.ao's "
                f"time). The operator profiles below do not split that: profiling added up to {overhead:.2f} ms to a "
                f"pass, more than half the largest gap between the engines' kinds of operator ({widest}: "
                f"{abs(gaps[widest]):.2f} ms).")
    return (f"Timed alone (each program on its own, unprofiled, median of {RUNS} batch-64 passes) ONNX Runtime's "
            f"takes {alone[0]:.2f} ms and torch.ao's {alone[1]:.2f} ms ({alone[0] / alone[1]:.2f}× torch.ao's time). "
            f"Profiled alone (each engine's own profiler, ms per pass), the {widest} take "
            f"{ours.get(widest, 0.0):.2f} ms in ONNX Runtime ({names[HEAD_TO_HEAD[0]]}) against "
            f"{theirs.get(widest, 0.0):.2f} ms in torch.ao ({names[HEAD_TO_HEAD[1]]}); every other kind of operator "
            f"differs by at most {rest:.2f} ms. The difference is in the {widest}' int8 kernels (ONNX Runtime's "
            "MLAS against torch.ao's fbgemm), not in layout or quantize/dequantize steps around them.")


def _ops_table(ops: dict[str, Any]) -> list[str]:
    ours, theirs = (ops[name]["kinds"] for name in HEAD_TO_HEAD)
    lines = ["", "Where the batch-64 time of the two static int8 programs goes, each profiled alone (ms per pass; "
             "profiling adds its own overhead):", "",
             f"| operators | {HEAD_TO_HEAD[0]} | {HEAD_TO_HEAD[1]} |", "|---|---:|---:|"]
    for kind in dict.fromkeys([*ours, *theirs]):
        lines.append(f"| {kind} | {ours.get(kind, 0.0):.3f} | {theirs.get(kind, 0.0):.3f} |")
    lines.append(f"| total, profiled | {sum(ours.values()):.3f} | {sum(theirs.values()):.3f} |")
    lines.append(f"| a pass timed alone, unprofiled | {ops[HEAD_TO_HEAD[0]]['alone_ms']:.3f} | "
                 f"{ops[HEAD_TO_HEAD[1]]['alone_ms']:.3f} |")
    return lines


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
