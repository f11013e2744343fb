"""The reload check: which inputs an export is checked on, how reloaded outputs are compared, and the tolerances.

- **Inputs.** Up to :data:`CHECK_ROWS` rows of the caller's evaluation inputs (a batch, or the first batches of a
  loader). Without them, float models are checked on copies of the example input with a little noise; int8
  models need real inputs, because top-1 agreement on copies of one example says nothing.
  A model with a trimmed vocabulary (``autocompress.embeddings``) is also checked on two rows of ids drawn over
  the whole original vocabulary (``add_remap_probe_rows``), so ids that the remap sends to the unknown row are
  covered even when the evaluation data uses only kept ids.
- **Float models.** ``max |reloaded - in-memory| <= FLOAT_RTOL * max |in-memory| + FLOAT_ATOL`` over the checked
  outputs. The bound follows the outputs' scale: an absolute bound passes anything on outputs near 1e-7 and
  fails correct exports of outputs near 1e9. FLOAT_RTOL = 1e-4: a float32 rounding is 6e-8 relative, and
  re-ordered or fused kernels (ONNX Runtime, TorchScript's fusions, a BERT's softmax and layer norms) put
  exports about 1e-6 to 1e-5 relative off, so 1e-4 leaves 10x margin while any real fault (a wrong weight, a
  dropped layer, a scaled output) moves outputs by far more. FLOAT_ATOL = 1e-12 is only a floor for outputs
  that are all zero (a purely relative bound would demand bit-exact zeros); it outweighs the relative term only
  when every output is below 1e-8 in magnitude, so outputs near 1e-7 are still held to 1e-4 of their scale.
- **Int8 models.** Top-1 agreement >= :data:`INT8_AGREEMENT`: int8 kernels of ONNX Runtime and fbgemm round
  differently, so logits may differ by a quantization step while the predictions agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._tensors import ModelInput, batch_len, call_model, logits_of, repeat_to_batch, to_device
from ..errors import ExportError

CHECK_ROWS = 64
FLOAT_RTOL = 1e-4
FLOAT_ATOL = 1e-12
INT8_AGREEMENT = 0.99


@dataclass(frozen=True)
class Tolerance:
    """The pass rule of one check: ``max_abs_diff <= threshold`` (float) or ``top1_agreement >= threshold``."""

    metric: str  # "max_abs_diff" or "top1_agreement"
    threshold: float
    rtol: float | None = None  # float checks: threshold = rtol * reference_scale + atol
    atol: float | None = None
    reference_scale: float | None = None  # max |in-memory output| over the checked rows

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "top1_agreement"

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def worst(self, values: list[float]) -> float:
        return min(values) if self.higher_is_better else max(values)

    def describe(self) -> str:
        if self.higher_is_better:
            return f">= {self.threshold} against the in-memory model"
        return (f"<= {self.threshold:.3g} (= {self.rtol:g} x max|output| {self.reference_scale:.3g} + {self.atol:g}) "
                "against the in-memory model")


def tolerance_for(reference: torch.Tensor, int8: bool) -> Tolerance:
    """The tolerance for outputs ``reference`` of the in-memory model."""
    if int8:
        return Tolerance("top1_agreement", INT8_AGREEMENT)
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    return Tolerance("max_abs_diff", FLOAT_RTOL * scale + FLOAT_ATOL, FLOAT_RTOL, FLOAT_ATOL, scale)


def compare(reference: torch.Tensor, got: torch.Tensor, int8: bool) -> float:
    """Top-1 agreement (int8) or max absolute difference (float) of reloaded outputs ``got``."""
    if got.shape != reference.shape:
        raise ExportError(f"reloaded output of shape {tuple(got.shape)}", f"shape {tuple(reference.shape)}",
                          "report this model to the autocompress developers")
    if int8:
        return (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return (got.float() - reference).abs().max().item()


def logits(model: nn.Module, x: ModelInput) -> torch.Tensor:
    with torch.inference_mode():
        return logits_of(call_model(model, x)).float()


def rows(x: ModelInput, n: int) -> ModelInput:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, Mapping) else x[:n]


def _cat(parts: list[ModelInput]) -> ModelInput:
    if isinstance(parts[0], Mapping):
        # Batches cut to their longest sequence (Task.pad_to_longest) differ in length: zero-pad them back to the
        # widest, where the attention mask is 0 and the model's outputs do not depend on the ids.
        return {k: torch.cat(_same_width([p[k] for p in parts])) for k in parts[0]}
    return torch.cat(parts)


def _same_width(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    if len({t.shape[1:] for t in tensors}) <= 1 or any(t.dim() != 2 for t in tensors):
        return tensors
    width = max(t.shape[1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors]


def example_copies(example_input: ModelInput) -> ModelInput:
    """:data:`CHECK_ROWS` copies of the example input, with a little noise on float inputs so that rows differ."""
    x = repeat_to_batch(to_device(example_input, "cpu"), CHECK_ROWS)
    gen = torch.Generator().manual_seed(0)

    def noise(t: torch.Tensor) -> torch.Tensor:
        return t + 0.05 * (t.float().std() + 1e-3) * torch.randn(t.shape, generator=gen) if t.is_floating_point() \
            else t

    return {k: noise(v) for k, v in x.items()} if isinstance(x, Mapping) else noise(x)


def check_batch(check_inputs: Any, example_input: ModelInput) -> ModelInput:
    """Up to 64 rows of check inputs: a batch, or the first batches of a loader of ``(input, target)``.

    Without check inputs: :func:`example_copies`.
    """
    if check_inputs is None:
        return example_copies(example_input)
    if isinstance(check_inputs, (torch.Tensor, Mapping)):
        return rows(to_device(check_inputs, "cpu"), CHECK_ROWS)
    parts, count = [], 0
    for batch in check_inputs:
        x = batch[0] if isinstance(batch, (list, tuple)) and len(batch) == 2 else batch
        parts.append(to_device(x, "cpu"))
        count += batch_len(x)
        if count >= CHECK_ROWS:
            break
    if not parts:
        raise ExportError("empty check_inputs", "eval inputs (a batch or a loader)", "pass task.eval_loader()")
    return rows(_cat(parts), CHECK_ROWS)
