"""What every engine's quantize returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .config import QuantizationConfig


@dataclass(frozen=True)
class QuantizeResult:
    """A quantized (or, when skipped, float) copy of the model and what was done."""

    model: nn.Module
    config: QuantizationConfig
    skipped_reason: str | None = None
    calibration_batches: int = 0
    graph_mode: str = ""  # torch.ao: "fx" or "eager"; ONNX Runtime: "onnx"; "" when nothing was quantized

    @property
    def mode(self) -> str:
        return self.config.MODE
