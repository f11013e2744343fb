"""The quantization interface's engines: ONNX Runtime beside torch.ao, chosen by the config's backend."""


import onnx
import pytest
import torch
from torch import nn

from autocompress import quantization as Q
from autocompress.config import Config
from autocompress.errors import QuantizationError
from autocompress.profile import evaluate


@pytest.fixture(scope="module")
def digits():
    from autocompress.tasks.digits import task

    t = task()
    return t, evaluate(t.model, t.eval_loader(), t.resolved_metric)


def _ops(onnx_bytes: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node}


def test_the_backend_names_the_engine_and_round_trips():
    ort = Q.quantization_config("static", backend="onnxruntime")
    assert Q.engine_name(ort) == "onnxruntime" and Q.engine_name(Q.quantization_config("static")) == "torch.ao"
    assert Config.from_json(ort.to_json()) == ort
    assert set(Q.ENGINES) == {"torch.ao", "onnxruntime"}


def test_onnxruntime_static_int8_is_a_qdq_onnx_file_that_keeps_accuracy(digits):
    t, accuracy = digits
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    fp32 = Q.quantize(t.model, Q.quantization_config("none", backend="onnxruntime"), example_input=t.example_input,
                      progress=False)
    result = Q.quantize(t.model, Q.quantization_config("static", backend="onnxruntime"), t.train_loader(),
                        t.example_input, progress=False)
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in before.items())  # the caller's model untouched
    assert result.graph_mode == "onnx" and result.calibration_batches == 8
    int8 = result.model.onnx_bytes
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(int8) and "QuantizeLinear" not in _ops(
        fp32.model.onnx_bytes)
    assert len(int8) < len(fp32.model.onnx_bytes) / 3  # int8 weights: about a quarter of the float file
    assert evaluate(result.model, t.eval_loader(), t.resolved_metric) >= accuracy - 0.02
    assert result.model.meta["quantization"]["engine"] == "onnxruntime"


def test_onnxruntime_dynamic_int8_quantizes_the_weighted_matmuls(digits):
    t, accuracy = digits
    result = Q.quantize(t.model, Q.quantization_config("dynamic", backend="onnxruntime"), example_input=t.example_input,
                        progress=False)
    assert "MatMulInteger" in _ops(result.model.onnx_bytes) or "DynamicQuantizeLinear" in _ops(
        result.model.onnx_bytes)
    assert evaluate(result.model, t.eval_loader(), t.resolved_metric) >= accuracy - 0.02


def test_onnxruntime_engine_refuses_what_it_cannot_do(digits):
    t, _ = digits
    with pytest.raises(QuantizationError, match="without a training function") as caught:
        Q.quantize(t.model, Q.quantization_config("qat", backend="onnxruntime"), example_input=t.example_input)
    assert "\n" not in str(caught.value)
    prepared = Q.prepare_qat(t.model, Q.quantization_config("qat", backend="onnxruntime"), t.example_input)
    with pytest.raises(QuantizationError, match="without an example input"):
        Q.convert(prepared, t.train_loader())
    with pytest.raises(QuantizationError, match="without calibration data"):
        Q.quantize(t.model, Q.quantization_config("static", backend="onnxruntime"), None, t.example_input)


class _Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.slogdet(x)[1]


def test_a_model_onnx_cannot_export_gets_one_line_naming_the_operator():
    with pytest.raises(QuantizationError) as caught:
        Q.quantize(_Unexportable(), Q.quantization_config("none", backend="onnxruntime"),
                   example_input=torch.randn(2, 3, 3))
    message = str(caught.value)
    assert "a model ONNX cannot export" in message and "slogdet" in message and "\n" not in message


def test_a_plan_on_the_onnxruntime_engine_is_measured_where_it_runs(digits):
    """The pipeline quantizes the pruned, fine-tuned model with ONNX Runtime and measures the program: its size
    is the .onnx file, its metric and latency come from the session, its parameters and MACs from the pruned
    torch model it was made from."""
    from autocompress.distillation import DistillationConfig, FineTune
    from autocompress.pipeline import run_plan
    from autocompress.plan import Plan
    from autocompress.pruning import PruningConfig
    from autocompress.requirements import Requirements

    t, _ = digits
    plan = Plan(pruning=PruningConfig(strategy="uniform", ratio=0.5),
                distillation=DistillationConfig(technique=FineTune(), stop="epochs", max_epochs=1),
                quantization=Q.quantization_config("static", backend="onnxruntime"))
    result = run_plan(t, plan, requirements=Requirements(objective="size", max_drop=5, target=2), progress=False)
    onnx_bytes = result.model.onnx_bytes
    assert "QuantizeLinear" in _ops(onnx_bytes)
    assert result.compressed.size_mb == pytest.approx(len(onnx_bytes) / 1e6)
    assert result.compressed.params < result.original.params / 2 and result.compressed.flops < result.original.flops
    assert result.reduction["size"] > 6  # about 3.5x from pruning half the channels, about 4x from int8
    assert result.feasible and result.reduction["latency"] > 0


