"""Export of study trials: int8 trials (static and QAT) export to ONNX and TorchScript from the CLI and from the
dashboard, checked by top-1 agreement on the evaluation rows stored in the trial's archive, and the ONNX file
keeps the trial's accuracy in ONNX Runtime.

One small real study (digits, low budget) is made for the module: trial 0 is the selector's plan, trial 1 a
static int8 plan and trial 2 a QAT int8 plan, enqueued as trial parameters.
"""

import json
import shutil
import zipfile

import pytest
import torch

from autocompress import study as acs
from autocompress.requirements import Requirements

from .conftest import run_cli

PLAN = {"pruning.ratio": 0.3, "pruning.technique": "magnitude", "pruning.strategy": "global", "pruning.steps": 1,
        "pruning.round_to": 0, "distillation.technique": "finetune", "distillation.lr": 1e-3}
INT8 = {1: "static", 2: "qat"}  # trial number -> quantization mode


@pytest.fixture(scope="module")
def int8_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8-study")
    storage = f"sqlite:///{folder}/s.db"
    requirements = Requirements(objective="size", max_drop=5, target=2, budget="low")
    study = acs.run_study("digits", requirements, ["size"], 3, name="int8", storage=storage, n_neighbours=0,
                          enqueue=[{**PLAN, "quantization.mode": mode} for mode in INT8.values()])
    trials = {t.number: t for t in study.get_trials()}
    for number, mode in INT8.items():
        trial = trials[number]
        assert trial.state.name == "COMPLETE", trial.user_attrs.get("error")
        assert trial.params["quantization.mode"] == mode
    return {"folder": folder, "storage": storage, "study": study, "trials": trials}


@pytest.fixture(scope="module")
def digits_eval():
    from autocompress.tasks.digits import task

    return task().eval_data.tensors


def _onnx_accuracy(path, x, y):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return (torch.from_numpy(logits).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("number", sorted(INT8))
def test_int8_trial_exports_from_the_cli_and_keeps_its_accuracy_in_onnx(int8_study, digits_eval, tmp_path, number):
    x, y = digits_eval
    trial = int8_study["trials"][number]
    stored = trial.user_attrs["metrics"]["metric"]["value"]
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"trial{number}.{fmt}"
        result = run_cli("export", "--storage", int8_study["storage"], "--name", "int8", "--trial", str(number),
                         "--format", fmt, "--out", str(out), "--json", cwd=int8_study["folder"])
        assert result.returncode == 0, result.stderr
        figures = json.loads(result.stdout)
        # The int8 check (top-1 agreement), on the real evaluation rows stored in the archive.
        assert figures["check"] == "top1_agreement" and figures["value"] >= 0.99, figures
        assert figures["check_inputs"] == "archive" and figures["samples"] == 64 and not figures["notes"]
    accuracy = _onnx_accuracy(tmp_path / f"trial{number}.onnx", x, y)
    print(f"trial {number} ({INT8[number]} int8): stored accuracy {stored:.4f}, onnxruntime {accuracy:.4f}")
    assert abs(accuracy - stored) <= 0.005


@pytest.mark.parametrize("number", sorted(INT8))
def test_int8_trial_exports_from_the_dashboard(int8_study, digits_eval, tmp_path, number):
    from dashboard import data

    x, y = digits_eval
    stored = int8_study["trials"][number].user_attrs["metrics"]["metric"]["value"]
    for fmt in ("onnx", "torchscript"):
        path, figures = data.export(int8_study["storage"], "int8", number, fmt, tmp_path)
        assert path.is_file() and figures["check"] == "top1_agreement" and figures["value"] >= 0.99
        assert figures["check_inputs"] == "archive"
    assert abs(_onnx_accuracy(tmp_path / f"int8-trial-{number}.onnx", x, y) - stored) <= 0.005


def test_trial_archive_holds_its_real_check_rows_and_copies_verbatim(int8_study, digits_eval, tmp_path):
    from autocompress.export import read_check_inputs

    x, _ = digits_eval
    study, trial = int8_study["study"], int8_study["trials"][1]
    archive = acs.download_trial_model(study, trial, tmp_path)
    # The first 64 rows of the evaluation set, which the trial's archive was checked on when the study wrote it.
    assert torch.equal(read_check_inputs(archive), x[:64])
    figures = acs.export_trial(study, trial, "autocompress", tmp_path / "copy.acz")
    assert figures["check"] == "zip_crc" and (tmp_path / "copy.acz").read_bytes() == archive.read_bytes()


def test_archive_without_check_rows_falls_back_with_a_note(int8_study, tmp_path):
    """An archive written before archives stored evaluation rows: checked on random inputs, and said so."""
    study, trial = int8_study["study"], int8_study["trials"][1]
    artifacts = tmp_path / "artifacts"
    shutil.copytree(acs.study_meta(study)["artifacts"], artifacts)
    stored = next(p for p in artifacts.rglob("*") if p.is_file() and p.name == trial.user_attrs["artifact_id"])
    with zipfile.ZipFile(stored) as old:
        members = {n: old.read(n) for n in old.namelist() if n != "check_inputs.pt"}
    manifest = json.loads(members["manifest.json"])
    manifest["files"].pop("check_inputs")
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(stored, "w") as rewritten:
        for name, content in members.items():
            rewritten.writestr(name, content)
    figures = acs.export_trial(study, trial, "torchscript", tmp_path / "old.ts", artifacts=str(artifacts))
    assert figures["check"] == "top1_agreement" and figures["check_inputs"] == "random"
    assert len(figures["notes"]) == 1 and "holds no evaluation inputs" in figures["notes"][0]
