"""Export and load: :func:`export_model` writes a format, reloads it and checks it before reporting success;
:func:`load` and :func:`detect_format` read any export back; :func:`supported_formats` says which formats can
hold a model."""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _arch
from .._io import make_temp
from .._tensors import ModelInput, batch_len, to_device
from ..embeddings.modules import add_remap_probe_rows
from ..errors import ExportError, describe_error
from .archive import load_archive, read_manifest, write_archive
from .check import check_batch, compare, example_copies, logits, tolerance_for
from .formats import (
    ARCHIVE_VERSION,
    FORMATS,
    candidate_formats,
    input_keys,
    is_int8,
    load_onnx,
    load_pt2,
    load_torch_file,
    load_torchscript,
    quantization_record,
    silent,
    write_onnx,
    write_pt2,
    write_torchscript,
)

log = logging.getLogger("autocompress.export")

WRITERS: dict[str, Callable[..., bytes]] = {
    "torchscript": write_torchscript, "onnx": write_onnx, "pt2": write_pt2, "autocompress": write_archive,
}
LOADERS: dict[str, Callable[..., nn.Module]] = {
    "torchscript": load_torchscript, "onnx": load_onnx, "pt2": load_pt2, "autocompress": load_archive,
    "torch": load_torch_file,
}


@dataclass(frozen=True)
class ExportResult:
    """A written and verified export: where, which format, and the figures of its reload check.

    Float checks pass when ``check_value`` (max |Δ|) <= ``threshold`` = ``rtol`` × ``reference_scale`` (max
    |output| of the in-memory model) + ``atol``; int8 checks when the top-1 agreement >= ``threshold``.
    """

    path: Path
    format: str
    check_metric: str  # "max_abs_diff" (float models) or "top1_agreement" (int8 models)
    check_value: float  # the worst value over the checked routes
    threshold: float
    samples: int
    routes: dict[str, float] = field(default_factory=dict)  # per loading route, e.g. module / program
    size_bytes: int = 0
    rtol: float | None = None  # float checks only
    atol: float | None = None
    reference_scale: float | None = None
    check_inputs: str = "given"  # "given" (the caller's evaluation inputs) or "example copies"


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    subject = copy.deepcopy(model)
    return (subject if is_int8(subject) else subject.cpu()).eval()


def _meta(model: nn.Module, example_input: ModelInput, plan: Any) -> dict[str, Any]:
    return {"autocompress_format_version": ARCHIVE_VERSION, "plan": plan, "input_keys": input_keys(example_input),
            "input_spec": _arch.input_spec(example_input), "quantization": quantization_record(model)}


# --------------------------------------------------------------------------------------------- load
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
    if fmt not in LOADERS:
        raise ExportError(f"format {fmt!r}", f"one of {', '.join(FORMATS)}", "pick a format from that list")
    with silent():
        try:
            if fmt == "torch":
                return load_torch_file(path, base_model, allow_pickle)
            return LOADERS[fmt](path, base_model)
        except ExportError:
            raise
        except Exception as exc:  # a corrupt or foreign file makes each parser (zip, protobuf, TorchScript,
            # onnxruntime, torch.export) raise its own exception types; the message keeps the parser's reason
            raise ExportError(f"{path} could not be loaded as {fmt} ({describe_error(exc)})",
                              "a file written by autocompress.export_model", "re-export the model") from exc


# --------------------------------------------------------------------------------------------- formats
def _try_format(model: nn.Module, fmt: str, example_input: ModelInput, check: ModelInput,
                reference: torch.Tensor, int8: bool) -> bool:
    model = copy.deepcopy(model)  # a failed exporter may leave a model half-modified (torch.export does)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"probe.{fmt}"
            path.write_bytes(WRITERS[fmt](model, example_input, _meta(model, example_input, None)))
            base = model if fmt == "autocompress" and not int8 else None
            value = compare(reference, logits(LOADERS[fmt](path, base), check), int8)
            log.debug("probe %s: check value %s", fmt, value)
            return tolerance_for(reference, int8).passes(value)
    except Exception as exc:  # a probe: any exporter failure means "this format cannot hold the model"; the
        # reason is logged, and export_model's own attempt reports it in full
        log.debug("probe %s failed: %s", fmt, describe_error(exc))
        return False


def supported_formats(model: nn.Module, example_input: ModelInput | None = None) -> list[str]:
    """The formats that can hold ``model``.

    Without ``example_input``: from the support matrix in :mod:`autocompress.export`. With it: found by
    exporting to each format in memory, reloading and comparing on copies of the example input (slower, exact
    about what each format can hold; the export itself is checked on real inputs).
    """
    if example_input is None:
        return candidate_formats(model)
    subject = _cpu_eval_copy(model)
    x = to_device(example_input, "cpu")
    check = add_remap_probe_rows(subject, example_copies(x))
    with silent():
        reference = logits(subject, check)
        return [fmt for fmt in FORMATS if _try_format(subject, fmt, x, check, reference, is_int8(subject))]