def _train_one_epoch(model: nn.Module, task) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for x, y in task.train_loader():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_qat_on_onnxruntime_exports_the_fake_quant_model_as_qdq_with_int8_weights(digits):
    """The trained fake-quant model becomes a QDQ ONNX program: BatchNorm folded into the convolutions, the
    ranges learned in training as QuantizeLinear/DequantizeLinear, the weights stored as int8; ONNX Runtime runs
    it with the fake-quant model's predictions."""
    from onnx import TensorProto

    t, accuracy = digits
    config = Q.quantization_config("qat", backend="onnxruntime")
    prepared = Q.prepare_qat(t.model, config, t.example_input)
    _train_one_epoch(prepared, t)
    program = Q.convert(prepared, example_input=t.example_input)
    graph = onnx.load_from_string(program.onnx_bytes).graph
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 3 and "QuantizeLinear" in ops
    weights = {node.input[1] for node in graph.node if node.op_type in ("Conv", "Gemm")}
    int8 = [t_ for t_ in graph.initializer if t_.data_type == TensorProto.INT8]
    assert int8 and all(t_.data_type != TensorProto.FLOAT or t_.name not in weights for t_ in graph.initializer)
    fp32 = Q.quantize(t.model, Q.quantization_config("none", backend="onnxruntime"), example_input=t.example_input,
                      progress=False).model
    assert len(program.onnx_bytes) < len(fp32.onnx_bytes) / 3
    assert program.meta["quantization"]["mode"] == "qat"
    prepared.eval()
    x = torch.cat([x for x, _ in t.eval_loader()])
    with torch.no_grad():
        agree = (prepared(x).argmax(1) == program(x).argmax(1)).float().mean().item()
    assert agree >= 0.99
    assert evaluate(program, t.eval_loader(), t.resolved_metric) >= accuracy - 0.02


def test_qat_through_quantize_takes_a_training_function(digits):
    t, accuracy = digits
    trained = []
    result = Q.quantize(t.model, Q.quantization_config("qat", backend="onnxruntime"), t.train_loader(),
                        t.example_input, train_fn=lambda m: (trained.append(1), _train_one_epoch(m, t)),
                        progress=False)
    assert trained == [1] and result.graph_mode == "onnx"
    assert evaluate(result.model, t.eval_loader(), t.resolved_metric) >= accuracy - 0.02


def test_a_qat_plan_on_onnxruntime_trains_fake_quant_and_is_measured_as_its_qdq_program(digits):
    from autocompress.distillation import DistillationConfig, FineTune
    from autocompress.pipeline import run_plan
    from autocompress.plan import Plan
    from autocompress.pruning import PruningConfig
    from autocompress.requirements import Requirements

    t, _ = digits
    plan = Plan(pruning=PruningConfig(strategy="uniform", ratio=0.5),
                distillation=DistillationConfig(technique=FineTune(), stop="epochs", max_epochs=1),
                quantization=Q.quantization_config("qat", backend="onnxruntime"))
    result = run_plan(t, plan, requirements=Requirements(objective="size", max_drop=5, target=2,
                                                         backend="onnxruntime"), progress=False)
    assert result.model.meta["quantization"]["mode"] == "qat" and "QuantizeLinear" in _ops(result.model.onnx_bytes)
    assert result.compressed.size_mb == pytest.approx(len(result.model.onnx_bytes) / 1e6)
    assert result.reduction["size"] > 6 and result.feasible


def test_an_untrained_qat_model_is_calibrated_before_its_onnxruntime_export(digits):
    """Zero epochs after prepare_qat: the weights' fake-quants have seen the weights, the activations' nothing;
    without a loader that is refused, with one the activation ranges are calibrated first."""
    t, accuracy = digits
    prepared = Q.prepare_qat(t.model, Q.quantization_config("qat", backend="onnxruntime"), t.example_input)
    unobserved, total = Q.observer_counts(prepared, activations_only=True)
    assert unobserved == total > 0 and Q.observer_counts(prepared)[0] < Q.observer_counts(prepared)[1]
    with pytest.raises(QuantizationError, match="saw no data"):
        Q.convert(prepared, example_input=t.example_input)
    program = Q.convert(prepared, t.train_loader(), example_input=t.example_input)
    assert evaluate(program, t.eval_loader(), t.resolved_metric) >= accuracy - 0.02


def test_onnxruntime_static_int8_of_an_attention_model_stores_its_embedding_tables_in_8_bits():
    from onnx import TensorProto, numpy_helper

    from tests.conftest import tiny_bert

    model = tiny_bert(num_labels=2, seq_len=12)
    torch.manual_seed(0)
    batches = [({"input_ids": torch.randint(3, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)},
                torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    example = {k: v[:1] for k, v in batches[0][0].items()}
    result = Q.quantize(model, Q.quantization_config("static", backend="onnxruntime"), batches, example,
                        progress=False)
    graph = onnx.load_from_string(result.model.onnx_bytes).graph
    tables = {t.name: t for t in graph.initializer if "word_embeddings" in t.name}
    eight_bit = (TensorProto.INT8, TensorProto.UINT8)  # ONNX Runtime stores gathered tables as activations: uint8
    assert [t for t in tables.values() if len(t.dims) == 2 and t.data_type in eight_bit]
    assert not any(numpy_helper.to_array(t).shape == (100, 32) and t.data_type == TensorProto.FLOAT
                   for t in graph.initializer)  # no float copy of the word table is left
    with torch.no_grad():
        float_logits = model(**batches[0][0]).logits
    assert (result.model(**batches[0][0]).argmax(1) == float_logits.argmax(1)).float().mean() >= 0.75


def test_exporting_to_onnx_leaves_the_callers_model_in_eval_mode_and_unchanged(digits):
    t, accuracy = digits
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.model.eval()
    Q.quantize(t.model, Q.quantization_config("static", backend="onnxruntime"), t.train_loader(), t.example_input,
               progress=False)
    assert not t.model.training
    assert evaluate(t.model, t.eval_loader(), t.resolved_metric) == accuracy  # BatchNorm statistics untouched
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in before.items())
