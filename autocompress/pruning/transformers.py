"""Attention architectures: find their heads, and patch the attributes their forward reads after pruning.

Torch-Pruning resizes layers, but some models read widths from plain attributes (a Hugging Face attention's
``num_attention_heads``, a torchvision ViT's ``hidden_dim``) or from a Hugging Face config that
``save_pretrained`` writes. Each patcher brings one family's attributes in line with its pruned layers and
returns notes on what it cannot express. Hugging Face BERT-family models (BERT, RoBERTa, ViT, ...) are found
by the shape of their self-attention, not by class names; ``transformers`` and ``torchvision`` are only looked
at when the caller already imported them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from .._arch import hf_config
from .attention import find_attention

# What to do instead when a Hugging Face config cannot describe the pruned widths.
_SAVE_INSTEAD = ("export_model(model, 'autocompress', ...) and load(path, base_model=original) can (the "
                 "archive records every width; see autocompress._arch.capture/rebuild)")


# The config fields that may hold the feed-forward width, by family (first one set wins).
INTERMEDIATE_FIELDS = ("intermediate_size", "hidden_dim", "ffn_dim", "n_inner", "decoder_ffn_dim")


# Config fields that equal the hidden size in a model without the projection they describe (OPT).
TIED_TO_HIDDEN = ("word_embed_proj_dim",)


def is_hf_self_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a BERT-family self-attention (query/key/value Linears, integer head count and head
    size), the shape :mod:`.heads` prunes by direct surgery."""
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) and \
        isinstance(getattr(module, "num_attention_heads", None), int) and \
        isinstance(getattr(module, "attention_head_size", None), int)


def hf_width_config(model: nn.Module) -> Any:
    """The Hugging Face config of ``model`` when it describes one hidden width (``hidden_size``); else None."""
    config = hf_config(model)
    if config is None or not isinstance(getattr(config, "hidden_size", None), int):
        return None
    # Swin-like models widen stage by stage: their hidden_size is one of several widths, not the width.
    inputs = {a.layer("q").in_features for a in find_attention(model) if a.proj is not None}
    return config if inputs <= {config.hidden_size} else None


def config_widths(config: Any) -> dict[str, int]:
    """The widths a Hugging Face config holds, by field: hidden, feed-forward and embedding size."""
    widths = {"hidden_size": config.hidden_size}
    for name in INTERMEDIATE_FIELDS:
        if isinstance(getattr(config, name, None), int):
            widths[name] = getattr(config, name)
            break
    if isinstance(getattr(config, "embedding_size", None), int) and config.embedding_size != config.hidden_size:
        widths["embedding_size"] = config.embedding_size
    return widths


def initial_heads(model: nn.Module) -> dict[int, int]:
    """The head count of every attention whose heads can be pruned, by ``id`` of the attention module."""
    heads = {id(a.module): a.heads for a in find_attention(model)
             if a.proj is not None and not a.kept_whole and not a.heads_fixed}
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


def patch_hf_config(model: nn.Module, field_roots: dict[str, list[nn.Module]]) -> list[str]:
    """Write the pruned widths into the Hugging Face config; a note when it cannot describe them.

    Whether it can is checked, not assumed: the model the patched config builds (on the meta device, so
    nothing is allocated) must have every tensor of the pruned model, shape for shape.
    """
    config = hf_config(model)
    if config is None:
        return []
    inputs = {a.layer("q").in_features for a in find_attention(model) if a.proj is not None}
    if not isinstance(getattr(config, "hidden_size", None), int) or len(inputs) > 1:
        return [f"the config of {type(model).__name__} does not describe pruned widths: save_pretrained/"
                f"from_pretrained cannot rebuild this model; {_SAVE_INSTEAD}"]
    attention = [a for a in find_attention(model) if a.proj is not None]
    values: dict[str, set[int]] = {
        "num_attention_heads": {a.heads for a in attention},
        "hidden_size": {a.layer("q").in_features for a in attention},
    }
    if isinstance(getattr(config, "num_key_value_heads", None), int):
        values["num_key_value_heads"] = {a.kv_heads for a in attention}
    if isinstance(getattr(config, "head_dim", None), int) or any(a.rotary for a in attention):
        values["head_dim"] = {a.head_dim for a in attention}
    for field, roots in field_roots.items():
        outs = {w for r in roots for w in (getattr(r, "out_features", None), getattr(r, "out_channels", None))
                if isinstance(w, int)}
        values.setdefault(field, set()).update(outs)
    uneven = [f for f, v in values.items() if len(v) > 1]
    if uneven:
        return [f"the pruned widths differ between layers ({', '.join(uneven)}): a Hugging Face config holds one "
                f"per kind, so save_pretrained/from_pretrained cannot rebuild this model; {_SAVE_INSTEAD}"]
    old_hidden = config.hidden_size
    for field, v in values.items():
        if v:
            setattr(config, field, v.pop())
    for field in TIED_TO_HIDDEN:  # fields that equal the hidden size unless a projection sits between
        if getattr(config, field, None) == old_hidden:
            setattr(config, field, config.hidden_size)
    mismatch = _config_mismatch(model, config)
    if mismatch:
        return [f"the Hugging Face config cannot describe the pruned {type(model).__name__} ({mismatch}): "
                f"save_pretrained/from_pretrained cannot rebuild it; {_SAVE_INSTEAD}"]
    return []


def _config_mismatch(model: nn.Module, config: Any) -> str:
    """The first tensor where the model ``config`` builds differs from ``model``; "" when none does."""
    import torch
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        # A user's module that holds a Hugging Face model (an encoder and a head of its own) is not built from a
        # config, and from_pretrained does not apply to it: the autocompress archive rebuilds it.
        return ""
    with torch.device("meta"):
        built = type(model)(copy.deepcopy(config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    for key in sorted(set(expected) | set(got)):
        if expected.get(key) != got.get(key):
            return f"{key}: pruned {expected.get(key)}, the config builds {got.get(key)}"
    # Scales a module computes from the config at construction (Gemma's embedding scale, sqrt(hidden size));
    # integer attributes are widths the shapes above already compare (some are stale copies forward never reads).
    built_modules = dict(built.named_modules())
    for name, module in model.named_modules():
        other = built_modules.get(name)
        for attr, value in vars(module).items():
            if isinstance(value, float) and not attr.startswith("_") \
                    and other is not None and getattr(other, attr, value) != value:
                return f"{name}.{attr}: pruned {value}, the config builds {getattr(other, attr)}"
    return ""


def patch(model: nn.Module, field_roots: dict[str, list[nn.Module]] | None = None) -> list[str]:
    """Bring the attributes forward() reads and the Hugging Face config in line with the pruned layers; notes
    on what cannot be expressed. ``field_roots``: config width field -> root layers of the groups it sizes."""
    notes: list[str] = []
    for fn in _PATCHERS:
        notes.extend(fn(model))
    notes.extend(patch_hf_config(model, field_roots or {}))
    return notes