# --------------------------------------------------------------------------------------------- export
def export_model(model: nn.Module, fmt: str, path: str | Path, example_input: ModelInput,
                 check_inputs: ModelInput | Iterable[Any] | None = None, plan: Mapping[str, Any] | None = None,
                 base_model: nn.Module | None = None, overwrite: bool = False) -> ExportResult:
    """Write ``model`` to ``path`` in format ``fmt``, reload it and check it against the in-memory model.

    ``model`` may be an ``nn.Module`` or a :class:`LoadedProgram` (a program of an int8 model is checked as
    int8: its metadata says so). ``check_inputs``: eval inputs (a batch, or a loader of ``(input, target)``; 64
    rows are used); required for int8 models, optional for float ones. An ``autocompress`` archive stores
    them. ``plan``: a JSON-serialisable dict stored with the export. ``base_model``: the original unpruned
    model, used to check that an ``autocompress`` archive rebuilds (without it the embedded program is
    checked, and a float model serves as its own base). Raises :class:`ExportError` (one line) on any
    failure; no file is left behind then.
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
    int8 = is_int8(subject)
    if int8 and check_inputs is None:
        raise ExportError(f"an int8 {type(model).__name__} without check_inputs",
                          "evaluation inputs: the int8 check is top-1 agreement, which copies of one example "
                          "cannot test", "pass check_inputs=task.eval_loader()")
    x = to_device(example_input, "cpu")
    # A trimmed vocabulary is also checked on ids outside the kept set (they must reach the unknown row).
    check = add_remap_probe_rows(subject, check_batch(check_inputs, x))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(path)
    try:
        with silent():
            reference = logits(subject, check)
            tolerance = tolerance_for(reference, int8)
            meta = _meta(subject, x, dict(plan) if plan is not None else None)
            try:
                data = WRITERS[fmt](subject, x, meta, check=check if check_inputs is not None else None)
            except Exception as exc:  # tracing and the exporters run the user's forward and raise many types;
                # the message keeps the reason and names the formats that can hold the model
                others = [f for f in supported_formats(model, x) if f != fmt]
                raise ExportError(f"{type(model).__name__} cannot be exported as {fmt} ({describe_error(exc)})",
                                  f"a format that can hold it: {', '.join(others) or 'none found'}",
                                  f"export with format={others[0]!r}" if others else "report this model") from exc
            tmp.write_bytes(data)
            routes = _verify(fmt, tmp, subject, check, reference, int8, base_model)
        worst = tolerance.worst(list(routes.values()))
        if not tolerance.passes(worst):
            raise ExportError(f"the reloaded {fmt} export gives {tolerance.metric}={worst:.4g} ({routes})",
                              tolerance.describe(), "try another format, or report this model")
        if path.exists() and not overwrite:  # appeared while we worked: still never clobber it
            raise ExportError(f"{path} already exists", "a path that holds no file", "choose another path")
        os.replace(tmp, path)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):  # reloading runs the format's runtime (TorchScript, onnxruntime, ...),
            # which raises its own types: one line that keeps the reason
            raise ExportError(f"exporting as {fmt} failed ({describe_error(exc)})",
                              "a model that traces on example_input", "check example_input, or try another format") \
                from exc
        raise
    return ExportResult(path=path, format=fmt, check_metric=tolerance.metric, check_value=float(worst),
                        threshold=tolerance.threshold, samples=batch_len(check), routes=routes,
                        size_bytes=path.stat().st_size, rtol=tolerance.rtol, atol=tolerance.atol,
                        reference_scale=tolerance.reference_scale,
                        check_inputs="given" if check_inputs is not None else "example copies")


def _verify(fmt: str, tmp: Path, subject: nn.Module, check: ModelInput, reference: torch.Tensor,
            int8: bool, base_model: nn.Module | None) -> dict[str, float]:
    """Reload ``tmp`` by every route a user may take and compare each with the in-memory model."""
    routes: dict[str, float] = {}
    if fmt != "autocompress":
        routes[fmt] = compare(reference, logits(LOADERS[fmt](tmp), check), int8)
        return routes
    manifest = read_manifest(tmp)
    if manifest["files"].get("program"):
        routes["program"] = compare(reference, logits(load_archive(tmp), check), int8)
    base = base_model if base_model is not None else (None if int8 else subject)
    if base is not None:
        routes["module"] = compare(reference, logits(load_archive(tmp, base), check), int8)
    if not routes:
        raise ExportError("an int8 model that cannot be traced, exported without base_model",
                          "base_model, to check that the archive rebuilds", "pass base_model=<the original model>")
    return routes
