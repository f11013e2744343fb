"""Profiling and measurement: what a model is and what it costs. Every later stage measures compressed models
with these same functions, so the original and the compressed model are always compared like for like. FLOPs
are counted with fvcore and, like fvcore, count one fused multiply-add as one FLOP: the numbers are **MACs**
(multiply-accumulates) for one input sample (batch 1). Transformers also get :mod:`.components`.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .components import component_breakdown, components_dict
from ._tensors import ModelInput, call_model, logits_of, repeat_to_batch, to_device
from .device import resolve_device
from .metrics import Metric

PROFILE_SCHEMA_VERSION = 1
WARMUP_RUNS = 5
TIMED_RUNS = 30
LATENCY_BATCHES = (1, 64)


# --------------------------------------------------------------------------------------------- architecture
_ATTENTION_TYPES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.TransformerEncoderLayer,
                                                 nn.TransformerDecoderLayer)


def _is_attention(module: nn.Module) -> bool:
    # Hugging Face attention classes (BertSelfAttention, ViTSelfAttention, ...) share no base class, so they
    # are recognised by name; torch's own are recognised by type.
    return isinstance(module, _ATTENTION_TYPES) or type(module).__name__.endswith(("SelfAttention", "Attention"))


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) or "Conv" in type(module).__name__


def detect_arch(model: nn.Module) -> str:
    """``transformer`` if any attention module is present, else ``cnn`` if any convolution, else ``mlp``."""
    modules = list(model.modules())
    if any(_is_attention(m) for m in modules):
        return "transformer"
    if any(_is_conv(m) for m in modules):
        return "cnn"
    return "mlp"


# --------------------------------------------------------------------------------------------- parameters
def _own_param_count(module: nn.Module) -> int:
    """Parameters held directly by ``module``, including the weights of quantized layers: torch.ao's packed
    params (``weight()``/``bias()``, or ``get_weight()``/``get_bias()`` for LSTM/GRU) and autocompress's int8
    embedding rows (a buffer) count like the float layer's."""
    count = sum(p.numel() for p in module.parameters(recurse=False))
    int8_rows = module._buffers.get("int8_weight")  # autocompress's Int8Embedding keeps its weight in a buffer
    if int8_rows is not None:
        count += int8_rows.numel()
    if not _is_quantized_module(module):
        return count
    weight_fn, bias_fn = getattr(module, "weight", None), getattr(module, "bias", None)
    if hasattr(module, "_packed_params") and callable(weight_fn) and not isinstance(weight_fn, nn.Module):
        bias = bias_fn() if callable(bias_fn) else None
        return count + weight_fn().numel() + (bias.numel() if bias is not None else 0)
    if callable(getattr(module, "get_weight", None)) and callable(getattr(module, "get_bias", None)):
        tensors = [*module.get_weight().values(), *module.get_bias().values()]
        return count + sum(t.numel() for t in tensors if t is not None)
    return count


def count_params(model: nn.Module) -> int:
    """All parameters of ``model``; for a float model this is ``sum(p.numel() for p in model.parameters())``."""
    return sum(_own_param_count(m) for m in model.modules())


