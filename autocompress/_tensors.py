"""Small helpers for model inputs that are a tensor or a dict of tensors (Hugging Face style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

ModelInput = torch.Tensor | Mapping[str, torch.Tensor]


def to_device(x: Any, device: torch.device | str) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def call_model(model: nn.Module, x: ModelInput) -> Any:
    """Run ``model`` on a tensor (positional) or a dict of tensors (keyword arguments)."""
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: a tensor, a Hugging Face ``ModelOutput`` or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"model output of type {type(output).__name__} holds no logits tensor")


def batch_len(x: ModelInput) -> int:
    if isinstance(x, Mapping):
        return int(next(iter(x.values())).shape[0])
    return int(x.shape[0])


def describe(x: Any) -> str:
    """A short description of an input for error messages, e.g. ``tensor(1, 3, 8, 8)``."""
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)}"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in x.items()) + "}"
    return type(x).__name__


def repeat_to_batch(x: ModelInput, batch: int) -> ModelInput:
    """Build a batch of ``batch`` rows from the first row of an example input."""
    if isinstance(x, Mapping):
        return {k: repeat_to_batch(v, batch) for k, v in x.items()}
    first = x[:1]
    return first.expand(batch, *first.shape[1:]).contiguous()


def trim_padding(x: Any) -> Any:
    """A dict batch cut to its longest sequence: the columns after the last attended token dropped.

    Only trailing columns where every row's ``attention_mask`` is 0 go, from every tensor that has the mask's
    (batch, length) shape; anything else is returned as is. Transformers padded to a fixed length spend most of
    an epoch on padding (``Task.pad_to_longest`` decides whether a task's batches are trimmed).
    """
    if not isinstance(x, Mapping):
        return x
    mask = x.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[1] == 0:
        return x
    attended = mask.ne(0).any(0).nonzero()
    width = int(attended.max()) + 1 if attended.numel() else 1
    if width == mask.shape[1]:
        return x
    shape = mask.shape
    return {k: (v[:, :width] if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[:2] == shape else v)
            for k, v in x.items()}


def trim_batch_padding(batch: Any) -> Any:
    """:func:`trim_padding` on the input of an ``(input, target)`` batch (other batches are returned as is)."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return [trim_padding(batch[0]), batch[1]]  # default_collate's (input, target) list
    return batch
