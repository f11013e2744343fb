"""The file formats: their writers and loaders, the program wrapper they load into, and which format holds what.

``torchscript``, ``onnx`` and ``pt2`` are written here; the ``autocompress`` archive, which builds on the
TorchScript writer, lives in :mod:`autocompress.export.archive`. A loaded program is a :class:`LoadedProgram`:
called like the model, it returns the logits tensor and carries the metadata written with it (plan, input keys,
quantization record), so a program made from an int8 model is still known to be int8.
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._hf import quiet_transformers
from .._tensors import ModelInput, logits_of, repeat_to_batch
from ..errors import ExportError
from ..profile import is_quantized
from ..quantization import quantization_info, quiet

FORMATS = ("torchscript", "onnx", "pt2", "autocompress")
SUFFIXES = {"autocompress": "acz", "torchscript": "ts", "onnx": "onnx", "pt2": "pt2"}  # file name endings
ARCHIVE_VERSION = 1
ONNX_OPSET = 17
META_NAME = "autocompress.json"  # the metadata entry inside every format
INT8_MODES = ("dynamic", "static", "qat")

# The warnings tracing and the exporters emit on every call. Each is named (category and message); the reload
# check, not these notices, says whether an export is good. Anything else still reaches the user.
_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (torch.jit.TracerWarning, ""),  # data-dependent Python values frozen into the trace: the check catches it
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),  # torch.onnx
    (UserWarning, r"Exporting aten::index operator of advanced indexing"),  # torch.onnx, on BERT masks
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # transformers, read while tracing
)


@contextmanager
def silent() -> Iterator[None]:
    """Hide the named notices of tracing and the exporters (and torch.ao's, see ``quantization.quiet``)."""
    with quiet(), warnings.catch_warnings():
        for category, message in _EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


class _SharedSession:
    """An ONNX Runtime session that copies of its program share: a session cannot be pickled or deep-copied,
    and it never changes once made (measuring and exporting work on copies of a model)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedSession:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class LoadedProgram(nn.Module):
    """A loaded TorchScript, pt2 or ONNX program, callable like the model (tensor, or keyword tensors).

    It returns the logits tensor. ``meta`` is the metadata written with it (for an archive: its manifest).
    """

    def __init__(self, fmt: str, program: Any, input_keys: list[str] | None, meta: dict[str, Any]) -> None:
        super().__init__()
        self.format, self.input_keys, self.meta = fmt, input_keys, meta
        self.onnx_bytes: bytes | None = None  # an archive's ONNX program of the same model, where it stores one
        if isinstance(program, nn.Module):
            self.program = program
        else:
            self._session = _SharedSession(program)  # an onnxruntime InferenceSession

    def train(self, mode: bool = True) -> LoadedProgram:
        # A program is inference-only (a pt2 module even refuses train()); only the flag is kept.
        self.training = mode
        return self

    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if kwargs:
            if not self.input_keys:
                raise ExportError(f"keyword inputs {sorted(kwargs)}", "one positional tensor",
                                  "call the program with the input tensor")
            return [kwargs[k] for k in self.input_keys]
        return list(args)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = self._positional(args, kwargs)
        if self.format == "onnx":
            names = [i.name for i in self._session.get_inputs()]
            feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}
            return torch.from_numpy(self._session.run(None, feed)[0])
        return logits_of(self.program(*inputs))


# --------------------------------------------------------------------------------------------- int8 record
def quantization_record(model: nn.Module) -> dict[str, Any] | None:
    """The JSON quantization record of ``model`` (no float architecture): from the module itself, or, for a
    :class:`LoadedProgram`, from the metadata it was written with."""
    if isinstance(model, LoadedProgram):
        record = model.meta.get("quantization")
        return dict(record) if isinstance(record, Mapping) else None
    info = quantization_info(model)
    if info is None:
        return None
    return {k: v for k, v in info.items() if k != "float_architecture"}


def is_int8(model: nn.Module) -> bool:
    """True for an int8 model: torch.ao int8 modules inside, or a program whose record says it was made from one
    (a TorchScript program of an int8 model does not show its int8 modules as such)."""
    if is_quantized(model):
        return True
    record = quantization_record(model)
    return bool(record and record.get("mode") in INT8_MODES and record.get("stage", "converted") == "converted"
                and not record.get("skipped_reason"))


# --------------------------------------------------------------------------------------------- writers
class Positional(nn.Module):
    """Positional inputs in key order, logits out: the form tracing and the exporters take."""

    def __init__(self, model: nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model, self.keys = model, keys
        # The wrapper's own mode (not set recursively): torch.onnx.export puts the wrapper back in the mode it
        # found it in, recursively, and a new module is in training mode, which left the user's model training
        # (its BatchNorm then updated its running statistics on the next evaluation: digits 0.998 -> 0.991).
        self.training = model.training

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.keys, args))) if self.keys else self.model(*args)
        return logits_of(out)


def input_keys(x: ModelInput) -> list[str] | None:
    return list(x.keys()) if isinstance(x, Mapping) else None


def positional_args(x: ModelInput) -> tuple[torch.Tensor, ...]:
    return tuple(x.values()) if isinstance(x, Mapping) else (x,)


def torchscript_bytes(model: nn.Module, example_input: ModelInput, meta: dict[str, Any]) -> bytes:
    with quiet_transformers():  # tracing probes every attribute; a PreTrainedModel's loss_function warns
        program = torch.jit.trace(Positional(model, input_keys(example_input)), positional_args(example_input),
                                  strict=False, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(program, buffer, _extra_files={META_NAME: json.dumps(meta)})
    return buffer.getvalue()


def write_torchscript(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    return torchscript_bytes(model, example_input, meta)


@contextmanager
def _mute_stdout() -> Iterator[None]:
    """Silence file descriptor 1 for the duration of an ONNX export.

    torch 2.14's legacy exporter leaves its C++ log switched on (``setup_onnx_logging`` tests the function
    object instead of calling it) and prints the whole TorchScript graph to stdout when an operator is
    unsupported; a one-line ExportError says it better.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _float_twin(model: nn.Module) -> nn.Module:
    """A copy of a dynamic-int8 model whose int8 Linear layers are float again, with the int8 grid's weights."""
    import copy

    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            weight = getattr(child, "weight", None)
            if type(child).__module__.startswith("torch.ao.nn.quantized.dynamic") and callable(weight):
                float_weight = weight().dequantize()
                bias = child.bias()
                linear = nn.Linear(float_weight.shape[1], float_weight.shape[0], bias=bias is not None)
                linear.weight.data.copy_(float_weight)
                if bias is not None:
                    linear.bias.data.copy_(bias)
                setattr(parent, name, linear)
    return twin