# --------------------------------------------------------------------------------------------- FLOPs
class _KwargsAdapter(nn.Module):
    """Lets fvcore (which traces positional inputs) run a model that takes a dict of tensors."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args: torch.Tensor) -> Any:
        out = self.model(**dict(zip(self.keys, args)))
        return logits_of(out)


def _sdpa_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # scaled_dot_product_attention: Q·Kᵀ and A·V, each B·H·L·S·E MACs.
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    v = get_shape(inputs[2])
    if not q or not k or not v:
        return 0
    batch = 1
    for d in q[:-2]:
        batch *= d
    length, embed, source, value_dim = q[-2], q[-1], k[-2], v[-1]
    return batch * length * source * (embed + value_dim)


def _native_mha_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # nn.MultiheadAttention's inference fast path is one fused op: q/k/v projections, Q·Kᵀ, A·V, out projection.
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    if not q or not k or not v:
        return 0
    batch = q[0] if len(q) == 3 else 1
    length, embed, source = q[-2], q[-1], k[-2]
    projections = (length + source + v[-2]) * embed * embed + length * embed * embed
    attention = length * source * embed * 2
    return batch * (projections + attention)


def _fvcore_analysis(model: nn.Module, example_input: ModelInput):
    with warnings.catch_warnings():
        # fvcore scripts its focal loss at import, and torch 2.14 calls torch.jit.script deprecated: a line on
        # every user's console that is about neither their model nor ours.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    x = repeat_to_batch(example_input, 1)
    if isinstance(x, Mapping):
        keys = list(x.keys())
        target: nn.Module = _KwargsAdapter(model, keys)
        inputs = tuple(x[k] for k in keys)
        prefix = "model."
    else:
        target, inputs, prefix = model, (x,), ""
    analysis = FlopCountAnalysis(target, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_handle)
    analysis.set_op_handle("aten::_native_multi_head_attention", _native_mha_flop_handle)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis, prefix


def _float_twin(module: nn.Module) -> nn.Module | None:
    """A float module of the same shape as a torch.ao quantized module (for counting MACs), else None."""
    if not _is_quantized_module(module):
        return None
    if hasattr(module, "kernel_size") and hasattr(module, "in_channels"):
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(module.kernel_size)]
        return conv(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return nn.Linear(module.in_features, module.out_features)
    if hasattr(module, "num_features"):
        return nn.BatchNorm2d(module.num_features) if "2d" in type(module).__name__ else nn.BatchNorm3d(
            module.num_features)
    if isinstance(module, (nn.LSTM, nn.GRU)) or type(module).__name__ in ("LSTM", "GRU"):
        rnn = nn.LSTM if type(module).__name__ == "LSTM" else nn.GRU
        return rnn(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                   module.dropout, module.bidirectional)
    return nn.Identity()  # quant/dequant stubs, quantized dropout and activations: no MACs


def _add_relu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(a + b)


def _mul_relu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(a * b)


def _float_functional() -> dict[Any, Any]:
    """FX-converted int8 functional ops (a residual add, a product) -> float functions of their first two
    operands; the output scale and zero point that follow them are dropped."""
    q = torch.ops.quantized
    return {q.add: torch.add, q.add_relu: _add_relu, q.mul: torch.mul,
            q.mul_relu: _mul_relu, q.add_scalar: torch.add, q.mul_scalar: torch.mul}


def _float_shadow(model: nn.Module) -> nn.Module:
    """A float stand-in of a quantized model, with the same module names and shapes, for fvcore.

    fvcore cannot trace int8 modules (their packed weights are not tensors), so a quantized model is counted
    on this stand-in: each int8 module is replaced by the float module of the same shape, and the
    quantize/dequantize steps of an FX graph are removed. The MACs are therefore those of the float
    architecture, less the BatchNorm layers that quantization folded into convolutions.
    """
    shadow = copy.deepcopy(model)
    for name, module in list(shadow.named_modules()):
        twin = _float_twin(module) if name else None
        if twin is not None:
            shadow.set_submodule(name, twin)
    if isinstance(shadow, torch.fx.GraphModule):
        functional = _float_functional()
        for node in list(shadow.graph.nodes):
            is_quant = node.op == "call_function" and node.target in (torch.quantize_per_tensor,
                                                                       torch.quantize_per_channel)
            if is_quant or (node.op == "call_method" and node.target == "dequantize"):
                node.replace_all_uses_with(node.args[0])
                shadow.graph.erase_node(node)
            elif node.op == "call_function":  # a residual add of a quantized ResNet (quantized::add_relu)
                float_op = functional.get(getattr(node.target, "overloadpacket", node.target))
                if float_op is not None:
                    node.target, node.args, node.kwargs = float_op, node.args[:2], {}
        shadow.graph.eliminate_dead_code()
        shadow.recompile()
    return shadow


def module_flops(model: nn.Module, example_input: ModelInput) -> dict[str, int]:
    """MACs per module name (hierarchical, as fvcore's ``by_module``), for one input sample.

    A quantized model is counted on its float stand-in (see :func:`_float_shadow`): the same MACs as its
    float architecture, with BatchNorm folded away where quantization fused it.
    """
    if is_quantized(model):
        model = _float_shadow(model)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # fvcore traces the model with torch.jit: tracing warnings say nothing about the MAC count.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            analysis, prefix = _fvcore_analysis(model, example_input)
            by_module = analysis.by_module()
    finally:
        model.train(was_training)
    if not prefix:
        return dict(by_module)
    return {("" if k == "model" else k[len(prefix):]): v for k, v in by_module.items()
            if k == "model" or k.startswith(prefix)}


def count_flops(model: nn.Module, example_input: ModelInput) -> int:
    """Total MACs of one forward pass on one input sample."""
    return int(module_flops(model, example_input).get("", 0))


# --------------------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class LayerStats:
    """One layer type: how many modules of it, their parameters and their MACs (own work, not children's)."""

    type: str
    count: int
    params: int
    flops: int


def layer_breakdown(model: nn.Module, example_input: ModelInput,
                    flops_by_module: dict[str, int] | None = None) -> list[LayerStats]:
    """Parameters and MACs per layer type. The per-type sums equal :func:`count_params` and the FLOPs total.

    A module's own MACs are its fvcore total minus its children's, so work done in a parent's ``forward``
    (the attention matmuls of ``BertSelfAttention``, say) is attributed to the parent's type.
    """
    if flops_by_module is None:
        flops_by_module = module_flops(model, example_input)
    counts: dict[str, int] = defaultdict(int)
    params: dict[str, int] = defaultdict(int)
    flops: dict[str, int] = defaultdict(int)
    for name, module in model.named_modules():
        own_params = _own_param_count(module)
        total = flops_by_module.get(name, 0)
        children = sum(flops_by_module.get(f"{name}.{c}" if name else c, 0) for c, _ in module.named_children())
        own_flops = max(total - children, 0)
        is_leaf = next(module.children(), None) is None
        if not (is_leaf or own_params or own_flops):
            continue  # pure containers (Sequential, ModuleList, ...) are not layers
        kind = type(module).__name__
        counts[kind] += 1
        params[kind] += own_params
        flops[kind] += own_flops
    rows = [LayerStats(k, counts[k], params[k], flops[k]) for k in counts]
    return sorted(rows, key=lambda r: (-r.params, -r.flops, r.type))


# --------------------------------------------------------------------------------------------- size
def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the same measure for float and quantized models."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def serialized_size_mb(model: nn.Module) -> float:
    """Serialized size in MB (10⁶ bytes)."""
    return serialized_size_bytes(model) / 1e6


# --------------------------------------------------------------------------------------------- latency
_QUANTIZED_MODULE_PREFIXES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")


def _is_quantized_module(module: nn.Module) -> bool:
    # Fused int8 modules (ConvReLU2d, LinearReLU from FX graph mode) live in torch.ao.nn.intrinsic.quantized.
    return type(module).__module__.startswith(_QUANTIZED_MODULE_PREFIXES)


def is_quantized(model: nn.Module) -> bool:
    """True when any module is a torch.ao quantized (int8) module; such models run on CPU only."""
    return any(_is_quantized_module(m) for m in model.modules())


def runs_int8(model: nn.Module) -> bool:
    """True for torch.ao int8 modules inside, or a program whose quantization record is int8 (for the energy
    estimate's cost per MAC): :func:`autocompress.export.formats.is_int8`, imported late (export imports this
    module)."""
    from .export.formats import is_int8

    return is_int8(model)


def default_threads() -> int:
    """Threads for measuring when none are given: ``OMP_NUM_THREADS`` if set, else up to 4 of the cores."""
    from .threads import available_cores, env_threads

    return env_threads() or max(1, min(4, available_cores()))


# glibc serves large blocks with mmap below a threshold it raises as such blocks are freed, and returns the top of
# the heap to the system; a fresh process then page-faults on every batch-64 activation. Torch fp32 on reviews:
# 551-594 ms per batch in a fresh process, 452 ms after some training in the same process, 468-475 ms with both
# thresholds fixed: the original's latency, and every ratio over it, depended on what the process had done before.
# ONNX Runtime allocates from its own arena and is unaffected.
MALLOC_THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def steady_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (once per process) so that timed passes reuse heap memory whatever the
    process did before; False where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """``threads`` intra-op threads for timing (restored after), with :func:`steady_allocator`'s heap."""
    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_latency(model: nn.Module, example_input: ModelInput, batch: int = 1,
                    device: str | torch.device = "cpu", warmup: int = WARMUP_RUNS, runs: int = TIMED_RUNS,
                    threads: int | None = None) -> float:
    """Median wall time in ms of one forward pass at ``batch``, after ``warmup`` untimed passes.

    Runs under ``torch.inference_mode`` with a fixed intra-op thread count. Quantized models always run on CPU.
    """
    if warmup < 5 or runs < 30:
        raise ValueError("latency needs at least 5 warm-up runs and 30 timed runs")
    dev = torch.device("cpu") if is_quantized(model) else resolve_device(device)
    x = to_device(repeat_to_batch(example_input, batch), dev)
    model = model.to(dev) if not is_quantized(model) else model
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: list[float] = []
    try:
        with fixed_threads(threads or default_threads()), torch.inference_mode():
            for i in range(warmup + runs):
                sync()
                start = time.perf_counter()
                call_model(model, x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------- energy
# Energy per MAC from Horowitz (ISSCC 2014, 45 nm): an fp32 multiply-add costs about 4.6 pJ, an int8 one about
# 0.23 pJ. Static power of the active cores is charged for the measured wall time.
PJ_PER_MAC = {"fp32": 4.6, "int8": 0.23}
WATTS_PER_CORE = 5.0
RAPL_ROOT = "/sys/class/powercap"


def _rapl_energy_uj() -> int | None:
    """Package energy counter (µJ) from Linux RAPL, or None where the machine does not expose it."""
    total, found = 0, False
    try:
        for entry in sorted(os.listdir(RAPL_ROOT)):
            if entry.count(":") == 1 and entry.startswith("intel-rapl"):
                with open(os.path.join(RAPL_ROOT, entry, "energy_uj")) as fh:
                    total += int(fh.read().strip())
                    found = True
    except (OSError, ValueError):
        return None
    return total if found else None


def estimate_energy_mj(latency_ms: float, flops: int, batch: int, threads: int, quantized: bool) -> float:
    """An energy **estimate** in mJ for one forward pass of ``batch`` samples, from latency and MACs."""
    dynamic = flops * batch * PJ_PER_MAC["int8" if quantized else "fp32"] * 1e-9  # pJ -> mJ
    static = WATTS_PER_CORE * threads * latency_ms  # W * ms = mJ
    return dynamic + static


def measure_energy(model: nn.Module, example_input: ModelInput, latency_ms: float, flops: int,
                   batch: int = 64, threads: int | None = None, runs: int = TIMED_RUNS) -> dict[str, Any]:
    """Energy of one batch-``batch`` forward pass: measured with RAPL where readable, else estimated.

    The result says which (``method``: ``rapl`` or ``estimate``); an estimate is labelled as such everywhere.
    """
    threads = threads or default_threads()
    quantized = runs_int8(model)
    if _rapl_energy_uj() is not None:
        x = repeat_to_batch(to_device(example_input, "cpu"), batch)
        was_training = model.training
        model.eval()  # inference, as deployed: dropout off, BatchNorm on its running statistics
        try:
            with fixed_threads(threads), torch.inference_mode():
                for _ in range(WARMUP_RUNS):
                    call_model(model, x)
                start = _rapl_energy_uj()
                for _ in range(runs):
                    call_model(model, x)
                end = _rapl_energy_uj()
        finally:
            model.train(was_training)
        if start is not None and end is not None and end > start:
            return {"batch_64" if batch == 64 else f"batch_{batch}": (end - start) / 1000.0 / runs,
                    "method": "rapl"}
    return {"batch_64" if batch == 64 else f"batch_{batch}":
            estimate_energy_mj(latency_ms, flops, batch, threads, quantized), "method": "estimate"}


# --------------------------------------------------------------------------------------------- metric
def predict(model: nn.Module, loader: Any, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of ``model`` over a loader, concatenated on CPU."""
    dev = torch.device("cpu") if is_quantized(model) else resolve_device(device)
    if not is_quantized(model):
        model = model.to(dev)
    was_training = model.training
    model.eval()
    all_logits, all_targets = [], []
    try:
        with torch.inference_mode():
            for x, y in loader:
                all_logits.append(logits_of(call_model(model, to_device(x, dev))).float().cpu())
                all_targets.append(torch.as_tensor(y).cpu())
    finally:
        model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_targets)


def evaluate(model: nn.Module, loader: Any, metric: Metric, device: str | torch.device = "cpu") -> float:
    """The task metric of ``model`` on every sample of ``loader``."""
    logits, targets = predict(model, loader, device)
    return metric(logits, targets)


# --------------------------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class Profile:
    """What a model is and what it costs, as measured once. ``to_dict`` is the stable ``--json`` form."""

    arch_type: str
    layers: tuple[LayerStats, ...]
    params: int
    flops: int
    size_mb: float
    latency_ms: dict[str, float]
    metric: dict[str, Any]
    device: str
    threads: int
    task: str = ""
    energy_mj: dict[str, Any] = field(default_factory=dict)
    flops_unit: str = "MAC"
    schema_version: int = PROFILE_SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    components: dict[str, dict[str, int]] = field(default_factory=dict)  # transformers: see .components

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        data = dict(data)
        data["layers"] = tuple(LayerStats(**layer) for layer in data["layers"])
        return cls(**data)

    def share(self, layer_type: str, of: str = "params") -> float:
        """The fraction of parameters (``of="params"``) or MACs (``of="flops"``) held by one layer type."""
        total = getattr(self, of)
        return sum(getattr(r, of) for r in self.layers if r.type == layer_type) / total if total else 0.0


def runtime_program_bytes(model: nn.Module) -> bytes | None:
    """The file a model runs from when it runs outside torch (an ONNX Runtime program: its ``.onnx`` bytes),
    else None."""
    data = getattr(model, "onnx_bytes", None)
    return data if isinstance(data, bytes) and getattr(model, "format", None) == "onnx" else None


def profile_model(model: nn.Module, example_input: ModelInput, eval_loader: Any = None,
                  metric: Metric | None = None, device: str | torch.device = "auto",
                  threads: int | None = None, task_name: str = "", structure: nn.Module | None = None) -> Profile:
    """Measure a model: architecture, per-layer-type params and MACs, size, latency and (if given) the metric.

    The model is not modified: measurement runs on a copy moved to the measuring device. A program that runs
    outside torch (an ONNX Runtime session, :func:`runtime_program_bytes`) is timed and scored where it runs,
    its size is its file's bytes, and its parameters, MACs and layers are counted on ``structure``, the torch
    model it was made from (int8 does the same multiply-adds).
    """
    program = runtime_program_bytes(model)
    if program is not None and structure is None:
        raise ValueError("profile_model of a runtime program needs structure=<the torch model it was made from>")
    dev = torch.device("cpu") if is_quantized(model) or program is not None else resolve_device(device)
    threads = threads or default_threads()
    counted = copy.deepcopy(model if program is None else structure)
    cpu_input = to_device(example_input, "cpu")
    if not is_quantized(counted):
        counted = counted.cpu()
    subject = counted if program is None else model  # what runs: latency, energy, metric
    flops_by_module = module_flops(counted, cpu_input)
    layers = tuple(layer_breakdown(counted, cpu_input, flops_by_module))
    latency = {f"batch_{b}": measure_latency(subject, cpu_input, b, dev, threads=threads) for b in LATENCY_BATCHES}
    flops = int(flops_by_module.get("", 0))
    energy = measure_energy(subject, cpu_input, latency["batch_64"], flops, 64, threads) if dev.type == "cpu" \
        else {"batch_64": None, "method": "none (CPU only)"}
    metric_info: dict[str, Any] = {"name": None, "value": None}
    if eval_loader is not None and metric is not None:
        metric_info = {"name": metric.name, "value": evaluate(subject, eval_loader, metric, dev),
                       "higher_is_better": metric.higher_is_better, "scale": metric.scale}
    return Profile(
        arch_type=detect_arch(counted),
        layers=layers,
        params=count_params(counted),
        flops=flops,
        size_mb=serialized_size_mb(counted) if program is None else len(program) / 1e6,
        latency_ms=latency,
        energy_mj=energy,
        metric=metric_info,
        device=dev.type,
        threads=threads,
        task=task_name,
        components=components_dict(component_breakdown(counted, flops_by_module))
        if detect_arch(counted) == "transformer" else {},
    )


def profile_task(task: Any, device: str | torch.device = "auto", threads: int | None = None) -> Profile:
    """:func:`profile_model` on a task's model, example input, evaluation set and metric."""
    return profile_model(task.model, task.example_input, task.eval_loader(), task.resolved_metric,
                         device=device, threads=threads, task_name=task.name)
