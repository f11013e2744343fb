"""The torch.ao engine: int8 models made of torch.ao's quantized modules, run by torch on CPU.

This is the only module that imports torch.ao (with :mod:`.size`'s look at fused modules): removing torch.ao
later means removing this engine. Its deprecation warnings are filtered here and never reach users.

Each mode is a frozen config record (:mod:`autocompress.quantization.config`); the function that applies it
is registered under the config type in :data:`QUANTIZERS` (no dispatcher on mode names).

- ``dynamic``: int8 weights for Linear (and LSTM/GRU) layers, activations quantized at run time. Module swap
  (eager mode), so it works on any model, Hugging Face transformers included. Convolutions stay float.
- ``static``: int8 weights and activations for convolutions and linear layers; activation ranges calibrated
  on ``calibration_batches`` training batches. FX graph mode: the model is traced, so ``torch.flatten`` and
  other functional calls need no edits, and Conv-BN(-ReLU) are fused (BatchNorm folded) during prepare.
  Models that FX cannot trace (data-dependent control flow) fall back to eager mode (the whole model wrapped
  in quant/dequant stubs, no fusion).
  ``weight_granularity`` chooses one weight scale per output channel or per layer (``auto``: per layer on narrow
  layers, :mod:`autocompress.quantization.size`); the layers given one scale are listed in the model's record.
- ``qat``: two phases. :func:`prepare_qat` returns a model with fake-quant modules that any training loop
  (the distillation loop) can train, for as many epochs as that loop runs; :func:`convert` turns it into the
  int8 model. A model that saw no data after prepare_qat (zero training epochs) has no activation ranges:
  convert calibrates it on ``calibration_loader``, or refuses with a one-line error, never silently using the
  observers' placeholder ranges.

Backends ``x86`` (default), ``fbgemm``, ``qnnpack``, ``onednn`` select torch's int8 kernels; int8 models run on
CPU only. The ``gpu`` backend skips quantization: the float model is returned and the result (and the model's
quantization record) carries ``skipped_reason``.

Every function works on a deep copy: the caller's model is never modified. Its "observer saw no data" warning
is filtered only in :func:`requantize`, where the ranges come from the saved state dict. A quantized model
carries a JSON record (:func:`quantization_info`): the config, the graph mode and the float architecture it came
from, which :mod:`autocompress.export` needs to rebuild the int8 structure on load (:func:`requantize`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _arch
from .._tensors import ModelInput, call_model, to_device
from ..config import Config, HandlerRegistry
from ..errors import QuantizationError, describe_error
from ..progress import progress_bar
from .config import DynamicQuantization, NoQuantization, QATQuantization, QuantizationConfig, StaticQuantization
from .result import QuantizeResult
from .size import per_tensor_layers

# torch.ao emits deprecation notices (and quantized-tensor notices) on import and on every call.
_QUIET_MESSAGES = (
    r"(?s).*torch\.ao\.quantization is deprecated",
    r"(?s).*reduce_range will be deprecated",
    r"(?s).*quantized tensor creation functions",
    r"(?s).*TypedStorage is deprecated",
    r"(?s).*torch\.ao\.quantization",
    r"(?s).*FX graph mode quantization",
)


# Converting a model whose observer saw no data: placeholder ranges. Expected only in requantize().
_UNOBSERVED_MESSAGE = r"(?s).*must run observer before calling calculate_qparams"


@contextmanager
def quiet() -> Iterator[None]:
    """Hide torch.ao's deprecation notices (used by this module and by export)."""
    with warnings.catch_warnings():
        for message in _QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        yield


with quiet():
    from torch.ao.quantization import (
        QuantWrapper,
        get_default_qat_qconfig,
        get_default_qat_qconfig_mapping,
        get_default_qconfig,
        get_default_qconfig_mapping,
        quantize_dynamic,
    )
    from torch.ao.quantization import convert as eager_convert
    from torch.ao.quantization import prepare as eager_prepare
    from torch.ao.quantization import prepare_qat as eager_prepare_qat
    from torch.ao.quantization.observer import ObserverBase
    from torch.ao.quantization.observer import default_weight_observer as per_tensor_weight_observer
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

    # torch warns once per process, from C++, that quantized tensors are deprecated. Left alone it fires on the
    # first int8 forward, which may run inside a TorchScript program that prints it straight to stderr; this
    # spends the one warning here, where it is filtered.
    torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)

