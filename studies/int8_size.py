"""Where the bytes of a pruned static-int8 model go, and what per-tensor weight scales save (issue 14, item 4).

For the digits CNN pruned by 50/70/80% (``conv`` and ``global`` strategies), then static int8 with per-channel,
per-tensor and ``auto`` weight scales: float and int8 size (``profile.serialized_size_bytes``), their ratio,
eval accuracy, and the int8 state dict split into weight payload, per-channel scales, zero points, biases,
other tensors and container bytes (``quantization_size.size_breakdown``). Also the per-layer noise ratio
(per-tensor over per-channel weight quantization noise) that the ``auto`` rule reads.

Writes ``studies/results/int8_size.md`` atomically.

    OMP_NUM_THREADS=1 .venv/bin/python studies/int8_size.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from autocompress import quantization as Q
from autocompress._io import atomic_write
from autocompress.profile import evaluate, serialized_size_bytes
from autocompress.pruning import PruningConfig, prune
from autocompress.quantization.size import _QPARAM_BYTES_PER_CHANNEL, _entries, _symmetric_noise, size_breakdown
from autocompress.task import Task
from autocompress.tasks import digits

OUT = Path(__file__).parent / "results" / "int8_size.md"
RATIOS = (0.5, 0.7, 0.8)
FINETUNE_EPOCHS = 3
STRATEGIES = ("conv", "global")
GRANULARITIES = tuple(g for g in ("per_channel", "per_tensor", "auto")
                      if "weight_granularity" in {f.name for f in dataclasses.fields(Q.StaticQuantization)}
                      or g == "per_channel")


def _static(granularity: str) -> Q.StaticQuantization:
    if granularity == "per_channel" and len(GRANULARITIES) == 1:
        return Q.StaticQuantization()
    return Q.StaticQuantization(weight_granularity=granularity)


def _finetune(model: torch.nn.Module, task: Task, epochs: int = FINETUNE_EPOCHS) -> torch.nn.Module:
    """A few epochs of plain fine-tuning, so that accuracies compare trained pruned models, not broken ones."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for x, y in task.train_loader():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def _payload(model: torch.nn.Module) -> int:
    b = size_breakdown(model)
    return b.total - b.container


def _safetensors_bytes(model: torch.nn.Module) -> int:
    """Bytes of the state dict as one safetensors file: int8 tensors as int8 values plus their scales and zero
    points (per-channel as tensors of the dtypes torch saves, per-tensor as two scalars)."""
    from safetensors.torch import save

    flat = {}
    for key, value in model.state_dict().items():
        for name, t in _entries(key, value):
            if t.is_quantized:
                flat[name] = t.int_repr().contiguous()
                if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    flat[name + ".scales"] = t.q_per_channel_scales().contiguous()
                    flat[name + ".zero_points"] = t.q_per_channel_zero_points().contiguous()
                else:
                    flat[name + ".scale"] = torch.tensor(t.q_scale())
                    flat[name + ".zero_point"] = torch.tensor(t.q_zero_point())
            else:
                flat[name] = t.contiguous()
    return len(save(flat))


def _layer_rows(quantized: torch.nn.Module) -> list[str]:
    rows = []
    for name, module in quantized.named_modules():
        weight = getattr(module, "weight", None)
        if not callable(weight):
            continue
        w = weight()
        if not w.is_quantized:
            continue
        flat = w.dequantize()
        ratio = _symmetric_noise(flat, False) / max(_symmetric_noise(flat, True), 1e-30)
        share = _QPARAM_BYTES_PER_CHANNEL * flat.shape[0] / flat.numel()
        rows.append(f"| {name} | {tuple(flat.shape)} | {w.qscheme()} | {share:.3f} | {ratio:.2f} |")
    return rows


def main() -> int:
    task = digits.task()
    metric = task.resolved_metric
    base_accuracy = evaluate(task.model, task.eval_loader(), metric)
    lines = ["# int8 size of pruned digits CNNs", "",
             f"Float unpruned: {serialized_size_bytes(task.model)} bytes, accuracy {base_accuracy:.4f}. "
             "Sizes are bytes of `torch.save(model.state_dict())`. Pruned models (magnitude, `conv`: the same ratio in "
             f"every conv layer; `global`) are fine-tuned {FINETUNE_EPOCHS} epochs, then static int8 (8 calibration "
             "batches). Breakdown columns: bytes of the int8 state dict (`quantization_size.size_breakdown`; the float "
             "rows break down the float model). payload ratio: the same ratio counting tensor bytes only (file minus "
             "container); safetensors ratio: the same tensors written as one safetensors file (int8 values plus "
             "their scales and zero points).", "",
             "| strategy | ratio | int8 weights | float B | int8 B | ratio | acc float | acc int8 | "
             "weights | scales | zero pts | biases | other | container | payload ratio | safetensors ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    layers: list[str] = []
    for strategy in STRATEGIES:
        for ratio in RATIOS:
            pruned = prune(task.model, task.example_input, PruningConfig(strategy=strategy, ratio=ratio),
                           progress=False).model
            pruned = _finetune(pruned, task)
            float_bytes = serialized_size_bytes(pruned)
            float_accuracy = evaluate(pruned, task.eval_loader(), metric)
            fb = size_breakdown(pruned)
            lines.append(f"| {strategy} | {ratio} | float | {float_bytes} | | | {float_accuracy:.4f} | | "
                         f"{fb.weights} | {fb.scales} | {fb.zero_points} | {fb.biases} | {fb.other} | "
                         f"{fb.container} | | |")
            for granularity in GRANULARITIES:
                quantized = Q.quantize(pruned, _static(granularity), task.train_loader(), task.example_input,
                                       progress=False).model
                size = serialized_size_bytes(quantized)
                accuracy = evaluate(quantized, task.eval_loader(), metric)
                b = size_breakdown(quantized)
                lines.append(f"| {strategy} | {ratio} | {granularity} | {float_bytes} | {size} | "
                             f"{float_bytes / size:.2f} | {float_accuracy:.4f} | {accuracy:.4f} | {b.weights} | "
                             f"{b.scales} | {b.zero_points} | {b.biases} | {b.other} | {b.container} | "
                             f"{_payload(pruned) / _payload(quantized):.2f} | "
                             f"{_safetensors_bytes(pruned) / _safetensors_bytes(quantized):.2f} |")
                if granularity == "per_channel":
                    layers += [f"| {strategy} {ratio} {row[2:]}" for row in _layer_rows(quantized)]
                print(lines[-1], flush=True)
    lines += ["", "Per layer (per-channel int8): qparam share = 16 bytes per output channel over int8 weight "
              "bytes; noise ratio = per-tensor over per-channel weight quantization noise.", "",
              "| model layer | shape | qscheme | qparam share | noise ratio |", "| --- | --- | --- | --- | --- |",
              *layers]
    atomic_write(OUT, lambda fh: fh.write("\n".join(lines).encode() + b"\n"))
    print("\n".join(layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