def write_onnx(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    if isinstance(model, LoadedProgram) and model.onnx_bytes:
        return model.onnx_bytes  # made when the archive was written, from the module (see archive.write_archive)
    if model_kind(model) == "dynamic" and not isinstance(model, LoadedProgram):
        # torch.ao's dynamic int8 ops have no ONNX operators: export the float twin (weights already on the int8
        # grid) and let ONNX Runtime's own dynamic quantization make the int8 graph (MatMulInteger).
        import tempfile

        from ..quantization.ort import dynamic_int8

        with tempfile.TemporaryDirectory() as folder:
            float_path, int8_path = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
            float_path.write_bytes(_onnx_bytes(_float_twin(model), example_input, meta))
            dynamic_int8(float_path, int8_path)
            return int8_path.read_bytes()
    return _onnx_bytes(model, example_input, meta)


def _onnx_bytes(model: nn.Module, example_input: ModelInput, meta: dict[str, Any]) -> bytes:
    import onnx

    keys = input_keys(example_input) or ["input"]
    buffer = io.BytesIO()
    # Token ids and masks (integer tensors of rank ≥ 2) vary in length too: traced at the example's length,
    # ONNX Runtime refused every other one (a real batch of reviews padded to its own longest row).
    args = positional_args(example_input)
    axes = {name: {0: "batch", 1: "sequence"} if not t.dtype.is_floating_point and t.dim() >= 2 else {0: "batch"}
            for name, t in zip(keys, args)} | {"logits": {0: "batch"}}
    with _mute_stdout():
        torch.onnx.export(Positional(model, input_keys(example_input)), args, buffer,
                          dynamo=False, input_names=keys, output_names=["logits"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_NAME, json.dumps(meta)
    return proto.SerializeToString()


def write_pt2(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    from torch.export import Dim

    # A batch of 2, so the batch dimension is not specialised to 1.
    args = positional_args(repeat_to_batch(example_input, 2))
    program = torch.export.export(Positional(model, input_keys(example_input)), args,
                                  dynamic_shapes=(tuple({0: Dim.AUTO} for _ in args),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META_NAME: json.dumps(meta)})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- loaders
def load_torchscript(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    extra = {META_NAME: ""}
    program = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra[META_NAME] or "{}")
    return LoadedProgram("torchscript", program, meta.get("input_keys"), meta).eval()


def load_onnx(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    import onnx
    import onnxruntime

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props.get(META_NAME, "{}"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return LoadedProgram("onnx", session, meta.get("input_keys"), meta).eval()


def load_pt2(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    extra = {META_NAME: ""}
    program = torch.export.load(io.BytesIO(path.read_bytes()), extra_files=extra)  # any file name
    meta = json.loads(extra[META_NAME] or "{}")
    return LoadedProgram("pt2", program.module(), meta.get("input_keys"), meta).eval()


PICKLE_RISK = ("unpickling runs whatever code the file names, so only pass it for a file you made or trust")


def load_torch_file(path: Path, base_model: nn.Module | None, allow_pickle: bool = False) -> nn.Module:
    """A ``torch.save`` file: a state dict (loaded with ``weights_only=True`` into a copy of ``base_model``) or,
    only with ``allow_pickle``, a pickled ``nn.Module``."""
    import copy
    import pickle

    from ..errors import describe_error

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        if not allow_pickle:
            raise ExportError(f"{path} holds pickled Python objects, not only tensors ({describe_error(exc)[:120]})",
                              "a state dict (torch.save(model.state_dict())), TorchScript, torch.export, ONNX or "
                              "an autocompress archive",
                              f"re-save the weights as a state dict, or pass --allow-pickle ({PICKLE_RISK})") \
                from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj.eval()
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if base_model is None:
            raise ExportError(f"{path} holds a state dict", "the model's architecture to load it into",
                              "pass base_model= (the CLI uses the task's model)")
        model = copy.deepcopy(base_model)
        try:
            model.load_state_dict(obj)
        except RuntimeError as exc:
            raise ExportError(f"the state dict in {path} does not fit {type(base_model).__name__} "
                              f"({describe_error(exc)[:160]})", "weights saved from this architecture",
                              "check the file and the task") from None
        return model.eval()
    raise ExportError(f"{path} holds a {type(obj).__name__}", "a state dict or an nn.Module",
                      "save the model with torch.save(model.state_dict(), path)")


# --------------------------------------------------------------------------------------------- format rules
_RULES: dict[str, tuple[str, ...]] = {
    "float": FORMATS,
    "static": ("torchscript", "onnx", "autocompress"),
    "qat": ("torchscript", "onnx", "autocompress"),
    "dynamic": ("torchscript", "onnx", "autocompress"),  # onnx: ONNX Runtime's dynamic int8 of the float twin
    "foreign_int8": ("torchscript",),
}


def formats_for_mode(mode: str) -> tuple[str, ...]:
    """The formats that can hold a model quantized with ``mode`` (``none`` = float), from the support matrix."""
    return _RULES["float" if mode == "none" else mode]


def refuse_format(fmt: str, mode: str, subject: str, fix: str | None = None) -> None:
    """A one-line :class:`ExportError` when ``fmt`` cannot hold ``subject`` (a model quantized with ``mode``),
    naming the formats that can: the one refusal for the CLI's export, ``compress`` and the dashboard."""
    can_hold = formats_for_mode(mode)
    if fmt not in can_hold:
        kind = "float" if mode == "none" else f"{mode} int8"
        raise ExportError(f"{subject} is a {kind} model, which {fmt} cannot hold",
                          f"a format that can hold it: {', '.join(can_hold)}", fix or f"pass --format {can_hold[0]}")


def model_kind(model: nn.Module) -> str:
    """``float``, an int8 mode (``dynamic``, ``static``, ``qat``) or ``foreign_int8`` (int8 made elsewhere)."""
    if not is_int8(model):
        return "float"
    record = quantization_record(model)
    return record["mode"] if record and record.get("mode") in INT8_MODES else "foreign_int8"


def candidate_formats(model: nn.Module) -> list[str]:
    """The formats that can hold ``model`` by the support matrix (no export is tried)."""
    return list(_RULES[model_kind(model)])
