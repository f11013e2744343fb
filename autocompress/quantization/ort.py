"""The ONNX Runtime engine: the float model exported to ONNX, quantized with ONNX Runtime's own tools, and run
in an ONNX Runtime session, so that what is measured is what a user deploys there.

- ``none``: the float ONNX program.
- ``dynamic``: ``quantize_dynamic``: int8 weights for MatMul/Gemm with a constant weight (``MatMulConstBOnly``,
  as torch.ao's dynamic mode: attention's activation-by-activation MatMuls stay float), activations quantized
  at run time (MatMulInteger / DynamicQuantizeLinear).
- ``static``: ``quantize_static`` in QDQ format, activation ranges calibrated (MinMax) on
  ``calibration_batches`` training batches; int8 weights (``QInt8``, symmetric) and uint8 activations, one
  weight scale per output channel unless ``weight_granularity="per_tensor"``; in attention models only the
  layers with weights and the embedding gathers (see ``_ATTENTION_OP_TYPES``). ONNX Runtime fuses the
  QuantizeLinear/DequantizeLinear pairs around Conv, MatMul and Gemm into its int8 kernels when the session is
  created (graph optimisation), so the QDQ file is the portable form and the session runs int8.
- ``qat``: torch.ao's fake-quant training (:func:`~autocompress.quantization.prepare_qat` with an
  ONNX-expressible qconfig: uint8 activations 0-255, symmetric per-channel int8 weights), then
  :func:`convert_qat`: BatchNorm folded into the fake-quantized convolutions as torch.ao's own convert would,
  the fake-quant model exported as QDQ ONNX (each FakeQuantize a QuantizeLinear/DequantizeLinear pair with the
  ranges learned in training), and each weight's QuantizeLinear folded into an int8 initializer, so the file
  stores int8 weights.

The result's model is a :class:`~autocompress.export.formats.LoadedProgram` around the session, callable like
the torch model, carrying the ``.onnx`` bytes it runs (``onnx_bytes``, exported unchanged) and the quantization
record in its metadata. The session runs with fixed threads (:func:`session`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._tensors import ModelInput
from ..errors import QuantizationError, describe_error
from .config import (DynamicQuantization, NoQuantization, QATQuantization, QuantizationConfig,
                     StaticQuantization)
from .result import QuantizeResult

ENGINE = "onnxruntime"


@contextmanager
def _quiet_ort() -> Iterator[None]:
    # ORT's quantization tools advise pre-processing on the root logger on every call.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def session(onnx_bytes: bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``onnx_bytes`` with ``threads`` intra-op threads (default: the same as
    torch's measurements, :func:`autocompress.profile.default_threads`) and one inter-op thread."""
    import onnxruntime

    from ..profile import default_threads

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers of pruned graphs
    return onnxruntime.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def program(onnx_bytes: bytes, example_input: ModelInput, record: dict[str, Any],
            threads: int | None = None) -> nn.Module:
    """``onnx_bytes`` with the quantization record and input names written into its metadata (what
    :func:`autocompress.export.load` reads back), in a session, wrapped to be called like the torch model. The
    bytes it carries are the ones the session runs: a study stores and exports exactly those."""
    import json

    import onnx

    from ..export.formats import META_NAME, LoadedProgram, input_keys

    meta = {"quantization": record, "input_keys": input_keys(example_input)}
    proto = onnx.load_from_string(onnx_bytes)
    for prop in [p for p in proto.metadata_props if p.key == META_NAME]:
        proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_NAME, json.dumps(meta)
    final = proto.SerializeToString()
    loaded = LoadedProgram("onnx", session(final, threads), meta["input_keys"], meta)
    loaded.onnx_bytes = final
    return loaded.eval()


def float_onnx(model: nn.Module, example_input: ModelInput) -> bytes:
    """The float model as ONNX bytes, or a one-line error naming what the exporter could not convert."""
    from ..export.formats import _onnx_bytes, silent

    model = model.eval()
    try:
        with silent(), torch.no_grad():
            return _onnx_bytes(model, example_input, {})
    except Exception as exc:  # the exporters raise many types; the message names the operator
        raise QuantizationError(f"a model ONNX cannot export ({_first_line(exc)})",
                                "a model made of operators with ONNX equivalents",
                                "use the torch backend, or replace that operator") from exc


