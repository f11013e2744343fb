"""Slow acceptance of the target solver on real architectures (random weights): 2x params and 2x FLOPs.

Run with ``make test-slow`` or ``pytest -m slow tests/test_pruning_slow.py -s`` (``-s`` prints the figures).
"""

import tempfile
import time
from pathlib import Path

import pytest
import torch

from autocompress._tensors import call_model, logits_of
from autocompress.profile import count_flops, count_params
from autocompress.export import export_model, load
from autocompress.pruning import PruneResult, solve_target

pytestmark = pytest.mark.slow

TARGET, TOLERANCE = 2.0, 0.05


def _torchvision(name: str, size: int):
    def build():
        import torchvision.models as models

        torch.manual_seed(0)
        return getattr(models, name)(weights=None, num_classes=10).eval(), torch.randn(1, 3, size, size)

    return build


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=64, num_labels=3)
    ids = torch.randint(0, 1000, (1, 32))
    return BertForSequenceClassification(config).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


MODELS = {
    "resnet50": _torchvision("resnet50", 64),
    # 224: its adaptive pool to 7×7 must divide the feature map for the (TorchScript-based) ONNX exporter
    "vgg16": _torchvision("vgg16", 224),
    "efficientnet_b4": _torchvision("efficientnet_b4", 64),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large", 64),
    "vit_b_16": _torchvision("vit_b_16", 224),  # its position embedding fixes the resolution
    "bert_small": _bert,
}


def assert_pruned_model_ok(original: torch.nn.Module, result: PruneResult, example_input) -> None:
    """Acceptance checks on one solved model: it runs, keeps the output shape, and its figures are real.

    Every check on a solved model goes here (export parity included), so each model is checked the same way.
    """
    with torch.no_grad():
        before = logits_of(call_model(original, example_input))
        after = logits_of(call_model(result.model.eval(), example_input))
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert count_params(result.model) == result.params_after
    assert count_flops(result.model, example_input) == result.flops_after
    # Exports to TorchScript and ONNX reload and pass the parity check (max |Δ| ≤ 1e-4 on 64 inputs).
    with tempfile.TemporaryDirectory() as folder:
        for fmt in ("torchscript", "onnx"):
            exported = export_model(result.model, fmt, Path(folder) / f"model.{fmt}", example_input)
            assert exported.check_metric == "max_abs_diff" and exported.check_value <= 1e-4
            reloaded = load(exported.path)
            with torch.no_grad():
                assert torch.allclose(logits_of(call_model(reloaded, example_input)), after, atol=1e-4)


@pytest.mark.parametrize("objective", ["params", "flops"])
@pytest.mark.parametrize("name", list(MODELS))
def test_solver_reaches_2x(name, objective):
    model, x = MODELS[name]()
    start = time.perf_counter()
    result = solve_target(model, x, "magnitude", strategy="global", objective=objective, target=TARGET,
                          tolerance=TOLERANCE, progress=False)
    elapsed = time.perf_counter() - start
    print(f"\n{name:20s} {objective:6s} ratio={result.ratio:.4f} head_ratio={result.config.head_ratio} "
          f"params {result.param_reduction:.3f}x flops {result.flop_reduction:.3f}x "
          f"evals={result.evaluations} {elapsed:.0f}s notes={list(result.notes)}")
    assert result.reached, result.to_dict()
    assert abs(result.reduction(objective) / TARGET - 1) <= TOLERANCE
    assert_pruned_model_ok(model, result, x)
