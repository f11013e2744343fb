"""Export of compressed models, each export reloaded and checked before success is reported.

Formats (:data:`FORMATS`):

- ``torchscript``: ``torch.jit.trace`` of the model (dict inputs become positional arguments in key order;
  the output is the logits tensor). Loads anywhere with ``torch.jit.load``, no Python class needed.
- ``onnx``: the TorchScript-based ONNX exporter (``dynamo=False``: the dynamo exporter needs onnxscript,
  which autocompress does not depend on), opset 17, dynamic batch axis; checked in ONNX Runtime.
- ``pt2``: ``torch.export`` program with a dynamic batch dimension (``torch.export.load``).
- ``autocompress``: a zip archive of
    ``manifest.json``  format version, plan (the caller's JSON dict), model class, quantization record
                       (mode, config, graph mode), the float architecture record (shapes and plain attributes
                       of every module, so a pruned architecture is JSON, see ``autocompress._arch``),
                       input spec and parameter shapes;
    ``weights.pt``     the state dict (float or int8), readable with ``torch.load(weights_only=True)``;
    ``program.pt``     a TorchScript program of the model, when it can be traced.
  No member is an arbitrary pickle: ``weights.pt`` holds tensors (int8 ones included), strings, dtypes and
  tuples only, and TorchScript archives are read by TorchScript's own loader, which restores TorchScript
  types, never arbitrary Python classes.
  ``load(path, base_model=original_unpruned_model)`` rebuilds the pruned architecture from the record on a
  copy of the base model, re-applies the recorded quantization structure (``quantization.requantize``: FX or
  eager prepare/convert without calibration) and loads the weights: the result is the real ``nn.Module``.
  ``load(path)`` without a base model runs the embedded TorchScript program, so a dashboard can load an
  exported trial without importing user code.

Every export is written to a temporary file beside ``path``, reloaded from it and checked against the
in-memory model on the check inputs (64 rows): float models need a max absolute output difference <= 1e-4,
int8 models a top-1 agreement >= 99%. Only then is it renamed into place, so a failure leaves no partial file.
An existing file is replaced only with ``overwrite=True``.

Support matrix (tried on torch 2.14 / onnxruntime 1.32; ✓ = exported, reloaded and checked):

    model                                   torchscript  onnx  pt2  autocompress
    float (incl. pruned), tensor input          ✓         ✓     ✓        ✓
    float HF BERT, dict input                   ✓         ✓     ✓        ✓
    int8 static / qat (FX or eager mode)        ✓         ✓     ✗        ✓
    int8 dynamic (Linear, eager), CNN or BERT   ✓         ✗     ✗        ✓

pt2 cannot hold torch.ao int8 modules (their packed weights are TorchScript classes that torch.export
cannot flatten; a failed attempt also leaves the model half-modified, so probes run on copies); ONNX has no
operator for ``quantized::linear_dynamic``. ONNX Runtime's QLinear kernels round differently from fbgemm
(outputs differ by up to one output quantization step), so an int8 model whose logits are near ties (a
pruned model before fine-tuning, say) can miss the 99% top-1 agreement in ONNX: the export then fails its
check and says so. Asking for such a format raises an
:class:`ExportError` naming the formats that can hold the model (found by trying them in memory).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _arch
from ._io import make_temp
from ._tensors import ModelInput, batch_len, call_model, logits_of, repeat_to_batch, to_device
from .errors import ExportError, describe_error
from .profile import is_quantized
from .quantization import quantization_info, quiet, requantize

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "pt2", "autocompress")
SUFFIXES = {"autocompress": "acz", "torchscript": "ts", "onnx": "onnx", "pt2": "pt2"}  # file name endings
ARCHIVE_VERSION = 1
CHECK_ROWS = 64
FLOAT_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.99
ONNX_OPSET = 17
_META_NAME = "autocompress.json"


@contextmanager
def _silent() -> Iterator[None]:
    # Tracing and the exporters warn a lot (TracerWarning, torch.jit deprecation, legacy ONNX exporter); the
    # reload check is what tells the user whether an export is good.
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ExportResult:
    """A written and verified export: where, which format, and the figures of its reload check."""

    path: Path
    format: str
    check_metric: str  # "max_abs_diff" (float models) or "top1_agreement" (int8 models)
    check_value: float  # the worst value over the checked routes
    threshold: float
    samples: int
    routes: dict[str, float] = field(default_factory=dict)  # per loading route, e.g. module / program
    size_bytes: int = 0


class LoadedProgram(nn.Module):
    """A loaded TorchScript, pt2 or ONNX program, callable like the model (tensor, or keyword tensors).

    It returns the logits tensor.
    """

    def __init__(self, fmt: str, program: Any, input_keys: list[str] | None, meta: dict[str, Any]) -> None:
        super().__init__()
        self.format, self.input_keys, self.meta = fmt, input_keys, meta
        if isinstance(program, nn.Module):
            self.program = program
        else:
            self._session = program  # an onnxruntime InferenceSession

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


# --------------------------------------------------------------------------------------------- helpers
class _Positional(nn.Module):
    """Positional inputs in key order, logits out: the form tracing and the exporters take."""

    def __init__(self, model: nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.keys, args))) if self.keys else self.model(*args)
        return logits_of(out)


def _keys(x: ModelInput) -> list[str] | None:
    return list(x.keys()) if isinstance(x, Mapping) else None


def _args(x: ModelInput) -> tuple[torch.Tensor, ...]:
    return tuple(x.values()) if isinstance(x, Mapping) else (x,)


def _rows(x: ModelInput, n: int) -> ModelInput:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, Mapping) else x[:n]


def _cat(parts: list[ModelInput]) -> ModelInput:
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _check_batch(check_inputs: Any, example_input: ModelInput) -> ModelInput:
    """Up to 64 rows of check inputs: a batch, or the first batches of a loader of ``(input, target)``.

    Without check inputs the example input is repeated, with a little noise on float inputs so that rows
    differ.
    """
    if check_inputs is None:
        x = repeat_to_batch(to_device(example_input, "cpu"), CHECK_ROWS)
        gen = torch.Generator().manual_seed(0)
        noise = (lambda t: t + 0.05 * (t.float().std() + 1e-3) * torch.randn(t.shape, generator=gen)
                 if t.is_floating_point() else t)
        return {k: noise(v) for k, v in x.items()} if isinstance(x, Mapping) else noise(x)
    if isinstance(check_inputs, (torch.Tensor, Mapping)):
        return _rows(to_device(check_inputs, "cpu"), CHECK_ROWS)
    parts, count = [], 0
    for batch in check_inputs:
        x = batch[0] if isinstance(batch, (list, tuple)) and len(batch) == 2 else batch
        parts.append(to_device(x, "cpu"))
        count += batch_len(x)
        if count >= CHECK_ROWS:
            break
    if not parts:
        raise ExportError("empty check_inputs", "eval inputs (a batch or a loader)", "pass task.eval_loader()")
    return _rows(_cat(parts), CHECK_ROWS)


def _logits(model: nn.Module, x: ModelInput) -> torch.Tensor:
    with torch.inference_mode():
        return logits_of(call_model(model, x)).float()


def _compare(reference: torch.Tensor, got: torch.Tensor, quantized: bool) -> float:
    if got.shape != reference.shape:
        raise ExportError(f"reloaded output of shape {tuple(got.shape)}", f"shape {tuple(reference.shape)}",
                          "report this model to the autocompress developers")
    if quantized:
        return (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return (got.float() - reference).abs().max().item()


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    subject = copy.deepcopy(model)
    return (subject if is_quantized(subject) else subject.cpu()).eval()


def _meta(model: nn.Module, example_input: ModelInput, plan: Any) -> dict[str, Any]:
    info = quantization_info(model)
    return {"autocompress_format_version": ARCHIVE_VERSION, "plan": plan, "input_keys": _keys(example_input),
            "input_spec": _arch.input_spec(example_input), "quantization": _quant_summary(info)}


def _quant_summary(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {k: v for k, v in info.items() if k != "float_architecture"}


# --------------------------------------------------------------------------------------------- writers
def _torchscript_bytes(model: nn.Module, example_input: ModelInput, meta: dict[str, Any]) -> bytes:
    program = torch.jit.trace(_Positional(model, _keys(example_input)), _args(example_input), strict=False,
                              check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(program, buffer, _extra_files={_META_NAME: json.dumps(meta)})
    return buffer.getvalue()


def _write_torchscript(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    return _torchscript_bytes(model, example_input, meta)


@contextmanager
def _mute_stdout() -> Iterator[None]:
    """Silence file descriptor 1 for the duration of an ONNX export.

    torch 2.14's legacy exporter leaves its C++ log switched on (``setup_onnx_logging`` tests the function
    object instead of calling it) and prints the whole TorchScript graph to stdout when an operator is
    unsupported; a one-line ExportError says it better.
    """
    import sys

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


def _write_onnx(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    import onnx

    keys = _keys(example_input) or ["input"]
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in keys} | {"logits": {0: "batch"}}
    with _mute_stdout():
        torch.onnx.export(_Positional(model, _keys(example_input)), _args(example_input), buffer, dynamo=False,
                          input_names=keys, output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = _META_NAME, json.dumps(meta)
    return proto.SerializeToString()


def _write_pt2(model: nn.Module, example_input: ModelInput, meta: dict[str, Any], **_: Any) -> bytes:
    from torch.export import Dim

    # A batch of 2, so the batch dimension is not specialised to 1.
    args = _args(repeat_to_batch(example_input, 2))
    program = torch.export.export(_Positional(model, _keys(example_input)), args,
                                  dynamic_shapes=(tuple({0: Dim.AUTO} for _ in args),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={_META_NAME: json.dumps(meta)})
    return buffer.getvalue()


def _write_archive(model: nn.Module, example_input: ModelInput, meta: dict[str, Any],
                   **_: Any) -> bytes:
    info = quantization_info(model)
    if is_quantized(model) and info is None:
        raise ValueError("int8 model made outside autocompress.quantization: its structure cannot be rebuilt")
    architecture = info["float_architecture"] if info else _arch.capture(model)
    state = model.state_dict()
    weights = io.BytesIO()
    torch.save(state, weights)
    try:
        program: bytes | None = _torchscript_bytes(model, example_input, meta)
    except Exception:  # the archive stays useful with a base model; the manifest says there is no program
        program = None
    manifest = {
        "format": "autocompress", **meta,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "float_class": architecture["modules"][""]["class"],
        "architecture": architecture,
        "param_shapes": {k: list(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
        "files": {"weights": "weights.pt", "program": "program.pt" if program is not None else None},
        "torch_version": torch.__version__,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        archive.writestr("weights.pt", weights.getvalue())
        if program is not None:
            archive.writestr("program.pt", program)
    return buffer.getvalue()


_WRITERS: dict[str, Callable[..., bytes]] = {
    "torchscript": _write_torchscript, "onnx": _write_onnx, "pt2": _write_pt2, "autocompress": _write_archive,
}


# --------------------------------------------------------------------------------------------- loaders
def _load_torchscript(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    extra = {_META_NAME: ""}
    program = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra[_META_NAME] or "{}")
    return LoadedProgram("torchscript", program, meta.get("input_keys"), meta).eval()


def _load_onnx(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    import onnx
    import onnxruntime

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props.get(_META_NAME, "{}"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return LoadedProgram("onnx", session, meta.get("input_keys"), meta).eval()


def _load_pt2(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    extra = {_META_NAME: ""}
    program = torch.export.load(io.BytesIO(path.read_bytes()), extra_files=extra)  # any file name
    meta = json.loads(extra[_META_NAME] or "{}")
    return LoadedProgram("pt2", program.module(), meta.get("input_keys"), meta).eval()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of an autocompress archive (plain JSON: no torch object is loaded)."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


def _load_archive(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    manifest = read_manifest(path)
    if manifest.get("autocompress_format_version", 0) > ARCHIVE_VERSION:
        raise ExportError(f"archive format version {manifest['autocompress_format_version']}",
                          f"version {ARCHIVE_VERSION} or older", "upgrade autocompress")
    with zipfile.ZipFile(path) as archive:
        if base_model is None:
            if not manifest["files"].get("program"):
                raise ExportError(f"{path} holds no TorchScript program", "a base model to rebuild the architecture",
                                  f"pass base_model=<the original {manifest['float_class']}>")
            extra = {_META_NAME: ""}
            program = torch.jit.load(io.BytesIO(archive.read("program.pt")), map_location="cpu",
                                     _extra_files=extra)
            return LoadedProgram("torchscript", program, manifest.get("input_keys"), manifest).eval()
        state = torch.load(io.BytesIO(archive.read("weights.pt")), map_location="cpu", weights_only=True)
    try:
        model = _arch.rebuild(base_model, manifest["architecture"])
    except ValueError as exc:
        raise ExportError(f"a base model that does not match the archive ({exc})",
                          f"the original {manifest['float_class']} the archive was made from",
                          "pass the unpruned model the plan was applied to") from exc
    quantization = manifest.get("quantization")
    if quantization and quantization.get("mode") not in (None, "none") and not quantization.get("skipped_reason"):
        info = dict(quantization, float_architecture=manifest["architecture"])
        model = requantize(model, info, _arch.input_from_spec(manifest["input_spec"]))
    model.load_state_dict(state, strict=True)
    return model.eval()


PICKLE_RISK = ("unpickling runs whatever code the file names, so only pass it for a file you made or trust")


def _load_torch_file(path: Path, base_model: nn.Module | None, allow_pickle: bool = False) -> nn.Module:
    """A ``torch.save`` file: a state dict (loaded with ``weights_only=True`` into a copy of ``base_model``) or,
    only with ``allow_pickle``, a pickled ``nn.Module``."""
    import pickle

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


_LOADERS: dict[str, Callable[..., nn.Module]] = {
    "torchscript": _load_torchscript, "onnx": _load_onnx, "pt2": _load_pt2, "autocompress": _load_archive,
    "torch": _load_torch_file,
}


def detect_format(path: str | Path) -> str:
    """The format of an exported file, from its content."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return "onnx"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if "manifest.json" in names:
        return "autocompress"
    if any(n.endswith("/archive_format") for n in names):
        return "pt2"
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch"  # torch.save: a state dict, or a pickled module
    raise ExportError(f"{path} is a zip archive of no known export format", f"one of {', '.join(FORMATS)}",
                      "re-export the model with autocompress.export_model")