#: The exact torch.ao functions this module depends on (tests assert they exist and are callable).
ENGINE_API: dict[str, Callable[..., Any]] = {
    "quantize_dynamic": quantize_dynamic, "prepare_fx": prepare_fx, "prepare_qat_fx": prepare_qat_fx,
    "convert_fx": convert_fx, "get_default_qconfig_mapping": get_default_qconfig_mapping,
    "get_default_qat_qconfig_mapping": get_default_qat_qconfig_mapping, "get_default_qconfig": get_default_qconfig,
    "get_default_qat_qconfig": get_default_qat_qconfig, "QuantWrapper": QuantWrapper, "prepare": eager_prepare,
    "prepare_qat": eager_prepare_qat, "convert": eager_convert,
}

GPU_SKIP_REASON = ("int8 kernels of torch.ao run on CPU only, so the gpu backend keeps the float model "
                   "(use fp16/bf16 autocast on GPU instead)")
INFO_ATTR = "_autocompress_quantization"
_PRESERVED_KEY = "_user_preserved_attributes"  # torch.fx.graph_module._USER_PRESERVED_ATTRIBUTES_KEY
INFO_VERSION = 1
PER_TENSOR_KEY = "per_tensor_weights"  # info key: layers whose int8 weight has one scale (static, not per_channel)

_DYNAMIC_LAYERS: dict[str, type[nn.Module]] = {"linear": nn.Linear, "lstm": nn.LSTM, "gru": nn.GRU}


def quantization_info(model: nn.Module) -> dict[str, Any] | None:
    """The JSON record a quantized (or QAT-prepared) model carries, or None for a plain model."""
    info = model.__dict__.get(INFO_ATTR)
    return copy.deepcopy(info) if info is not None else None


def _attach(model: nn.Module, config: QuantizationConfig, graph_mode: str, float_arch: dict[str, Any],
            stage: str, skipped_reason: str | None = None, per_tensor: list[str] | None = None) -> nn.Module:
    info = {
        "version": INFO_VERSION, "mode": config.MODE, "config": config.to_dict(), "graph_mode": graph_mode,
        "stage": stage, "skipped_reason": skipped_reason, "float_architecture": float_arch,
    }
    if per_tensor:
        info[PER_TENSOR_KEY] = list(per_tensor)
    model.__dict__[INFO_ATTR] = info
    if isinstance(model, torch.fx.GraphModule):
        # GraphModule.__deepcopy__ rebuilds the module and keeps only the attributes listed here.
        model.meta.setdefault(_PRESERVED_KEY, {})[INFO_ATTR] = info
    return model


def _detach(model: nn.Module) -> None:
    model.__dict__.pop(INFO_ATTR, None)
    if isinstance(model, torch.fx.GraphModule):
        model.meta.get(_PRESERVED_KEY, {}).pop(INFO_ATTR, None)


# --------------------------------------------------------------------------------------------- helpers
def _use_engine(backend: str) -> None:
    # The int8 engine is process-global in torch.ao: the quantized model runs with whichever is set.
    engines = torch.backends.quantized.supported_engines
    if backend not in engines:
        raise QuantizationError(f"int8 engine {backend!r}", f"one this torch build supports ({', '.join(engines)})",
                                "pick another backend")
    if torch.backends.quantized.engine != backend:
        torch.backends.quantized.engine = backend


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu()


def _example(example_input: ModelInput | None, what: str) -> ModelInput:
    if example_input is None:
        raise QuantizationError(f"{what} without example_input", "one batch of model input",
                                "pass example_input=task.example_input")
    return to_device(example_input, "cpu")


def _fx_args(x: ModelInput) -> tuple[Any, ...]:
    if isinstance(x, Mapping):
        raise TypeError("FX graph mode traces positional inputs only")
    return (x,)


def _batch_input(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (list, tuple)) and len(batch) == 2 else batch


def _calibrate(model: nn.Module, loader: Iterable[Any], batches: int, progress: bool) -> int:
    done = 0
    with torch.no_grad(), progress_bar("calibrating int8 activation ranges", total=batches, enabled=progress) as bar:
        for batch in loader:
            if done >= batches:
                break
            call_model(model, to_device(_batch_input(batch), "cpu"))
            done += 1
            bar.advance()
    return done


