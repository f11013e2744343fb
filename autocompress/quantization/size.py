"""Where the bytes of a saved model go, and which int8 layers can drop their per-channel weight scales.

:func:`size_breakdown` splits the serialized state dict of a float or int8 model into weight payload,
per-channel scales, zero points, biases, other tensors (BatchNorm statistics, activation scales) and the
container (the file's bytes that hold no tensor data: pickle, zip records, alignment padding).

:func:`per_tensor_layers` is the ``auto`` rule of ``StaticQuantization(weight_granularity=...)``: a layer's
weight is quantized with one scale (per tensor) instead of one per output channel where that saves a real share
of the layer's bytes and costs (almost) no weight precision.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

#: ``auto``: per-channel scales and zero points (8 + 8 bytes per output channel, as torch saves them) must be at
#: least this share of the layer's int8 weight bytes before per-tensor is considered...
AUTO_MIN_OVERHEAD_SHARE = 0.02
#: ...and one scale for the whole weight may raise its quantization noise power by at most this factor over
#: per-channel scales (3x is 4.8 dB, less than the one bit (6 dB) that would make it a 7-bit weight). Measured on
#: the fine-tuned digits CNN pruned 50-80%: layers at 1.2x-2.5x lost at most 0.22 points of accuracy, all of them
#: per tensor (studies/results/int8_size.md).
AUTO_MAX_NOISE_RATIO = 3.0
_QPARAM_BYTES_PER_CHANNEL = 16  # float64 scale + int64 zero point: what torch.save writes for per-channel tensors


@dataclass(frozen=True)
class SizeBreakdown:
    """Bytes of a serialized state dict by what they hold; the parts add up to ``total``."""

    total: int
    weights: int  # weight elements (int8: one byte each)
    scales: int  # per-channel weight scales (float64)
    zero_points: int  # per-channel weight zero points (int64)
    biases: int
    other: int  # BatchNorm parameters and statistics, activation scales and zero points, counters
    container: int  # pickle, zip headers and directory, alignment padding: total minus every tensor's bytes

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _serialized_bytes(state: dict[str, Any]) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def _entries(key: str, value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    # int8 Linear layers keep (weight, bias) in one tuple under ``..._packed_params._packed_params``.
    if isinstance(value, torch.Tensor):
        yield key, value
    elif isinstance(value, (tuple, list)):
        names = ("weight", "bias") if key.endswith("_packed_params") and len(value) == 2 else range(len(value))
        for name, item in zip(names, value):
            yield from _entries(f"{key}.{name}", item)


def size_breakdown(model: nn.Module) -> SizeBreakdown:
    """Bytes of ``torch.save(model.state_dict())`` by what they hold (see :class:`SizeBreakdown`)."""
    state = model.state_dict()
    parts = dict.fromkeys(("weights", "scales", "zero_points", "biases", "other"), 0)
    for key, tensor in (entry for k, v in state.items() for entry in _entries(k, v)):
        leaf = key.rsplit(".", 1)[-1]
        data = tensor.untyped_storage().nbytes()
        if tensor.is_quantized:
            if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                parts["scales"] += tensor.q_per_channel_scales().untyped_storage().nbytes()
                parts["zero_points"] += tensor.q_per_channel_zero_points().untyped_storage().nbytes()
            parts["weights"] += data
        elif leaf == "weight" and tensor.dim() > 1:
            parts["weights"] += data
        elif leaf == "bias" and _is_layer_bias(model, key):
            parts["biases"] += data
        else:
            parts["other"] += data
    total = _serialized_bytes(state)
    return SizeBreakdown(total=total, container=total - sum(parts.values()), **parts)


def _is_layer_bias(model: nn.Module, key: str) -> bool:
    """True for the bias of a conv/linear layer (float or int8), False for a BatchNorm/LayerNorm shift."""
    owner = key.rsplit(".", 1)[0].removesuffix("._packed_params._packed_params")
    module = dict(model.named_modules()).get(owner)
    return not isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


# --------------------------------------------------------------------------------------------- auto granularity
def _symmetric_noise(weight: torch.Tensor, per_channel: bool) -> float:
    """Quantization noise power of symmetric int8 weights: step²/12 per element, summed over the tensor."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    if per_channel:
        ranges = flat.abs().amax(dim=1)
    else:
        ranges = flat.abs().amax().expand(flat.shape[0])
    steps = ranges / 127.5  # qint8 symmetric: 2 * max|w| over 255 levels
    return float((steps.pow(2) / 12 * flat.shape[1]).sum())


def prefers_per_tensor(weight: torch.Tensor) -> bool:
    """The ``auto`` rule for one layer's (BatchNorm-folded) float weight of shape ``(out, ...)``."""
    out_channels = weight.shape[0]
    if weight.dim() < 2 or weight.numel() == 0:
        return False
    overhead_share = _QPARAM_BYTES_PER_CHANNEL * out_channels / weight.numel()
    if overhead_share < AUTO_MIN_OVERHEAD_SHARE:
        return False
    per_channel = _symmetric_noise(weight, per_channel=True)
    return _symmetric_noise(weight, per_channel=False) <= AUTO_MAX_NOISE_RATIO * max(per_channel, 1e-30)


def _weight_layers(prepared: nn.Module) -> dict[str, torch.Tensor]:
    """The conv/linear layers of a prepared (observed) model that convert will quantize: name -> float weight,
    BatchNorm already folded in by fusion."""
    from torch.ao.nn.intrinsic import _FusedModule  # loaded (and its notices filtered) by autocompress.quantization

    layers = {}
    for name, module in prepared.named_modules():
        inner = module[0] if isinstance(module, _FusedModule) else module
        if getattr(module, "qconfig", None) is not None and isinstance(inner, (nn.Linear, nn.modules.conv._ConvNd)):
            layers[name] = inner.weight.detach()
    return layers


def per_tensor_layers(prepared: nn.Module, granularity: str) -> list[str]:
    """The layers of a prepared model whose int8 weight gets one scale: none for ``per_channel`` (the engine's
    default, as before the option existed), all for ``per_tensor``, those :func:`prefers_per_tensor` picks for
    ``auto``."""
    if granularity == "per_channel":
        return []
    layers = _weight_layers(prepared)
    return [name for name, weight in layers.items() if granularity == "per_tensor" or prefers_per_tensor(weight)]
