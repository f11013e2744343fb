"""The ``autocompress`` archive: a zip that rebuilds the real module on its base model, or runs without it.

Members:
    ``manifest.json``    format version, plan (the caller's JSON dict), model class, quantization record
                         (mode, config, graph mode), the float architecture record (shapes and plain attributes
                         of every module, so a pruned architecture is JSON, see ``autocompress._arch``), input
                         spec, parameter shapes, and which members are present;
    ``weights.pt``       the state dict (float or int8), readable with ``torch.load(weights_only=True)``;
    ``program.pt``       a TorchScript program of the model, when it can be traced (else the manifest's
                         ``program_error`` says why not);
    ``program.onnx``     dynamic int8 models only: the ONNX Runtime int8 program made from the module (its
                         TorchScript program cannot become ONNX later), so a trial exports to ONNX without the
                         base model;
    ``check_inputs.pt``  up to 64 rows of the real evaluation inputs the archive was checked on (tensors only;
                         absent when the export was checked on copies of the example input). Re-exporting the
                         archive checks the new file on them (``export_trial``).
No member is an arbitrary pickle: ``weights.pt`` and ``check_inputs.pt`` hold tensors (int8 ones included),
strings, dtypes and containers only, and TorchScript archives are read by TorchScript's own loader, which
restores TorchScript types, never arbitrary Python classes.

``load_archive(path, base_model)`` rebuilds the pruned architecture from the record on a copy of the base model,
re-applies the recorded quantization structure (``quantization.requantize``) and loads the weights: the result
is the real ``nn.Module``. Without a base model it runs the embedded TorchScript program.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _arch
from .._tensors import ModelInput, batch_len
from ..errors import ExportError, describe_error
from ..quantization import quantization_info, requantize
from .check import rows
from .formats import (ARCHIVE_VERSION, META_NAME, LoadedProgram, is_int8, model_kind, torchscript_bytes,
                      write_onnx)

CHECK_INPUTS_MEMBER = "check_inputs.pt"
ONNX_MEMBER = "program.onnx"  # dynamic int8 models only: their ONNX Runtime int8 program
STORED_CHECK_BYTES = 8 * 2**20  # at most this much of check inputs in an archive (64 digits rows: 16 kB)


def _stored_check_rows(check: ModelInput) -> ModelInput:
    """The first rows of ``check`` that fit in :data:`STORED_CHECK_BYTES` (at least one row)."""
    tensors = check.values() if isinstance(check, dict) else [check]
    row_bytes = sum(t[:1].numel() * t.element_size() for t in tensors)
    return rows(check, max(1, STORED_CHECK_BYTES // max(row_bytes, 1)))


def write_archive(model: nn.Module, example_input: ModelInput, meta: dict[str, Any],
                  check: ModelInput | None = None, **_: Any) -> bytes:
    """The archive bytes. ``check``: the real evaluation inputs the export is checked on, stored with it."""
    if isinstance(model, LoadedProgram):
        raise ValueError("a loaded program holds no module structure to archive (archive the nn.Module)")
    info = quantization_info(model)
    if is_int8(model) and info is None:
        raise ValueError("int8 model made outside autocompress.quantization: its structure cannot be rebuilt")
    architecture = info["float_architecture"] if info else _arch.capture(model)
    state = model.state_dict()
    weights = io.BytesIO()
    torch.save(state, weights)
    program_error = None
    try:
        program: bytes | None = torchscript_bytes(model, example_input, meta)
    except Exception as exc:  # tracing runs the user's forward, which may raise anything; the archive stays
        # useful with a base model, and the manifest keeps the reason
        program, program_error = None, describe_error(exc)
    onnx_program, onnx_error = None, None
    if model_kind(model) == "dynamic":
        # The TorchScript program of a dynamic int8 model cannot become ONNX later (its int8 ops have no ONNX
        # operators, and the module is gone without the base model): make the ONNX program now, from the module.
        try:
            onnx_program = write_onnx(model, example_input, meta)
        except Exception as exc:  # the exporter runs the user's forward; the manifest keeps the reason
            onnx_error = describe_error(exc)
    stored = None
    if check is not None:
        stored = io.BytesIO()
        torch.save(_stored_check_rows(check), stored)
    manifest = {
        "format": "autocompress", **meta,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "float_class": architecture["modules"][""]["class"],
        "architecture": architecture,
        "param_shapes": {k: list(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
        "files": {"weights": "weights.pt", "program": "program.pt" if program is not None else None,
                  "check_inputs": CHECK_INPUTS_MEMBER if stored is not None else None,
                  "onnx": ONNX_MEMBER if onnx_program is not None else None},
        "program_error": program_error,
        "onnx_error": onnx_error,
        "torch_version": torch.__version__,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        archive.writestr("weights.pt", weights.getvalue())
        if program is not None:
            archive.writestr("program.pt", program)
        if stored is not None:
            archive.writestr(CHECK_INPUTS_MEMBER, stored.getvalue())
        if onnx_program is not None:
            archive.writestr(ONNX_MEMBER, onnx_program)
    return buffer.getvalue()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of an autocompress archive (plain JSON: no torch object is loaded)."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


def read_check_inputs(path: str | Path) -> ModelInput | None:
    """The evaluation inputs stored in an archive (``weights_only=True``), or None for an archive without them
    (written before they were stored, or checked on copies of the example input)."""
    manifest = read_manifest(path)
    member = (manifest.get("files") or {}).get("check_inputs")
    if not member:
        return None
    with zipfile.ZipFile(path) as archive:
        stored = torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
    if isinstance(stored, torch.Tensor) or (isinstance(stored, dict) and stored
                                            and all(isinstance(v, torch.Tensor) for v in stored.values())):
        if batch_len(stored) > 0:
            return stored
    raise ExportError(f"{path}: {member} holds a {type(stored).__name__}, not input tensors",
                      "a batch of input tensors (or a dict of them)", "re-export the model")


def load_archive(path: Path, base_model: nn.Module | None = None) -> nn.Module:
    manifest = read_manifest(path)
    if manifest.get("autocompress_format_version", 0) > ARCHIVE_VERSION:
        raise ExportError(f"archive format version {manifest['autocompress_format_version']}",
                          f"version {ARCHIVE_VERSION} or older", "upgrade autocompress")
    with zipfile.ZipFile(path) as archive:
        if base_model is None:
            if not manifest["files"].get("program"):
                why = f" ({manifest['program_error']})" if manifest.get("program_error") else ""
                raise ExportError(f"{path} holds no TorchScript program{why}",
                                  "a base model to rebuild the architecture",
                                  f"pass base_model=<the original {manifest['float_class']}>")
            extra = {META_NAME: ""}
            program = torch.jit.load(io.BytesIO(archive.read("program.pt")), map_location="cpu",
                                     _extra_files=extra)
            loaded = LoadedProgram("torchscript", program, manifest.get("input_keys"), manifest)
            if manifest["files"].get("onnx"):
                loaded.onnx_bytes = archive.read(manifest["files"]["onnx"])
            return loaded.eval()
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
