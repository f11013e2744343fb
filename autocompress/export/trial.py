"""Export of a study trial: its stored ``autocompress`` archive, re-exported in any format with the reload check;
or, for a trial of the ONNX Runtime engine, its stored ``.onnx`` file, exported unchanged.

The model comes from the trial's archive (its embedded TorchScript program), so no task code is imported; the
archive's quantization record tells an int8 model apart, and the evaluation inputs stored in the archive are
what the new file is checked on. Study helpers (``study_meta``, ``StudyError``) are imported lazily from
:mod:`autocompress.study`, which re-exports these functions.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import _arch
from .._io import atomic_write
from ..errors import ExportError, describe_error
from .api import export_model, load
from .archive import read_check_inputs, read_manifest
from .check import CHECK_ROWS
from .formats import SUFFIXES, refuse_format

log = logging.getLogger("autocompress.export")

# A trial's user attributes: the format of its stored model where it is not an autocompress archive ("onnx": the
# ONNX Runtime program it was measured with), and, for such a trial, its layers' widths (no archive holds them).
ARTIFACT_FORMAT_ATTR = "artifact_format"
WIDTHS_ATTR = "layer_widths"


def artifact_format(trial: Any) -> str:
    """``autocompress`` (an archive) or ``onnx`` (an ONNX Runtime trial's program): what the trial stored."""
    return (trial.user_attrs or {}).get(ARTIFACT_FORMAT_ATTR, "autocompress")


def download_trial_model(study: Any, trial: Any, folder: str | Path, artifacts: str | None = None) -> Path:
    """Copy ``trial``'s archive out of the study's artifact store into ``folder`` (created if missing); its path."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    from ..study import StudyError, study_meta

    meta = study_meta(study)
    root = Path(artifacts) if artifacts else Path(meta["artifacts"])
    path = Path(folder) / f"trial-{trial.number}.{SUFFIXES[artifact_format(trial)]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the destination, not the store: its own message
        raise StudyError(f"cannot create the folder {str(path.parent)!r} ({describe_error(exc)})",
                         "a folder you can write to", "pass another destination folder") from exc
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(str(root)), file_path=str(path),
                          artifact_id=trial.user_attrs["artifact_id"])
    except (ArtifactNotFound, OSError) as exc:  # not in the store, or the store's folder is unreadable
        raise StudyError(f"the model of trial {trial.number} is missing from {root} ({describe_error(exc)})",
                         "the artifact folder the study wrote", "pass --artifacts DIR where it lives") from exc
    return path


def trial_widths(study: Any, trial: Any, artifacts: str | None = None) -> dict[str, dict[str, int | None]]:
    """Per conv/linear layer, its output width in the original model and in ``trial``'s model (read from the
    trial's archive manifest; None where the study did not record the original widths)."""
    from ..study import study_meta

    original = study_meta(study).get("original_widths") or {}
    if artifact_format(trial) == "onnx":
        pruned = dict(trial.user_attrs.get(WIDTHS_ATTR) or {})
    else:
        with tempfile.TemporaryDirectory() as folder:
            pruned = _arch.layer_widths(read_manifest(download_trial_model(study, trial, folder, artifacts))
                                        ["architecture"])
    names = list(original) + [n for n in pruned if n not in original]
    return {n: {"original": original.get(n), "compressed": pruned.get(n)} for n in names}


def _copy_archive(archive: Path, out: Path, number: int) -> dict[str, Any]:
    """The trial's archive itself (checked when the trial wrote it), its zip checksums verified, copied to ``out``."""
    with zipfile.ZipFile(archive) as opened:
        corrupt = opened.testzip()
    if corrupt is not None:
        raise ExportError(f"the archive of trial {number} is corrupt ({corrupt} fails its checksum)",
                          "an intact archive in the artifact store", "re-run the trial")
    with open(archive, "rb") as source:
        atomic_write(out, lambda fh: shutil.copyfileobj(source, fh))
    return {"path": str(out), "format": "autocompress", "check": "zip_crc", "value": 0.0}


def _copy_program(program: Path, out: Path, number: int) -> dict[str, Any]:
    """The trial's .onnx file itself, bit for bit (checked by ONNX Runtime loading it), copied to ``out``."""
    from .formats import load_onnx

    try:
        load_onnx(program)
    except Exception as exc:  # ONNX Runtime's own errors: a damaged file
        raise ExportError(f"the ONNX program of trial {number} does not load ({describe_error(exc)[:160]})",
                          "an intact .onnx file in the artifact store", "re-run the trial") from exc
    with open(program, "rb") as source:
        atomic_write(out, lambda fh: shutil.copyfileobj(source, fh))
    return {"path": str(out), "format": "onnx", "check": "unchanged", "value": 0.0}


def export_trial(study: Any, trial: Any, fmt: str, out: str | Path, artifacts: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Export ``trial``'s stored model as ``fmt`` to ``out``, with the format's reload check; its figures.

    The new file is checked against the archive's program on the evaluation inputs stored in the archive (an
    int8 model by top-1 agreement, as its quantization record says). An archive older than those inputs is
    checked on random inputs shaped like the example, and the figures' ``notes`` say so. The file is written
    to a temporary name and renamed; an existing ``out`` is kept unless ``overwrite``.
    """
    mode = (trial.params or {}).get("quantization.mode", "none")
    refuse_format(fmt, mode, f"trial {trial.number}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists", "a path that holds no file", "choose another --out, or pass "
                          "--overwrite")
    notes: list[str] = []
    stored = artifact_format(trial)
    if stored == "onnx" and fmt != "onnx":
        raise ExportError(f"--format {fmt} for trial {trial.number}, whose model is the ONNX Runtime program it "
                          "was measured with (a study run with --backend onnxruntime)", "--format onnx",
                          "export it with --format onnx")
    with tempfile.TemporaryDirectory() as folder:
        archive = download_trial_model(study, trial, folder, artifacts)
        if stored == "onnx":
            figures = _copy_program(archive, out, trial.number)
        elif fmt == "autocompress":
            figures = _copy_archive(archive, out, trial.number)
        else:
            manifest = read_manifest(archive)
            example = _arch.input_from_spec(manifest["input_spec"])
            check = read_check_inputs(archive)
            source = "archive"
            if check is None:
                source = "random"
                notes.append(f"the archive of trial {trial.number} holds no evaluation inputs (written before "
                             f"archives stored them): the {fmt} export was checked on {CHECK_ROWS} random inputs "
                             "shaped like the example, which proves less than real data; re-run the trial for a "
                             "check on real inputs")
                log.warning("note: %s", notes[-1])
                check = batch_like(example, CHECK_ROWS)
            result = export_model(load(archive), fmt, out, example, check_inputs=check, plan=manifest.get("plan"),
                                  overwrite=overwrite)
            figures = {"path": str(result.path), "format": result.format, "check": result.check_metric,
                       "value": result.check_value, "threshold": result.threshold, "samples": result.samples,
                       "check_inputs": source}
    attrs = trial.user_attrs
    figures.update(trial=trial.number, plan_summary=attrs.get("plan_summary"), metric_drop=attrs.get("metric_drop"),
                   reduction=attrs.get("reduction"), metrics=attrs.get("metrics"), notes=notes)
    return figures


def batch_like(example: Any, rows: int) -> Any:
    """``rows`` inputs shaped like ``example`` (random floats, or the example's integer tensors repeated)."""

    def grow(t: Any) -> Any:
        reps = [max(1, rows // max(t.shape[0], 1))] + [1] * (t.dim() - 1)
        if t.dtype.is_floating_point:
            return torch.rand(t.shape[0] * reps[0], *t.shape[1:], generator=torch.Generator().manual_seed(0))
        return t.repeat(*reps)

    if isinstance(example, dict):
        return {k: grow(v) for k, v in example.items()}
    return grow(example)