def _first_line(exc: BaseException) -> str:
    text = describe_error(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over the first ``batches`` batches of a torch loader."""

    def __init__(self, loader: Iterable[Any], names: list[str], batches: int) -> None:
        self.feeds: list[dict[str, Any]] = []
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            tensors = [inputs[n] for n in names] if isinstance(inputs, dict) else [inputs]
            self.feeds.append({n: t.detach().cpu().numpy() for n, t in zip(names, tensors)})
        self._next = iter(self.feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self.feeds)


# Attention models (a Softmax in the graph): static int8 only where a weight is (MatMul with a constant weight,
# Gemm, Conv) and the embedding gathers (their tables stored in 8 bits, per tensor: ONNX Runtime quantizes a
# gathered table as it does activations, uint8). Quantizing every op's activations, LayerNorm and the residual
# adds included, cost the reviews encoder 10 points (0.715 -> 0.616, MinMax on 8 batches); the weighted ops
# alone lose 1.6 and leave the word embeddings float (58.9 MB); with the gathers the file is 23.1 MB (3.9x
# smaller than fp32), accuracy 0.715, batch-1 latency unchanged (4.9 ms).
# Other models quantize every op ONNX Runtime can (on mnist's ResNet-8 as accurate, and its adds stay int8).
_ATTENTION_OP_TYPES = ["MatMul", "Gemm", "Conv", "Gather"]


def _static_op_types(onnx_bytes: bytes) -> list[str] | None:
    import onnx

    ops = {node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node}
    return _ATTENTION_OP_TYPES if "Softmax" in ops else None


def dynamic_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 of the ONNX file ``source`` into ``target``: only layers with a weight (MatMul
    with a constant B, Gemm), as torch's dynamic int8 does; ORT would otherwise also quantize attention's
    activation-by-activation MatMuls, which torch keeps float (top-1 agreement fell to 0.86 on the reviews task)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_ort():
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         extra_options={"MatMulConstBOnly": True})


class _FoldedConvBn(nn.Module):
    """A QAT Conv-BatchNorm(-ReLU) with its BatchNorm folded into the weight and bias, as torch.ao's convert
    folds it: ``conv(x, fake_quant(w * s)) + (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. In eval
    mode the QAT module computes exactly this (conv of the same fake-quantized folded weight, divided by ``s``,
    then the BatchNorm), so the exported graph is one Conv whose weight ONNX Runtime can run in int8."""

    def __init__(self, module: nn.Module, relu: bool) -> None:
        from .torch_ao import batchnorm_scale

        super().__init__()
        bn = module.bn
        scale = batchnorm_scale(bn)
        shape = [-1] + [1] * (module.weight.dim() - 1)
        bias = module.bias if module.bias is not None else torch.zeros_like(bn.running_mean)
        self.conv = module
        self.weight = nn.Parameter((module.weight * scale.reshape(shape)).detach())
        self.bias = nn.Parameter(((bias - bn.running_mean) * scale + bn.bias).detach())
        self.weight_fake_quant = module.weight_fake_quant
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)
        return torch.relu(y) if self.relu else y


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    from torch.ao.nn.intrinsic.qat import ConvBn1d, ConvBn2d, ConvBn3d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d

    folded = {ConvBn1d: False, ConvBn2d: False, ConvBn3d: False,
              ConvBnReLU1d: True, ConvBnReLU2d: True, ConvBnReLU3d: True}
    for name, module in list(model.named_modules()):
        if type(module) in folded:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    _FoldedConvBn(module, folded[type(module)]))
    return model


def _int8_weights(onnx_bytes: bytes) -> bytes:
    """``onnx_bytes`` with every QuantizeLinear of a constant (a weight) replaced by its int8 result: the same
    QDQ program, storing int8 weights instead of float ones (ONNX rounds half to even, as torch's fake quant)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or \
                not all(name in constants for name in node.input[:3]):
            continue
        x, scale, zero = (constants[name] for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and x.ndim > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(x / scale) + zero.astype(np.int32), info.min, info.max).astype(zero.dtype)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    # Nodes and initializers nothing reads any more: the float weights and the constants that fed them.
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return proto.SerializeToString()


def convert_qat(prepared: nn.Module, example_input: ModelInput | None, calibration_loader: Iterable[Any] | None = None,
                calibration_batches: int = 8, progress: bool = False) -> nn.Module:
    """The ONNX Runtime program of a model :func:`~autocompress.quantization.prepare_qat` returned for this
    engine, and trained: its fake-quant model exported as QDQ ONNX with int8 weights (see the module
    docstring); ``prepared`` is not modified."""
    from torch.ao.quantization import disable_observer

    from ..config import Config
    from .torch_ao import observed_copy, qat_record

    info = qat_record(prepared)
    if example_input is None:
        raise QuantizationError("ONNX Runtime QAT convert without an example input", "the model's example input",
                                "pass example_input=task.example_input")
    config = Config.from_dict(info["config"])
    subject = observed_copy(prepared, calibration_loader, calibration_batches, progress).eval()
    subject.apply(disable_observer)  # the ranges learned in training, frozen (an observer would update them)
    subject = _fold_batchnorm(subject)
    qdq = _int8_weights(float_onnx(subject, example_input))
    record = {"mode": "qat", "engine": ENGINE, "config": config.to_dict()}
    return program(qdq, example_input, record)


def quantize(model: nn.Module, config: QuantizationConfig, calibration_loader: Iterable[Any] | None = None,
             example_input: ModelInput | None = None, *, train_fn: Any = None,
             progress: bool = True) -> QuantizeResult:
    """The engine's entry (see :func:`autocompress.quantization.quantize`): a QuantizeResult whose model runs
    in ONNX Runtime."""
    if example_input is None:
        raise QuantizationError("ONNX Runtime quantization without an example input", "the model's example input",
                                "pass example_input=task.example_input")
    if isinstance(config, QATQuantization):
        from .torch_ao import prepare_qat

        if train_fn is None:
            raise QuantizationError("qat quantization without a training function",
                                    "train_fn(prepared_model) that fine-tunes the model in place",
                                    "pass train_fn=..., or call prepare_qat(), train, then convert()")
        prepared = prepare_qat(model, config, example_input)
        train_fn(prepared)
        return QuantizeResult(model=convert_qat(prepared, example_input, calibration_loader, progress=progress),
                              config=config, graph_mode="onnx")
    if isinstance(config, StaticQuantization) and calibration_loader is None:
        raise QuantizationError("static quantization without calibration data", "a loader of training batches",
                                "pass calibration_loader=task.train_loader()")
    float_bytes = float_onnx(model, example_input)
    record: dict[str, Any] = {"mode": config.MODE, "engine": ENGINE, "config": config.to_dict()}
    if isinstance(config, NoQuantization):
        return QuantizeResult(model=program(float_bytes, example_input, record), config=config, graph_mode="onnx")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as folder, _quiet_ort():
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(float_bytes)
        done = 0
        try:
            if isinstance(config, DynamicQuantization):
                dynamic_int8(source, target)
            else:
                assert isinstance(config, StaticQuantization)
                names = [i.name for i in session(float_bytes, 1).get_inputs()]
                reader = _Calibration(calibration_loader or (), names, config.calibration_batches)
                done = len(reader.feeds)
                if done == 0:
                    raise QuantizationError("an empty calibration loader", "at least one batch",
                                            "pass the training loader")
                quantize_static(source, target, reader, quant_format=QuantFormat.QDQ,
                                per_channel=config.weight_granularity != "per_tensor",
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=_static_op_types(float_bytes),
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                               "MatMulConstBOnly": True})
        except QuantizationError:
            raise
        except Exception as exc:
            raise QuantizationError(f"ONNX Runtime {config.MODE} quantization failed ({_first_line(exc)})",
                                    "a model ONNX Runtime's quantizer accepts",
                                    "try --quantization dynamic, or the torch backend") from exc
        int8_bytes = target.read_bytes()
    return QuantizeResult(model=program(int8_bytes, example_input, record), config=config,
                          calibration_batches=done, graph_mode="onnx")
