"""Export and reload: every format on a pruned, a quantized and a Hugging Face BERT model; safe writes; the float
check's tolerance follows the outputs' scale."""

import copy
import io
import json
import zipfile

import pytest
import torch
from torch import nn

import autocompress
from autocompress import export as E
from autocompress.export import api
from autocompress import quantization as Q
from autocompress._tensors import call_model, logits_of
from autocompress.errors import ExportError
from autocompress.profile import is_quantized

from .conftest import tiny_bert

PLAN = {"pruning": {"kind": "pruning.magnitude", "ratio": 0.5}, "quantization": "static"}


@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks.digits import task

    return task()


@pytest.fixture(scope="module")
def pruned(digits):
    import torch_pruning as tp

    model = copy.deepcopy(digits.model).eval()
    pruner = tp.pruner.MagnitudePruner(model, digits.example_input, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, ignored_layers=[model.classifier[3]])
    pruner.step()
    assert model.features[0].out_channels == 16  # really pruned
    return model


@pytest.fixture(scope="module")
def static_int8(digits):
    return Q.quantize(digits.model, Q.StaticQuantization(calibration_batches=4), digits.train_loader(),
                      digits.example_input, progress=False).model


@pytest.fixture(scope="module")
def pruned_int8(digits, pruned):
    return Q.quantize(pruned, Q.StaticQuantization(calibration_batches=4), digits.train_loader(),
                      digits.example_input, progress=False).model


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert()
    ids = torch.randint(0, 100, (64, 16))
    mask = torch.ones_like(ids)
    mask[:, 12:] = 0
    return model, {"input_ids": ids, "attention_mask": mask}


def _out(model, x):
    with torch.no_grad():
        return logits_of(call_model(model, x))


@pytest.mark.parametrize("fmt", E.FORMATS)
def test_pruned_model_round_trips_in_every_format(digits, pruned, tmp_path, fmt):
    result = E.export_model(pruned, fmt, tmp_path / f"m.{fmt}", digits.example_input, digits.eval_loader(),
                            plan=PLAN, base_model=digits.model)
    assert result.check_metric == "max_abs_diff" and result.check_value <= 1e-4 and result.samples == 64
    assert result.path.is_file() and result.size_bytes == result.path.stat().st_size
    loaded = E.load(result.path, base_model=digits.model if fmt == "autocompress" else None)
    x = next(iter(digits.eval_loader()))[0]
    assert torch.allclose(_out(loaded, x), _out(pruned, x), atol=1e-4)
    if fmt == "autocompress":  # the real pruned module, rebuilt from the JSON record on the base model
        assert type(loaded) is type(pruned) and loaded.features[0].out_channels == 16
        assert set(result.routes) == {"program", "module"}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "autocompress"])
def test_int8_model_round_trips(digits, static_int8, tmp_path, fmt):
    result = E.export_model(static_int8, fmt, tmp_path / f"q.{fmt}", digits.example_input, digits.eval_loader())
    assert result.check_metric == "top1_agreement" and result.check_value >= 0.99
    loaded = E.load(result.path)
    x = next(iter(digits.eval_loader()))[0]
    agreement = (_out(loaded, x).argmax(1) == _out(static_int8, x).argmax(1)).float().mean()
    assert agreement >= 0.99


