"""Attention architectures: find their heads, and patch the attributes their forward reads after pruning.

Torch-Pruning resizes layers, but some models read widths from plain attributes (a Hugging Face attention's
``num_attention_heads``, a torchvision ViT's ``hidden_dim``) or from a Hugging Face config that
``save_pretrained`` writes. Each patcher brings one family's attributes in line with its pruned layers and
returns notes on what it cannot express. Hugging Face BERT-family models (BERT, RoBERTa, ViT, ...) are found
by the shape of their self-attention, not by class names; ``transformers`` and ``torchvision`` are only looked
at when the caller already imported them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from .._arch import hf_config

# What to do instead when a Hugging Face config cannot describe the pruned widths.
_SAVE_INSTEAD = ("export_model(model, 'autocompress', ...) and load(path, base_model=original) can (the "
                 "archive records every width; see autocompress._arch.capture/rebuild)")


def is_hf_self_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a BERT-family self-attention (BertSelfAttention, ViTSelfAttention, ...)."""
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) and \
        isinstance(getattr(module, "num_attention_heads", None), int) and \
        isinstance(getattr(module, "attention_head_size", None), int)


def hf_bert_config(model: nn.Module) -> Any:
    """The config of a BERT-family Hugging Face model, whose widths the config describes; else None."""
    config = hf_config(model)
    if config is None or not hasattr(config, "hidden_size") or not hasattr(config, "intermediate_size"):
        return None
    return config if any(is_hf_self_attention(m) for m in model.modules()) else None


def initial_heads(model: nn.Module) -> dict[int, int]:
    """The head count of every attention in ``model``, by ``id`` of the attention module."""
    heads = {id(m): m.num_attention_heads for m in model.modules() if is_hf_self_attention(m)}
    heads.update({id(m): m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)})
    return heads


# Attributes that forward() reads but Torch-Pruning does not know about. Each patcher fixes one family.
_PATCHERS: list[Callable[[nn.Module], list[str]]] = []


def _patcher(fn: Callable[[nn.Module], list[str]]) -> Callable[[nn.Module], list[str]]:
    _PATCHERS.append(fn)
    return fn


@_patcher
def _patch_torchvision_vit(model: nn.Module) -> list[str]:
    if "torchvision" not in sys.modules:
        return []
    from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

    for m in model.modules():
        if isinstance(m, VisionTransformer):
            m.hidden_dim = m.conv_proj.out_channels  # used to reshape patches in _process_input
        elif isinstance(m, EncoderBlock):
            m.num_heads = m.self_attention.num_heads
    return []


@_patcher
def _patch_hf(model: nn.Module) -> list[str]:
    attention = [m for m in model.modules() if is_hf_self_attention(m)]
    for m in attention:
        m.all_head_size = m.query.out_features
        m.num_attention_heads = m.query.out_features // m.attention_head_size
    if hf_config(model) is None:
        return []
    config = hf_bert_config(model)
    if config is None:
        return [f"the config of {type(model).__name__} does not describe pruned widths: save_pretrained/"
                f"from_pretrained cannot rebuild this model; {_SAVE_INSTEAD}"]
    heads = {m.num_attention_heads for m in attention}
    hidden = {m.query.in_features for m in attention}
    head_size = {m.attention_head_size for m in attention}
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    intermediate = {m.out_features for m in model.modules() if isinstance(m, nn.Linear)
                    and type(parents.get(m)).__name__.endswith("Intermediate")}
    if len(heads) == len(hidden) == len(head_size) == 1 and len(intermediate) <= 1:
        h, d, s = heads.pop(), hidden.pop(), head_size.pop()
        if d // h == s:
            config.num_attention_heads, config.hidden_size = h, d
            if intermediate:
                config.intermediate_size = intermediate.pop()
            return []
    return ["the pruned widths (different per layer, or hidden size != heads x head size) cannot be written "
            f"in a Hugging Face config: save_pretrained/from_pretrained cannot rebuild this model; {_SAVE_INSTEAD}"]


def patch(model: nn.Module) -> list[str]:
    """Bring the attributes forward() reads in line with the pruned layers; notes on what cannot be expressed."""
    notes: list[str] = []
    for fn in _PATCHERS:
        notes.extend(fn(model))
    return notes
