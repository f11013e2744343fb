"""The quantization config records: one frozen, JSON round-tripping record per mode (``none``, ``dynamic``,
``static``, ``qat``), each with its options and their validation. The engines that apply them are reached
through :mod:`autocompress.quantization`, which re-exports every name here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Config, config_from_name, family_names, register_config
from ..errors import QuantizationError

CPU_BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")
ONNXRUNTIME = "onnxruntime"  # the ONNX Runtime engine (autocompress.quantization.ort)
BACKENDS = (*CPU_BACKENDS, "gpu", ONNXRUNTIME)
DYNAMIC_LAYERS = ("linear", "lstm", "gru")  # layer kinds dynamic quantization can swap
WEIGHT_GRANULARITIES = ("per_channel", "per_tensor", "auto")  # weight scales of static int8 layers


@dataclass(frozen=True)
class QuantizationConfig(Config):
    """Base of the quantization configs. ``backend``: torch.ao's int8 CPU kernels (``x86``, ...), ``gpu`` (skip
    quantization), or ``onnxruntime`` (the ONNX Runtime engine)."""

    MODE: ClassVar[str] = ""
    backend: str = "x86"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise QuantizationError(f"quantization backend {self.backend!r}", f"one of {', '.join(BACKENDS)}",
                                    "pick a backend from that list")


@register_config("quantization.none")
@dataclass(frozen=True)
class NoQuantization(QuantizationConfig):
    """Keep the float model."""

    MODE: ClassVar[str] = "none"


@register_config("quantization.dynamic")
@dataclass(frozen=True)
class DynamicQuantization(QuantizationConfig):
    """Int8 weights for ``layers`` (names among linear, lstm, gru); activations quantized at run time."""

    MODE: ClassVar[str] = "dynamic"
    layers: tuple[str, ...] = ("linear", "lstm", "gru")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.layers) - set(DYNAMIC_LAYERS))
        if unknown or not self.layers:
            raise QuantizationError(f"dynamic quantization layers {list(self.layers)}",
                                    f"a non-empty subset of {', '.join(DYNAMIC_LAYERS)}", "fix the layer names")


@register_config("quantization.static")
@dataclass(frozen=True)
class StaticQuantization(QuantizationConfig):
    """Int8 weights and activations for conv and linear layers, calibrated on ``calibration_batches`` batches.

    ``weight_granularity``: ``per_channel`` (the engine's default: one weight scale per output channel on x86,
    fbgemm and onednn, one per tensor on qnnpack), ``per_tensor`` (one scale per layer everywhere) or ``auto``
    (per tensor where the per-channel scales and zero points, 16 bytes a channel as saved, weigh at least 2% of
    the layer's int8 weights and one scale adds at most 3x weight quantization noise: narrow pruned layers;
    :func:`autocompress.quantization.size.prefers_per_tensor`). Records without it are ``per_channel``.
    """

    MODE: ClassVar[str] = "static"
    calibration_batches: int = 8
    weight_granularity: str = "per_channel"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_batches < 1:
            raise QuantizationError(f"calibration_batches={self.calibration_batches}", "at least 1",
                                    "calibrate on one or more training batches")
        if self.weight_granularity not in WEIGHT_GRANULARITIES:
            raise QuantizationError(f"weight_granularity={self.weight_granularity!r}",
                                    f"one of {', '.join(WEIGHT_GRANULARITIES)}", "pick a granularity from that list")


@register_config("quantization.qat")
@dataclass(frozen=True)
class QATQuantization(QuantizationConfig):
    """Quantization-aware training: fake-quant modules trained by the caller's loop (the distillation loop, for
    its ``max_epochs``), then int8.

    ``epochs`` is read from records written before it was dropped and ignored (it never set the training
    length); new records do not hold it.
    """

    MODE: ClassVar[str] = "qat"
    epochs: int | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.pop("epochs", None)
        return data


MODES = tuple(family_names("quantization"))  # none, dynamic, static, qat: in the order registered


def quantization_config(mode: str, **options: Any) -> QuantizationConfig:
    """The config record for a mode name (``none``, ``dynamic``, ``static``, ``qat``) with its options (the one
    name→config map, :func:`autocompress.config.config_from_name`). ``static`` by name defaults to
    ``weight_granularity="auto"`` (one weight scale per layer where per-channel scales weigh more than they
    gain); the record's own default stays ``per_channel``, what records written before the option meant."""
    if mode == "static":  # by name, static int8 takes the measured-best weight scales (see StaticQuantization)
        options.setdefault("weight_granularity", "auto")
    config = config_from_name("quantization", mode, what="mode", error=QuantizationError, **options)
    assert isinstance(config, QuantizationConfig)
    return config