def test_pruned_int8_archive_rebuilds_on_the_base_model(digits, pruned_int8, tmp_path):
    result = E.export_model(pruned_int8, "autocompress", tmp_path / "pq.acz", digits.example_input,
                            digits.eval_loader(), plan=PLAN, base_model=digits.model)
    assert set(result.routes) == {"program", "module"} and min(result.routes.values()) >= 0.99
    rebuilt = autocompress.load(result.path, base_model=digits.model)
    assert is_quantized(rebuilt) and not isinstance(rebuilt, E.LoadedProgram)
    x = next(iter(digits.eval_loader()))[0]
    assert torch.equal(_out(rebuilt, x), _out(pruned_int8, x))  # same int8 kernels, same weights
    with zipfile.ZipFile(result.path) as archive:
        assert sorted(archive.namelist()) == ["check_inputs.pt", "manifest.json", "program.pt", "weights.pt"]
        manifest = json.loads(archive.read("manifest.json"))
        # weights_only=True refuses any pickled object that is not a tensor, dtype or plain container.
        state = torch.load(io.BytesIO(archive.read("weights.pt")), weights_only=True)
    # The real evaluation rows the archive was checked on, stored for later re-exports (tensors only).
    stored = E.read_check_inputs(result.path)
    assert torch.equal(stored, next(iter(digits.eval_loader()))[0][:64]) and manifest["files"]["check_inputs"]
    assert manifest["plan"] == PLAN and manifest["quantization"]["mode"] == "static"
    assert manifest["float_class"].endswith("DigitsCNN")
    assert manifest["architecture"]["modules"]["features.0"]["attrs"]["out_channels"] == 16
    assert any(v.dtype == torch.qint8 for v in state.values() if isinstance(v, torch.Tensor))
    with pytest.raises(ExportError, match="does not match the archive"):
        E.load(result.path, base_model=nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("fmt", E.FORMATS)
def test_bert_with_dict_inputs_round_trips(bert, tmp_path, fmt):
    model, batch = bert
    example = {k: v[:1] for k, v in batch.items()}
    result = E.export_model(model, fmt, tmp_path / f"b.{fmt}", example, batch, base_model=model)
    assert result.check_value <= 1e-4
    loaded = E.load(result.path, base_model=model if fmt == "autocompress" else None)
    assert torch.allclose(_out(loaded, batch), _out(model, batch), atol=1e-4)  # called with keyword tensors


def test_dynamic_int8_bert_archive_and_unsupported_format_names_the_ones_that_can(bert, tmp_path):
    model, batch = bert
    example = {k: v[:1] for k, v in batch.items()}
    q = Q.quantize(model, Q.DynamicQuantization(), example_input=example).model
    result = E.export_model(q, "autocompress", tmp_path / "bq.acz", example, batch, base_model=model)
    assert result.check_value >= 0.99
    assert torch.equal(_out(E.load(result.path, base_model=model), batch), _out(q, batch))
    target = tmp_path / "bq.pt2"
    with pytest.raises(ExportError) as info:
        E.export_model(q, "pt2", target, example, batch)
    message = str(info.value)
    assert "\n" not in message and "cannot be exported as pt2" in message
    assert "can hold it: torchscript, onnx, autocompress" in message
    assert list(tmp_path.iterdir()) == [tmp_path / "bq.acz"]  # no partial file, no temp file


def _decisive(model, batch):
    """A copy of a random BERT trained briefly on a rule of its inputs: a random BERT's logits are near ties
    across inputs (spread 0.008) that any int8 rounding flips, which would make top-1 agreement meaningless."""
    import copy

    model = copy.deepcopy(model).train()
    labels = (batch["input_ids"][:, 1] * 3 // 100).clamp(max=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        optimizer.step()
    return model.eval()


def test_dynamic_int8_archive_carries_its_onnx_program_so_it_exports_without_the_base_model(bert, tmp_path):
    model, batch = bert
    model = _decisive(model, batch)
    example = {k: v[:1] for k, v in batch.items()}
    q = Q.quantize(model, Q.DynamicQuantization(), example_input=example).model
    archive = E.export_model(q, "autocompress", tmp_path / "q.acz", example, batch).path
    program = E.load(archive)  # no base model: the stored TorchScript program
    assert program.onnx_bytes
    result = E.export_model(program, "onnx", tmp_path / "q.onnx", example, batch)
    assert result.check_value >= 0.99
    assert result.path.read_bytes() == program.onnx_bytes


def test_dynamic_int8_bert_goes_to_onnx_as_onnx_runtime_int8_and_agrees(bert, tmp_path):
    import onnx

    model, batch = bert
    model = _decisive(model, batch)
    example = {k: v[:1] for k, v in batch.items()}
    q = Q.quantize(model, Q.DynamicQuantization(), example_input=example).model
    result = E.export_model(q, "onnx", tmp_path / "bq.onnx", example, batch)
    assert result.check_metric == "top1_agreement" and result.check_value >= 0.99
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops  # int8 in the file, not a float graph
    loaded = E.load(result.path)
    agree = (_out(loaded, batch).argmax(-1) == _out(q, batch).argmax(-1)).float().mean()
    assert agree >= 0.99


def test_pt2_on_int8_names_the_formats_that_can(digits, static_int8, tmp_path):
    with pytest.raises(ExportError, match="can hold it: torchscript, onnx, autocompress"):
        E.export_model(static_int8, "pt2", tmp_path / "q.pt2", digits.example_input, digits.eval_loader())
    assert list(tmp_path.iterdir()) == []
    assert E.supported_formats(static_int8) == ["torchscript", "onnx", "autocompress"]
    assert E.supported_formats(digits.model) == list(E.FORMATS)


def test_existing_file_is_never_overwritten_unless_asked(digits, pruned, tmp_path):
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"the user's file")
    with pytest.raises(ExportError, match="already exists.*overwrite=True"):
        E.export_model(pruned, "onnx", target, digits.example_input)
    assert target.read_bytes() == b"the user's file"
    E.export_model(pruned, "onnx", target, digits.example_input, overwrite=True)
    assert target.read_bytes() != b"the user's file" and E.detect_format(target) == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx"]


def test_failed_check_leaves_no_file(digits, pruned, tmp_path, monkeypatch):
    monkeypatch.setattr(api, "compare", lambda reference, got, int8: 1.0)  # as if outputs drifted by 1.0
    with pytest.raises(ExportError, match="max_abs_diff=1"):
        E.export_model(pruned, "torchscript", tmp_path / "m.pt", digits.example_input)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_one_line_errors(digits, tmp_path):
    with pytest.raises(ExportError, match="one of torchscript, onnx, pt2, autocompress"):
        E.export_model(digits.model, "tflite", tmp_path / "m", digits.example_input)
    with pytest.raises(ExportError, match="not JSON"):
        E.export_model(digits.model, "torchscript", tmp_path / "m", digits.example_input, plan={"f": object()})
    with pytest.raises(ExportError, match="no file at"):
        E.load(tmp_path / "missing.pt")
    assert list(tmp_path.iterdir()) == []


def test_int8_check_needs_real_inputs(digits, static_int8, tmp_path):
    # Top-1 agreement on 64 noisy copies of one example tests one prediction, not the model.
    with pytest.raises(ExportError, match="int8 GraphModule without check_inputs.*task.eval_loader"):
        E.export_model(static_int8, "torchscript", tmp_path / "q.ts", digits.example_input)
    assert list(tmp_path.iterdir()) == []


class _Scaled(nn.Module):
    """The digits CNN with its logits scaled by ``scale``; ``drift`` is baked into traced programs only, so a
    TorchScript or ONNX export of it is broken by exactly that relative error."""

    def __init__(self, base: nn.Module, scale: float, drift: float = 0.0) -> None:
        super().__init__()
        self.base, self.scale, self.drift = base, scale, drift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x) * self.scale
        if torch.jit.is_tracing():
            out = out * (1 + self.drift)
        return out


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_float_check_is_relative_to_the_output_scale(digits, tmp_path, fmt):
    rows = next(iter(digits.eval_loader()))[0][:64]
    # Outputs near 1e-7: a 0.1% error is far below an absolute 1e-4, and must fail all the same.
    tiny = _Scaled(digits.model, 1e-7, drift=1e-3).eval()
    with torch.no_grad():
        assert 1e-3 * tiny(rows).abs().max().item() < 1e-6
    with pytest.raises(ExportError, match=r"export gives max_abs_diff=.*<= .* \(= 0\.0001 x max\|output\|"):
        E.export_model(tiny, fmt, tmp_path / f"tiny.{fmt}", digits.example_input, digits.eval_loader())
    assert list(tmp_path.iterdir()) == []
    # Outputs near 1e10 exported correctly: float32 rounding alone differs by far more than 1e-4 in ONNX Runtime.
    huge = _Scaled(digits.model, 1e9).eval()
    result = E.export_model(huge, fmt, tmp_path / f"huge.{fmt}", digits.example_input, digits.eval_loader())
    with torch.no_grad():
        scale = huge(rows).abs().max().item()
    assert result.reference_scale == pytest.approx(scale, rel=1e-6) and scale > 1e9
    assert result.threshold == pytest.approx(E.FLOAT_RTOL * scale + E.FLOAT_ATOL)
    assert result.check_value <= result.threshold and result.check_inputs == "given"
    if fmt == "onnx":  # ONNX Runtime's kernels round differently: a real, nonzero difference passes
        assert result.check_value > 1e-4
