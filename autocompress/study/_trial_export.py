"""Exporting a trial's stored model (moving to the export package on another branch; deleted at that merge)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .. import _arch
from ..errors import describe_error
from ._common import StudyError
from .results import study_meta


def download_trial_model(study: Any, trial: Any, folder: str | Path, artifacts: str | None = None) -> Path:
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    meta = study_meta(study)
    root = Path(artifacts) if artifacts else Path(meta["artifacts"])
    path = Path(folder) / f"trial-{trial.number}.acz"
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(str(root)), file_path=str(path),
                          artifact_id=trial.user_attrs["artifact_id"])
    except Exception as exc:
        raise StudyError(f"the model of trial {trial.number} is missing from {root} ({describe_error(exc)})",
                         "the artifact folder the study wrote", "pass --artifacts DIR where it lives") from exc
    return path


def trial_widths(study: Any, trial: Any, artifacts: str | None = None) -> dict[str, dict[str, int | None]]:
    """Per conv/linear layer, its output width in the original model and in ``trial``'s model (read from the
    trial's archive manifest; None where the study did not record the original widths)."""
    from ..export import read_manifest

    original = study_meta(study).get("original_widths") or {}
    with tempfile.TemporaryDirectory() as folder:
        pruned = _arch.layer_widths(read_manifest(download_trial_model(study, trial, folder, artifacts))
                                    ["architecture"])
    names = list(original) + [n for n in pruned if n not in original]
    return {n: {"original": original.get(n), "compressed": pruned.get(n)} for n in names}


def export_trial(study: Any, trial: Any, fmt: str, out: str | Path, artifacts: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Export ``trial``'s stored model as ``fmt`` to ``out``, with the format's reload check; its figures.

    The model comes from the trial's archive (its embedded TorchScript program), so no task code is imported.
    The file is written to a temporary name and renamed; an existing ``out`` is kept unless ``overwrite``.
    """
    import shutil
    import warnings

    import torch

    from .._io import atomic_write
    from ..errors import ExportError
    from ..export import export_model, formats_for_mode, load, read_manifest

    mode = (trial.params or {}).get("quantization.mode", "none")
    can_hold = formats_for_mode(mode)
    if fmt not in can_hold:
        kind = "float" if mode == "none" else f"{mode} int8"
        raise ExportError(f"trial {trial.number} is a {kind} model, which {fmt} cannot hold",
                          f"a format that can hold it: {', '.join(can_hold)}", f"pass --format {can_hold[0]}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists", "a path that holds no file", "choose another --out, or pass "
                          "--overwrite")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns a lot; the reload check says whether the export is good
        archive = download_trial_model(study, trial, folder, artifacts)
        manifest = read_manifest(archive)
        model = load(archive)
        example = _arch.input_from_spec(manifest["input_spec"])
        if fmt == "autocompress":
            # The archive itself (it holds the weights to rebuild the real module); checked by reloading it.
            with torch.inference_mode():
                same = torch.equal(model(example), load(archive)(example))
            if not same:
                raise ExportError(f"the archive of trial {trial.number} does not reload identically",
                                  "a stable archive", "re-run the trial")
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(archive, "rb") as source:
                atomic_write(out, lambda fh: shutil.copyfileobj(source, fh))
            figures: dict[str, Any] = {"path": str(out), "format": "autocompress", "check": "reload", "value": 0.0}
        else:
            result = export_model(model, fmt, out, example, check_inputs=batch_like(example, 64),
                                  plan=manifest.get("plan"), overwrite=overwrite)
            figures = {"path": str(result.path), "format": result.format, "check": result.check_metric,
                       "value": result.check_value}
    attrs = trial.user_attrs
    figures.update(trial=trial.number, plan_summary=attrs.get("plan_summary"), metric_drop=attrs.get("metric_drop"),
                   reduction=attrs.get("reduction"), metrics=attrs.get("metrics"))
    return figures


def batch_like(example: Any, rows: int) -> Any:
    """``rows`` inputs shaped like ``example`` (random floats, or the example's integer tensors repeated)."""
    import torch

    def grow(t: Any) -> Any:
        reps = [max(1, rows // max(t.shape[0], 1))] + [1] * (t.dim() - 1)
        if t.dtype.is_floating_point:
            return torch.rand(t.shape[0] * reps[0], *t.shape[1:], generator=torch.Generator().manual_seed(0))
        return t.repeat(*reps)

    if isinstance(example, dict):
        return {k: grow(v) for k, v in example.items()}
    return grow(example)

