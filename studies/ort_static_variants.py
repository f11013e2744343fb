"""Why ONNX Runtime's static int8 is not faster than torch.ao's on the CNN tasks: its quantizer's options, timed.

For ``mnist`` (and ``digits``), the trained model as torch fp32, torch.ao static int8, and ONNX Runtime static
int8 made five ways: the engine's default (QDQ, per-channel int8 weights, every op ONNX Runtime quantizes), QDQ
with per-tensor weights, QDQ with only Conv/Gemm quantized (residual adds float), the QOperator format, and QDQ
with uint8 weights. All timed in one window (``studies/runtimes.py``'s round-robin), accuracy on the whole
evaluation set. Writes ``studies/results/ort_static_variants.md``:

    .venv/bin/python studies/ort_static_variants.py [--tasks mnist,digits] [--rounds 15]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from autocompress import quantization as Q
from autocompress._io import atomic_write
from autocompress.profile import default_threads, evaluate
from autocompress.quantization import ort
from autocompress.task import load_task

sys.path.insert(0, str(Path(__file__).parent))
import runtimes  # noqa: E402  (the same timing loop as the runtime table)

OUT = Path(__file__).parent / "results" / "ort_static_variants.md"


def variants(task) -> dict[str, torch.nn.Module]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    float_bytes = ort.float_onnx(task.model, task.example_input)
    names = [i.name for i in ort.session(float_bytes, 1).get_inputs()]
    folder = Path(tempfile.mkdtemp())
    (folder / "float.onnx").write_bytes(float_bytes)

    def made(fmt=QuantFormat.QDQ, per_channel=True, ops=None, weights=QuantType.QInt8) -> torch.nn.Module:
        reader = ort._Calibration(task.train_loader(shuffle=False), names, 8)
        with ort._quiet_ort():  # its quantizer advises pre-processing on the root logger on every call
            quantize_static(folder / "float.onnx", folder / "int8.onnx", reader, quant_format=fmt,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=weights,
                            op_types_to_quantize=ops, extra_options={"WeightSymmetric": weights == QuantType.QInt8,
                                                                     "ActivationSymmetric": False})
        return ort.program((folder / "int8.onnx").read_bytes(), task.example_input, {"mode": "static"})

    loader = task.train_loader(shuffle=False)
    return {
        runtimes.REFERENCE: task.model.eval(),
        "torch.ao static int8": Q.quantize(task.model, Q.quantization_config("static"), loader, task.example_input,
                                           progress=False).model,
        "ONNX Runtime static, the engine's default": Q.quantize(
            task.model, Q.quantization_config("static", backend="onnxruntime"), loader, task.example_input,
            progress=False).model,
        "ONNX Runtime static, per-tensor weights": made(per_channel=False),
        "ONNX Runtime static, Conv/Gemm only": made(ops=["Conv", "Gemm", "MatMul"]),
        "ONNX Runtime static, QOperator format": made(fmt=QuantFormat.QOperator),
        "ONNX Runtime static, uint8 weights": made(per_channel=False, weights=QuantType.QUInt8),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist,digits")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    threads = default_threads()
    lines = ["# ONNX Runtime static int8 variants against torch.ao static int8", "",
             f"Produced by `.venv/bin/python studies/ort_static_variants.py --tasks {args.tasks} --rounds "
             f"{args.rounds}` (one run). Machine: {platform.platform()}, {threads} threads. Latency: every model "
             f"of a task timed in one window, {args.rounds} rounds round-robin (each the median of 30 passes after "
             "5 warm-ups); the median round and, in brackets, torch.ao static int8's median round over this one's "
             "(> 1: faster than torch.ao).", ""]
    for name in args.tasks.split(","):
        task = load_task(name)
        models = variants(task)
        timed = runtimes.latencies(models, task.example_input, threads, args.rounds)
        reference = "torch.ao static int8"
        lines += [f"## {name}", "", "| engine | .onnx / state dict kB | batch-1 ms | batch-64 ms | accuracy |",
                  "|---|---:|---:|---:|---:|"]
        for label, model in models.items():
            cells = []
            for batch in runtimes.BATCHES:
                ms = timed[(label, batch)]["ms"]
                cells.append(f"{ms:.3f} ({timed[(reference, batch)]['ms'] / ms:.2f}×)")
            value = evaluate(model, task.eval_loader(), task.resolved_metric)
            lines.append(f"| {label} | {runtimes.size_bytes(model) / 1e3:.1f} | {cells[0]} | {cells[1]} | "
                         f"{value:.4f} |")
        lines.append("")
        print(f"{name} done", file=sys.stderr, flush=True)
    text = "\n".join(lines)
    atomic_write(OUT, lambda f: f.write(text.encode()))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