def load(path: str | Path, base_model: nn.Module | None = None, format: str | None = None,
         allow_pickle: bool = False) -> nn.Module:
    """Load an export or a model file. ``autocompress`` archives with ``base_model`` give the real module; a
    ``torch.save`` state dict is loaded (``weights_only=True``) into a copy of ``base_model``; TorchScript, pt2
    and ONNX give a :class:`LoadedProgram` that is called like the model and returns logits. A pickled
    ``nn.Module`` is unpickled only with ``allow_pickle=True`` (it can run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no file at {path}", "a file written by autocompress.export_model", "check the path")
    fmt = format or detect_format(path)
    if fmt not in _LOADERS:
        raise ExportError(f"format {fmt!r}", f"one of {', '.join(FORMATS)}", "pick a format from that list")
    with _silent():
        try:
            if fmt == "torch":
                return _load_torch_file(path, base_model, allow_pickle)
            return _LOADERS[fmt](path, base_model)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{path} could not be loaded as {fmt} ({describe_error(exc)})",
                              "a file written by autocompress.export_model", "re-export the model") from exc


# --------------------------------------------------------------------------------------------- export


def _try_format(model: nn.Module, fmt: str, example_input: ModelInput, check: ModelInput,
                reference: torch.Tensor, quantized: bool) -> bool:
    model = copy.deepcopy(model)  # a failed exporter may leave a model half-modified (torch.export does)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"probe.{fmt}"
            path.write_bytes(_WRITERS[fmt](model, example_input, _meta(model, example_input, None)))
            base = model if fmt == "autocompress" and not quantized else None
            got = _logits(_LOADERS[fmt](path, base), check)
            value = _compare(reference, got, quantized)
            ok = value >= INT8_AGREEMENT if quantized else value <= FLOAT_TOLERANCE
            log.debug("probe %s: check value %s", fmt, value)
            return ok
    except Exception as exc:
        log.debug("probe %s failed: %s", fmt, describe_error(exc))
        return False


_RULES: dict[str, tuple[str, ...]] = {
    "float": FORMATS,
    "static": ("torchscript", "onnx", "autocompress"),
    "qat": ("torchscript", "onnx", "autocompress"),
    "dynamic": ("torchscript", "autocompress"),
    "foreign_int8": ("torchscript",),
}


def formats_for_mode(mode: str) -> tuple[str, ...]:
    """The formats that can hold a model quantized with ``mode`` (``none`` = float), from the support matrix."""
    return _RULES["float" if mode == "none" else mode]


def supported_formats(model: nn.Module, example_input: ModelInput | None = None) -> list[str]:
    """The formats that can hold ``model``.

    Without ``example_input``: from the support matrix in this module's docstring. With it: found by
    exporting to each format in memory, reloading and checking (slower, exact).
    """
    info = quantization_info(model)
    if not is_quantized(model):
        kind = "float"
    else:
        kind = info["mode"] if info else "foreign_int8"
    candidates = list(_RULES.get(kind, FORMATS))
    if example_input is None:
        return candidates
    subject = _cpu_eval_copy(model)
    x = to_device(example_input, "cpu")
    check = _check_batch(None, x)
    with _silent():
        reference = _logits(subject, check)
        return [fmt for fmt in FORMATS if _try_format(subject, fmt, x, check, reference, is_quantized(subject))]


def _fresh_temp(path: Path) -> Path:
    return make_temp(path)


def export_model(model: nn.Module, fmt: str, path: str | Path, example_input: ModelInput,
                 check_inputs: ModelInput | Iterable[Any] | None = None, plan: Mapping[str, Any] | None = None,
                 base_model: nn.Module | None = None, overwrite: bool = False) -> ExportResult:
    """Write ``model`` to ``path`` in format ``fmt``, reload it and check it against the in-memory model.

    ``check_inputs``: eval inputs (a batch, or a loader of ``(input, target)``; 64 rows are used).
    ``plan``: a JSON-serialisable dict stored with the export. ``base_model``: the original unpruned model,
    used to check that an ``autocompress`` archive rebuilds (without it the embedded program is checked, and
    a float model serves as its own base). Raises :class:`ExportError` (one line) on any failure; no file is
    left behind then.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export format {fmt!r}", f"one of {', '.join(FORMATS)}", "pick a format from that list")
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists", "a path that holds no file", "choose another path, or pass "
                          "overwrite=True to replace it")
    if path.is_dir():
        raise ExportError(f"{path} is a directory", "a file path", "add a file name")
    try:
        json.dumps(plan)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"a plan that is not JSON ({exc})", "a dict of JSON values, or None",
                          "pass config.to_dict() or a plain dict") from exc
    subject = _cpu_eval_copy(model)
    quantized = is_quantized(subject)
    x = to_device(example_input, "cpu")
    check = _check_batch(check_inputs, x)
    metric, threshold = ("top1_agreement", INT8_AGREEMENT) if quantized else ("max_abs_diff", FLOAT_TOLERANCE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_temp(path)
    try:
        with _silent():
            reference = _logits(subject, check)
            try:
                data = _WRITERS[fmt](subject, x, _meta(subject, x, dict(plan) if plan is not None else None))
            except Exception as exc:
                others = [f for f in supported_formats(model, x) if f != fmt]
                raise ExportError(f"{type(model).__name__} cannot be exported as {fmt} ({describe_error(exc)})",
                                  f"a format that can hold it: {', '.join(others) or 'none found'}",
                                  f"export with format={others[0]!r}" if others else "report this model") from exc
            tmp.write_bytes(data)
            routes = _verify(fmt, tmp, subject, check, reference, quantized, base_model)
        worst = min(routes.values()) if quantized else max(routes.values())
        ok = worst >= threshold if quantized else worst <= threshold
        if not ok:
            raise ExportError(f"the reloaded {fmt} export gives {metric}={worst:.4g} ({routes})",
                              f"{'>=' if quantized else '<='} {threshold} against the in-memory model",
                              "try another format, or report this model")
        if path.exists() and not overwrite:  # appeared while we worked: still never clobber it
            raise ExportError(f"{path} already exists", "a path that holds no file", "choose another path")
        os.replace(tmp, path)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise ExportError(f"exporting as {fmt} failed ({describe_error(exc)})", "a model that traces on example_input",
                              "check example_input, or try another format") from exc
        raise
    return ExportResult(path=path, format=fmt, check_metric=metric, check_value=float(worst), threshold=threshold,
                        samples=batch_len(check), routes=routes, size_bytes=path.stat().st_size)


def _verify(fmt: str, tmp: Path, subject: nn.Module, check: ModelInput, reference: torch.Tensor,
            quantized: bool, base_model: nn.Module | None) -> dict[str, float]:
    """Reload ``tmp`` by every route a user may take and compare each with the in-memory model."""
    routes: dict[str, float] = {}
    if fmt != "autocompress":
        routes[fmt] = _compare(reference, _logits(_LOADERS[fmt](tmp), check), quantized)
        return routes
    manifest = read_manifest(tmp)
    if manifest["files"].get("program"):
        routes["program"] = _compare(reference, _logits(_load_archive(tmp), check), quantized)
    base = base_model if base_model is not None else (None if quantized else subject)
    if base is not None:
        try:
            rebuilt = _load_archive(tmp, base)
        except ExportError:
            raise
        routes["module"] = _compare(reference, _logits(rebuilt, check), quantized)
    if not routes:
        raise ExportError("an int8 model that cannot be traced, exported without base_model",
                          "base_model, to check that the archive rebuilds", "pass base_model=<the original model>")
    return routes
