"""--backend onnxruntime end to end: a study whose trials are ONNX Runtime programs, stored and exported as such."""

import hashlib
import json

import pytest
import torch

from autocompress import study as acs

from .conftest import run_cli

REQ = ["--task", "digits", "--objective", "size", "--max-drop", "1", "--target", "30", "--budget", "low",
       "--backend", "onnxruntime"]


@pytest.fixture(scope="module")
def ort_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort")
    storage = f"sqlite:///{folder}/o.db"
    result = run_cli("study", *REQ, "--name", "o", "--storage", storage, "--trials", "2", "--neighbours", "1",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return {"folder": folder, "storage": storage, "study": acs.load_study("o", storage)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_trial_stores_the_onnx_program_it_was_measured_with(ort_study, tmp_path):
    import autocompress
    from autocompress.task import load_task

    study, task = ort_study["study"], load_task("digits")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done
    for trial in done:
        assert trial.user_attrs["artifact_format"] == "onnx"
        assert trial.user_attrs["plan"]["quantization"]["backend"] == "onnxruntime"
        path = acs.download_trial_model(study, trial, tmp_path / "not" / "made")  # created
        assert path.suffix == ".onnx" and path.stat().st_size == trial.user_attrs["artifact_bytes"]
        model = autocompress.load(path)  # ONNX Runtime loads it
        correct = total = 0
        with torch.inference_mode():
            for x, y in task.eval_loader():
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        stored = trial.user_attrs["metrics"]["metric"]["value"]
        assert abs(100 * correct / total - 100 * stored) <= 0.2
        widths = acs.trial_widths(study, trial)
        assert widths and all(w["compressed"] for w in widths.values())


def test_export_returns_the_stored_program_bit_for_bit_and_refuses_other_formats(ort_study, tmp_path):
    study = ort_study["study"]
    result = run_cli("export", "--name", "o", "--storage", ort_study["storage"], "--best", "--format", "onnx",
                     "--out", str(tmp_path / "best.onnx"), "--json", cwd=ort_study["folder"])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    trial = study.trials[info["trial"]]
    (tmp_path / "stored").mkdir()
    stored = acs.download_trial_model(study, trial, tmp_path / "stored")
    assert _sha((tmp_path / "best.onnx").read_bytes()) == _sha(stored.read_bytes()) and info["check"] == "unchanged"
    refused = run_cli("export", "--name", "o", "--storage", ort_study["storage"], "--best", "--format",
                      "torchscript", "--out", str(tmp_path / "best.ts"), cwd=ort_study["folder"])
    assert refused.returncode != 0 and "--format onnx" in refused.stderr and refused.stderr.count("\n") == 1
    assert not (tmp_path / "best.ts").exists()


def test_the_dashboard_offers_and_exports_the_program(ort_study, tmp_path):
    from dashboard import data

    loaded = data.load(ort_study["storage"], "o")
    record = next(t for t in loaded["trials"] if t["state"] == "COMPLETE")
    assert data.export_formats(record) == ("onnx",)
    path, figures = data.export(ort_study["storage"], "o", record["number"], "onnx", tmp_path)
    assert figures["check"] == "unchanged" and path.suffix == ".onnx"
    # The trial's size is the bytes of the file it stored, and the export is that file.
    assert path.stat().st_size == pytest.approx(record["metrics"]["size_mb"] * 1e6, abs=1)


def test_compress_writes_the_measured_program_and_refuses_other_formats_first(tmp_path):
    import autocompress

    refused = run_cli("compress", *REQ, "--out", str(tmp_path / "no"), "--format", "torchscript")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--backend onnxruntime" in refused.stderr
    assert not (tmp_path / "no").exists()
    result = run_cli("compress", "--task", "digits", "--objective", "size", "--max-drop", "2", "--target", "8",
                     "--budget", "low", "--backend", "onnxruntime", "--out", str(tmp_path / "out"))
    assert result.returncode in (0, 3), result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    program = tmp_path / "out" / "model.onnx"
    assert program.is_file() and not (tmp_path / "out" / "model.acz").exists()
    assert program.stat().st_size == pytest.approx(report["compressed"]["size_mb"] * 1e6, abs=1)
    assert autocompress.load(program)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