def _check_runs(model: nn.Module, x: ModelInput) -> None:
    # On a copy: the observers of ``model`` must see calibration or training data, not this one example.
    with torch.no_grad():
        call_model(copy.deepcopy(model).eval(), x)


ONNX_QAT_BACKEND = "onnxruntime"  # QAT whose fake-quant model is exported as QDQ ONNX, not converted here


def _onnx_qat_qconfig() -> Any:
    """QAT fake-quant that ONNX can express as QuantizeLinear/DequantizeLinear and ONNX Runtime fuses into its
    int8 kernels: uint8 activations over the full 0-255 range (torch's x86 default uses 0-127, which ONNX has
    no type for), symmetric int8 weights per output channel (ONNX Runtime's static default), and plain
    FakeQuantize modules (the fused moving-average kernel has no ONNX export)."""
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.fake_quantize import FakeQuantize, default_per_channel_weight_fake_quant
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    return QConfig(activation=activation, weight=default_per_channel_weight_fake_quant)


def _qat_qconfig_mapping(backend: str) -> Any:
    if backend == ONNX_QAT_BACKEND:
        # The fbgemm mapping's fusions and fixed-range ops, with every other qconfig made ONNX-expressible.
        return get_default_qat_qconfig_mapping("fbgemm").set_global(_onnx_qat_qconfig())
    return get_default_qat_qconfig_mapping(backend)


def _prepare_fx(model: nn.Module, config: QuantizationConfig, x: ModelInput, qat: bool) -> nn.Module:
    if qat:
        return prepare_qat_fx(model.train(), _qat_qconfig_mapping(config.backend), _fx_args(x))
    return prepare_fx(model.eval(), get_default_qconfig_mapping(config.backend), _fx_args(x))


def _prepare_eager(model: nn.Module, config: QuantizationConfig, x: ModelInput, qat: bool) -> nn.Module:
    # No tracing: the whole model sits between one quant and one dequant stub, conv/linear layers are swapped.
    wrapped = QuantWrapper(model)
    if qat and config.backend == ONNX_QAT_BACKEND:
        wrapped.qconfig = _onnx_qat_qconfig()
        return eager_prepare_qat(wrapped.train())
    wrapped.qconfig = (get_default_qat_qconfig if qat else get_default_qconfig)(config.backend)
    return eager_prepare_qat(wrapped.train()) if qat else eager_prepare(wrapped.eval())


_PREPARERS: dict[str, Callable[[nn.Module, QuantizationConfig, ModelInput, bool], nn.Module]] = {
    "fx": _prepare_fx, "eager": _prepare_eager,
}


def _static_prepare(model: nn.Module, config: QuantizationConfig, x: ModelInput, qat: bool) -> tuple[nn.Module, str]:
    """Insert observers (static) or fake-quant modules (qat): FX graph mode, else eager mode."""
    try:
        return _prepare_fx(model, config, x, qat), "fx"
    except Exception as fx_error:  # torch.fx runs the user's forward on proxies, so an untraceable model (data-
        # dependent control flow, dict inputs) fails with whatever its code raises; eager mode is the fallback,
        # and both reasons stay in the message below
        try:
            prepared = _prepare_eager(model, config, x, qat)
            _check_runs(prepared, x)
        except Exception as eager_error:  # the user's forward again, on eager-prepared modules
            raise QuantizationError(
                f"a model that neither FX graph mode ({describe_error(fx_error)}) nor eager mode ({describe_error(eager_error)}) "
                "can quantize", "a traceable model of conv/linear layers",
                "use dynamic quantization, or make forward() traceable by torch.fx") from eager_error
        return prepared.train(qat), "eager"


