"""One-shot compression into a folder: what ``autocompress compress`` does, for library callers too.

:func:`compress` checks every input before any work (the output folder, the number of attempts, the formats the
plan's model can hold), profiles the model, picks the rule plan, runs it under the requirements (with
back-off, see :func:`autocompress.pipeline.run`), and writes the ``autocompress`` archive, the report and the
other formats asked for. The archive and the report are written first: a format that fails afterwards does not
cost the run's result. When back-off moved the model to a quantization mode that a requested format cannot
hold, or the format's file fails its reload check, that format is skipped and :attr:`CompressOutcome.skipped`
says why.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, ExportError
from . import pipeline
from .pipeline import MAX_ATTEMPTS, PipelineResult, check_attempts
from .requirements import Requirements
from .task import Task

EXTRA_FORMATS = ("torchscript", "onnx", "pt2")  # besides the autocompress archive, which is always written


@dataclass(frozen=True)
class CompressOutcome:
    """What :func:`compress` wrote and measured."""

    result: PipelineResult
    report: dict[str, Any]
    out: Path
    exports: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not written

    @property
    def complete(self) -> bool:
        """The target was met and every requested format was written."""
        return bool(self.result.target_met) and not self.skipped


def prepare_out(path: str | Path, overwrite: bool) -> Path:
    """Check that ``path`` can take a run's files (a new or empty directory, or ``overwrite``), before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(path)!r} exists and is not a directory", "a directory path (new or empty)",
                          "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {str(path)!r} already holds files", "a new or empty directory",
                          "choose another --out, or pass --overwrite to replace an earlier run's files")
    parent = out if out.exists() else next((p for p in out.absolute().parents if p.exists()), Path("/"))
    writable = os.access(parent, os.W_OK)
    if writable:  # root passes os.access almost everywhere; an unnamed temporary file is the real test
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError:
            writable = False
    if not writable:
        raise ConfigError(f"--out {str(path)!r} is not writable", "a directory you can write to",
                          "choose another --out")
    return out


def check_formats(formats: Sequence[str], mode: str) -> None:
    """Refuse a format that cannot hold a model quantized with ``mode`` (the plan's), before the run."""
    from .export.formats import refuse_format

    for fmt in formats:
        refuse_format(fmt, mode, "the plan's model",
                      f"drop --format {fmt}; the autocompress archive is always written")


def compress(task: Task, requirements: Requirements, out: str | Path, *, formats: Sequence[str] = (),
             attempts: int = MAX_ATTEMPTS, overwrite: bool = False, device: str = "auto",
             threads: int | None = None, log: Callable[[str], None] | None = None) -> CompressOutcome:
    """Compress ``task``'s model under ``requirements`` into the folder ``out`` (see the module docstring)."""
    from .export import SUFFIXES, export_model, formats_for_mode
    from .profile import runtime_program_bytes
    from .report import write_report
    from .selection import plan_task

    say = log or (lambda message: None)
    check_attempts(attempts)
    unknown = [f for f in formats if f not in EXTRA_FORMATS]
    if unknown:
        raise ConfigError(f"--format {unknown[0]}", f"one of {', '.join(EXTRA_FORMATS)}", "pick one of those")
    if requirements.backend == "onnxruntime" and any(f != "onnx" for f in formats):
        raise ConfigError(f"--format {next(f for f in formats if f != 'onnx')} with --backend onnxruntime",
                          "no --format (the run writes model.onnx, the program it measured)",
                          "leave out --format, or use --backend cpu for the other formats")
    out = prepare_out(out, overwrite)
    profile, selection = plan_task(task, requirements, threads=threads, progress=log is not None)
    check_formats(formats, selection.plan.quantization_mode)
    say(f"plan: {selection.plan.summary()}")
    result = pipeline.run(task, selection.plan, requirements, original=profile, device=device, max_attempts=attempts,
                 log=say)
    out.mkdir(parents=True, exist_ok=True)
    report = result.report([str(r) for r in selection.reasons])
    report["requirements"] = requirements.to_dict()
    report["task"] = task.name
    title = f"{task.name}: {requirements.objective} {requirements.target:g}× within {requirements.max_drop:g}"
    exports: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    report["exports"], report["skipped_formats"] = exports, skipped
    final_mode = result.plan.quantization_mode
    can_hold = formats_for_mode(final_mode)
    # The run's own file: the archive, or on the ONNX Runtime engine the .onnx program it was measured with.
    primary = "onnx" if runtime_program_bytes(result.model) is not None else "autocompress"
    if primary == "onnx":
        can_hold, formats = ("onnx",), ()
    for fmt in [primary, *formats]:
        if fmt not in can_hold:
            skipped[fmt] = (f"back-off moved the model from {selection.plan.quantization_mode} to {final_mode} "
                            f"quantization, which {fmt} cannot hold (formats that can: {', '.join(can_hold)})")
        else:
            try:
                exported = export_model(result.model, fmt, out / f"model.{SUFFIXES[fmt]}", task.example_input,
                                        check_inputs=task.eval_loader(), plan=result.plan.to_dict(),
                                        base_model=task.model, overwrite=overwrite)
            except ExportError as exc:
                if fmt == primary:
                    raise  # the run's own file: without it nothing was delivered
                # After the work, a format that fails its reload check is skipped with the reason (exit 3), and
                # what was written stays: a bad-input error (exit 2) would say the run never happened.
                skipped[fmt] = str(exc)
                say(f"skipped --format {fmt}: {exc}")
            else:
                exports[fmt] = {"path": str(exported.path), "check": exported.check_metric,
                                "value": exported.check_value}
        write_report(out, report, title)  # after each format: a later format's failure keeps what was written
    return CompressOutcome(result=result, report=report, out=out, exports=exports, skipped=skipped)
