"""Int8 quantization behind one interface, with an engine per runtime.

    result = quantize(model, quantization_config("static"), task.train_loader(), task.example_input)
    result.model(x)                      # the int8 model, called like the float one

The config record (:mod:`.config`: one frozen, versioned record per mode, ``none``, ``dynamic``, ``static``,
``qat``) says what to do; its ``backend`` says which engine does it:

- ``x86`` (default), ``fbgemm``, ``qnnpack``, ``onednn``, ``gpu``: **torch.ao** (:mod:`.torch_ao`), int8 torch
  modules run by torch. ``gpu`` keeps the float model (torch.ao's int8 kernels are CPU only).
- ``onnxruntime``: **ONNX Runtime** (:mod:`.ort`): the float model exported to ONNX, quantized with ONNX
  Runtime's tools, run in an ONNX Runtime session; the model returned carries the ``.onnx`` bytes it runs.

Each engine is one module and is imported only when used; removing torch.ao later means removing
:mod:`.torch_ao` and its entry in :data:`ENGINES`. QAT's two phases (:func:`prepare_qat`, then training, then
:func:`convert`) and :func:`requantize` (rebuilding a saved int8 model) are torch.ao's; on the ONNX Runtime
engine, :func:`convert` exports the trained fake-quant model as QDQ ONNX instead of converting it in torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from .._tensors import ModelInput
from ..errors import QuantizationError
from .config import (BACKENDS, CPU_BACKENDS, MODES, DynamicQuantization, NoQuantization, QATQuantization,
                     QuantizationConfig, StaticQuantization, quantization_config)
from .result import QuantizeResult
from . import torch_ao
from .torch_ao import (ENGINE_API, GPU_SKIP_REASON, QUANTIZERS, observer_counts, prepare_qat, quantization_info,
                       quiet, requantize)

# Engine name -> the module whose ``quantize`` it is (imported on first use: onnxruntime is not loaded by users of
# the torch engine).
ENGINES: dict[str, str] = {"torch.ao": "autocompress.quantization.torch_ao",
                           "onnxruntime": "autocompress.quantization.ort"}


def engine_name(config: QuantizationConfig) -> str:
    """The engine that applies ``config``: ``onnxruntime`` for that backend, else ``torch.ao``."""
    return "onnxruntime" if config.backend == "onnxruntime" else "torch.ao"


def quantize(model: nn.Module, config: QuantizationConfig, calibration_loader: Iterable[Any] | None = None,
             example_input: ModelInput | None = None, *, train_fn: Callable[[nn.Module], Any] | None = None,
             progress: bool = True) -> QuantizeResult:
    """Quantize a copy of ``model`` as ``config`` says, with the engine its backend names; the caller's model is
    not modified.

    ``static`` needs ``calibration_loader`` (batches of ``(input, target)`` or of inputs) and
    ``example_input``; ``qat`` needs ``train_fn`` (or use :func:`prepare_qat`/:func:`convert`); the ONNX Runtime
    engine needs ``example_input`` for every mode (it exports the model).
    """
    if not isinstance(config, QuantizationConfig):
        raise QuantizationError(f"config of type {type(config).__name__}", "a QuantizationConfig",
                                "build one with quantization_config(mode)")
    engine = importlib.import_module(ENGINES[engine_name(config)])
    return engine.quantize(model, config, calibration_loader, example_input, train_fn=train_fn, progress=progress)


def convert(prepared: nn.Module, calibration_loader: Iterable[Any] | None = None, calibration_batches: int = 8,
            progress: bool = False, example_input: ModelInput | None = None) -> nn.Module:
    """The int8 model of a model :func:`prepare_qat` returned (and trained), by the engine its config names:
    torch.ao's int8 modules, or on the ONNX Runtime engine an ONNX Runtime program (which needs
    ``example_input`` to export). ``prepared`` is not modified; a model that saw no data is calibrated on
    ``calibration_loader`` first."""
    config = torch_ao.qat_record(prepared)["config"]
    if config.get("backend") == "onnxruntime":
        engine = importlib.import_module(ENGINES["onnxruntime"])
        return engine.convert_qat(prepared, example_input, calibration_loader, calibration_batches, progress)
    return torch_ao.convert(prepared, calibration_loader, calibration_batches, progress)


__all__ = ["BACKENDS", "CPU_BACKENDS", "ENGINES", "ENGINE_API", "GPU_SKIP_REASON", "MODES", "QUANTIZERS",
           "DynamicQuantization", "NoQuantization", "QATQuantization", "QuantizationConfig", "QuantizeResult",
           "StaticQuantization", "convert", "engine_name", "observer_counts", "prepare_qat", "quantization_config",
           "quantization_info", "quantize", "quiet", "requantize"]