def _views_to_reshape(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Turn ``x.view(...)`` into ``x.reshape(...)`` in a converted FX graph.

    fbgemm's int8 convolutions return channels-last tensors, so a user's ``x.view(x.size(0), -1)`` after a
    conv/pool block, valid on the float model, fails on the int8 one. ``reshape`` gives the same values and
    copies only when it must; at inference nothing relies on the aliasing that ``view`` guarantees.
    """
    changed = False
    for node in graph_module.graph.nodes:
        if node.op == "call_method" and node.target == "view":
            node.target = "reshape"
            changed = True
    if changed:
        graph_module.recompile()
    return graph_module


def _use_per_tensor_weights(prepared: nn.Module, names: Iterable[str]) -> None:
    # Convert (FX and eager) makes each layer's weight observer from the layer's own qconfig, so swapping it here,
    # after calibration, changes the weight scales only; activation ranges stay as calibrated.
    for name in names:
        module = prepared.get_submodule(name)
        module.qconfig = module.qconfig._replace(weight=per_tensor_weight_observer)


def _static_convert(prepared: nn.Module, graph_mode: str) -> nn.Module:
    prepared = prepared.cpu().eval()
    if graph_mode == "fx":
        return _views_to_reshape(convert_fx(prepared))
    return eager_convert(prepared)


# --------------------------------------------------------------------------------------------- handlers
QUANTIZERS: HandlerRegistry = HandlerRegistry("quantization")


@dataclass
class _Request:
    model: nn.Module
    calibration_loader: Iterable[Any] | None
    example_input: ModelInput | None
    train_fn: Callable[[nn.Module], Any] | None
    progress: bool


@QUANTIZERS.register(NoQuantization)
def _none(config: NoQuantization, request: _Request) -> QuantizeResult:
    model = request.model
    return QuantizeResult(model=model, config=config)


@QUANTIZERS.register(DynamicQuantization)
def _dynamic(config: DynamicQuantization, request: _Request) -> QuantizeResult:
    model = request.model
    float_arch = _arch.capture(model)
    layers = {_DYNAMIC_LAYERS[name] for name in config.layers}
    quantized = quantize_dynamic(model.eval(), layers, dtype=torch.qint8)
    _attach(quantized, config, "eager", float_arch, "converted")
    return QuantizeResult(model=quantized, config=config, graph_mode="eager")


@QUANTIZERS.register(StaticQuantization)
def _static(config: StaticQuantization, request: _Request) -> QuantizeResult:
    model = request.model
    if request.calibration_loader is None:
        raise QuantizationError("static quantization without calibration data", "a loader of training batches",
                                "pass calibration_loader=task.train_loader()")
    x = _example(request.example_input, "static quantization")
    float_arch = _arch.capture(model)
    prepared, graph_mode = _static_prepare(model, config, x, qat=False)
    prepared.eval()
    done = _calibrate(prepared, request.calibration_loader, config.calibration_batches, request.progress)
    if done == 0:
        raise QuantizationError("an empty calibration loader", "at least one batch", "pass the training loader")
    per_tensor = per_tensor_layers(prepared, config.weight_granularity)
    _use_per_tensor_weights(prepared, per_tensor)
    quantized = _static_convert(prepared, graph_mode)
    _attach(quantized, config, graph_mode, float_arch, "converted", per_tensor=per_tensor)
    return QuantizeResult(model=quantized, config=config, calibration_batches=done, graph_mode=graph_mode)


@QUANTIZERS.register(QATQuantization)
def _qat(config: QATQuantization, request: _Request) -> QuantizeResult:
    model = request.model
    if request.train_fn is None:
        raise QuantizationError("qat quantization without a training function",
                                "train_fn(prepared_model) that fine-tunes the model in place",
                                "pass train_fn=..., or call prepare_qat(), train, then convert()")
    prepared = _prepare_qat_copy(model, config, _example(request.example_input, "qat quantization"))
    request.train_fn(prepared)
    quantized = convert(prepared, request.calibration_loader, progress=request.progress)
    return QuantizeResult(model=quantized, config=config, graph_mode=quantization_info(quantized)["graph_mode"])


# --------------------------------------------------------------------------------------------- public API
def quantize(model: nn.Module, config: QuantizationConfig, calibration_loader: Iterable[Any] | None = None,
             example_input: ModelInput | None = None, *, train_fn: Callable[[nn.Module], Any] | None = None,
             progress: bool = True) -> QuantizeResult:
    """Quantize a deep copy of ``model`` as ``config`` says; the caller's model is not modified.

    ``static`` needs ``calibration_loader`` (batches of ``(input, target)`` or of inputs) and
    ``example_input``; ``qat`` needs ``train_fn`` (or use :func:`prepare_qat`/:func:`convert`). With the
    ``gpu`` backend nothing is quantized and the result's ``skipped_reason`` says why.
    """
    if not isinstance(config, QuantizationConfig):
        raise QuantizationError(f"config of type {type(config).__name__}", "a QuantizationConfig",
                                "build one with quantization_config(mode)")
    handler = QUANTIZERS(config)
    subject = _cpu_copy(model)
    if config.backend == "gpu" and config.MODE != "none":
        return QuantizeResult(model=subject, config=config, skipped_reason=GPU_SKIP_REASON)
    if config.MODE != "none":
        _use_engine(config.backend)
    with quiet():
        return handler(config, _Request(subject, calibration_loader, example_input, train_fn, progress))


def batchnorm_scale(bn: nn.Module) -> torch.Tensor:
    """``gamma / sqrt(running_var + eps)``: the factor a QAT Conv-BatchNorm scales its weight by before
    fake-quantizing it (and what folding the BatchNorm into the convolution multiplies the weight by)."""
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _observe_weights(prepared: nn.Module) -> None:
    """Show each weight fake-quant the weight its layer's first forward would (a Conv-BatchNorm's folded by the
    BatchNorm's running statistics). Plain per-channel FakeQuantize modules start with one scale, which an
    evaluation before training (observers paused) cannot apply to a layer's channels; the fused default ones
    torch.ao uses for its own engines size themselves."""
    with torch.no_grad():
        for module in prepared.modules():
            fake_quant = getattr(module, "weight_fake_quant", None)
            weight = getattr(module, "weight", None)
            if fake_quant is None or not isinstance(weight, torch.Tensor):
                continue
            bn = getattr(module, "bn", None)
            if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None:
                weight = weight * batchnorm_scale(bn).reshape([-1] + [1] * (weight.dim() - 1))
            fake_quant(weight)


def _prepare_qat_copy(model: nn.Module, config: QATQuantization, x: ModelInput) -> nn.Module:
    float_arch = _arch.capture(model)
    if config.backend != ONNX_QAT_BACKEND:  # fake-quant trains on any engine; only torch.ao's convert needs one
        _use_engine(config.backend)
    prepared, graph_mode = _static_prepare(model, config, x, qat=True)
    if config.backend == ONNX_QAT_BACKEND:
        _observe_weights(prepared)
    return _attach(prepared, config, graph_mode, float_arch, "prepared")


def prepare_qat(model: nn.Module, config: QATQuantization | None = None,
                example_input: ModelInput | None = None) -> nn.Module:
    """A deep copy of ``model`` with fake-quant modules, in train mode, ready for any training loop.

    Train it (it may be moved to a GPU for that), then call :func:`convert`. With the ``gpu`` backend the
    copy stays a plain float model and :func:`convert` returns it with the skip recorded.
    """
    config = config or QATQuantization()
    if not isinstance(config, QATQuantization):
        raise QuantizationError(f"prepare_qat with a {config.KIND!r} config", "a QATQuantization config",
                                "pass QATQuantization(...)")
    subject = _cpu_copy(model)
    if config.backend == "gpu":
        return _attach(subject.train(), config, "", _arch.capture(subject), "prepared", GPU_SKIP_REASON)
    with quiet():
        return _prepare_qat_copy(subject, config, _example(example_input, "prepare_qat"))


def observer_counts(model: nn.Module, activations_only: bool = False) -> tuple[int, int]:
    """``(observers that saw no data, all observers)`` of a prepared model (fake-quant observers included);
    ``activations_only``: leave out the observers of weights (which see the weights, not data)."""
    total = unobserved = 0
    for name, module in model.named_modules():
        if activations_only and "weight_fake_quant" in name.split("."):
            continue
        if isinstance(module, ObserverBase) and isinstance(getattr(module, "min_val", None), torch.Tensor):
            total += 1
            low = module.min_val
            unobserved += bool(low.numel() == 0 or torch.isinf(low).all())  # still its initial value
    return unobserved, total


def qat_record(prepared: nn.Module) -> dict[str, Any]:
    """The record :func:`prepare_qat` attached to ``prepared``, or a QuantizationError for any other model."""
    info = prepared.__dict__.get(INFO_ATTR)
    if not info or info.get("stage") != "prepared":
        raise QuantizationError(f"convert() on a {type(prepared).__name__} that prepare_qat did not return",
                                "the model returned by prepare_qat (after training)",
                                "call prepare_qat(model, config, example_input) first")
    return info


def observed_copy(prepared: nn.Module, calibration_loader: Iterable[Any] | None = None,
                  calibration_batches: int = 8, progress: bool = False) -> nn.Module:
    """A CPU copy of a :func:`prepare_qat` model whose fake-quant modules have seen data: a model trained for
    zero epochs is calibrated on ``calibration_batches`` batches of ``calibration_loader`` first, or, without a
    loader, refused with a :class:`QuantizationError`."""
    subject = _cpu_copy(prepared)
    unobserved, total = observer_counts(subject, activations_only=True)
    if total and unobserved == total:  # not one batch went through it since prepare_qat
        if calibration_loader is None:
            raise QuantizationError(f"convert() on a QAT model whose {total} activation observers saw no data (not "
                                    "trained after prepare_qat)", "a model trained, or calibrated, after prepare_qat so "
                                    "that its int8 ranges come from data",
                                    "train it for at least one batch, or pass calibration_loader= to convert()")
        with quiet():
            done = _calibrate(subject.eval(), calibration_loader, calibration_batches, progress)
        if done == 0:
            raise QuantizationError("an empty calibration loader", "at least one batch", "pass the training loader")
    return subject


def convert(prepared: nn.Module, calibration_loader: Iterable[Any] | None = None, calibration_batches: int = 8,
            progress: bool = False) -> nn.Module:
    """The int8 model of a model returned by :func:`prepare_qat` (and trained); ``prepared`` is not modified.

    A model that saw no data after prepare_qat (trained for zero epochs) has no activation ranges: it is
    calibrated on ``calibration_batches`` batches of ``calibration_loader`` first, or, without a loader,
    refused with a :class:`QuantizationError`. A trained model ignores the loader.
    """
    info = qat_record(prepared)
    config = Config.from_dict(info["config"])
    if info.get("skipped_reason"):
        subject = _cpu_copy(prepared)
        _detach(subject)
        return _attach(subject.eval(), config, "", info["float_architecture"], "converted", info["skipped_reason"])
    _use_engine(config.backend)
    subject = observed_copy(prepared, calibration_loader, calibration_batches, progress)
    with quiet():
        quantized = _static_convert(subject, info["graph_mode"])
    _detach(quantized)
    return _attach(quantized, config, info["graph_mode"], info["float_architecture"], "converted")


def requantize(float_model: nn.Module, info: Mapping[str, Any], example_input: ModelInput) -> nn.Module:
    """The int8 structure that ``info`` records, built from a float model without calibration or training.

    Used to reload an exported int8 model: the scales, zero points and int8 weights come from the saved state
    dict, loaded into this structure afterwards.
    """
    config = Config.from_dict(dict(info["config"]))
    if not isinstance(config, QuantizationConfig):
        raise QuantizationError(f"quantization record of kind {config.KIND!r}", "a quantization config",
                                "re-export the model")
    subject = _cpu_copy(float_model)
    if info.get("skipped_reason") or config.MODE == "none":
        return subject.eval()
    _use_engine(config.backend)
    x = to_device(example_input, "cpu")
    with quiet(), warnings.catch_warnings():
        # No data runs through this structure: its observers are placeholders that the state dict overwrites.
        warnings.filterwarnings("ignore", message=_UNOBSERVED_MESSAGE)
        if isinstance(config, DynamicQuantization):
            model = QUANTIZERS.apply(config, _Request(subject, None, x, None, False)).model
        else:
            prepared = _PREPARERS[info["graph_mode"]](subject, config, x, isinstance(config, QATQuantization))
            # The recorded per-layer choice, not the auto rule again: these placeholder weights are not the data.
            _use_per_tensor_weights(prepared, info.get(PER_TENSOR_KEY, ()))
            model = _static_convert(prepared, info["graph_mode"])
    return _attach(model, config, info["graph_mode"], info["float_architecture"], "converted",
                   per_tensor=info.get(PER_TENSOR_KEY)).eval()
