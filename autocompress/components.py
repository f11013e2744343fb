"""Where a transformer's parameters, bytes and MACs are: embeddings (word, position, token type), attention,
MLP and head, each measured.

A pretrained encoder can hold half its bytes in its word embeddings, which pruning the encoder never touches;
the selector needs these shares to pick a route (trim the vocabulary, int8 embeddings, int8 linears, prune) and
to say what each step is worth. Components are found by structure and by the names Hugging Face, torchvision
and hand-written transformers use:

- ``embeddings.word``: the model's input embedding (``get_input_embeddings()``, else its largest
  ``nn.Embedding``); ``embeddings.position`` / ``embeddings.token_type``: embeddings named so;
  ``embeddings.other``: everything else under an embeddings container (its LayerNorm, other tables);
- ``attention``: modules inside an attention module (q/k/v, their output projection and its norm);
- ``mlp``: the rest of each transformer block (intermediate and output projections, their norms);
- ``head``: everything outside the blocks and the embeddings (pooler, classifier, LM head, final norm).

Bytes are the tensors a module saves in its state dict (int8 weights count one byte each), MACs its own work
as :func:`autocompress.profile.layer_breakdown` counts it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

COMPONENTS = ("embeddings.word", "embeddings.position", "embeddings.token_type", "embeddings.other",
              "attention", "mlp", "head")

_ATTENTION_NAME = re.compile(r"(^|\.)(self_)?(attention|attn|self_attn|self_attention|mha)(\.|$)", re.I)
_BLOCK_NAME = re.compile(r"(^|\.)(layer|layers|h|blocks?|encoder_layers?|transformer_blocks?)\.\d+(\.|$)")
_EMBEDDINGS_NAME = re.compile(r"(^|\.)(embeddings?|embed_tokens|wte|wpe|embed_positions|patch_embed\w*)(\.|$)")


@dataclass(frozen=True)
class ComponentStats:
    """One component of a transformer: its parameters, the bytes its tensors take, and its MACs per sample."""

    component: str
    params: int
    bytes: int
    flops: int


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def own_bytes(module: nn.Module) -> int:
    """Bytes of the tensors ``module`` itself saves in a state dict (packed int8 weights included)."""
    saved: dict[str, Any] = {}
    module._save_to_state_dict(saved, "", keep_vars=False)
    return sum(_tensor_bytes(v) for v in saved.values())


def word_embedding(model: nn.Module) -> nn.Module | None:
    """The model's input (word) embedding: ``get_input_embeddings()`` where it exists, else the largest
    ``nn.Embedding``; None when there is none."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            found = getter()
        except (NotImplementedError, AttributeError):
            found = None
        if isinstance(found, nn.Module):
            return found
    tables = [m for m in model.modules() if _is_embedding(m)]
    return max(tables, key=lambda m: m.num_embeddings, default=None)


def _is_embedding(module: nn.Module) -> bool:
    # autocompress's trimmed and int8 embeddings are not nn.Embedding subclasses but carry the same attributes
    return isinstance(module, nn.Embedding) or (hasattr(module, "num_embeddings") and hasattr(module, "embedding_dim"))


def _attention_names(model: nn.Module) -> list[str]:
    from .profile import _is_attention

    return [n for n, m in model.named_modules() if n and _is_attention(m)]


def classify(model: nn.Module) -> dict[str, str]:
    """The component of every module that holds tensors or does work, by module name."""
    word = word_embedding(model)
    attention = _attention_names(model)
    word_names = {n for n, m in model.named_modules() if word is not None and (m is word or
                                                                               _inside(n, _name_of(model, word)))}
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        lowered = name.lower()
        if name in word_names:
            out[name] = "embeddings.word"
        elif _is_embedding(module) and ("position" in lowered or lowered.endswith(("wpe", "embed_positions"))):
            out[name] = "embeddings.position"
        elif _is_embedding(module) and ("token_type" in lowered or "segment" in lowered):
            out[name] = "embeddings.token_type"
        elif _EMBEDDINGS_NAME.search(name) or _is_embedding(module):
            out[name] = "embeddings.other"
        elif any(_inside(name, a) for a in attention) or _ATTENTION_NAME.search(name):
            out[name] = "attention"
        elif _BLOCK_NAME.search(name):
            out[name] = "mlp"
        else:
            out[name] = "head"
    return out


def _name_of(model: nn.Module, target: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is target), "\0")


def _inside(name: str, parent: str) -> bool:
    return name == parent or name.startswith(parent + ".")


def component_breakdown(model: nn.Module, flops_by_module: dict[str, int]) -> list[ComponentStats]:
    """Params, bytes and MACs per component (see the module docstring); each total sums over the model."""
    from .profile import _own_param_count

    kinds = classify(model)
    params = dict.fromkeys(COMPONENTS, 0)
    size = dict.fromkeys(COMPONENTS, 0)
    flops = dict.fromkeys(COMPONENTS, 0)
    for name, module in model.named_modules():
        kind = kinds[name]
        params[kind] += _own_param_count(module)
        size[kind] += own_bytes(module)
        total = flops_by_module.get(name, 0)
        children = sum(flops_by_module.get(f"{name}.{c}" if name else c, 0) for c, _ in module.named_children())
        flops[kind] += max(total - children, 0)
    return [ComponentStats(c, params[c], size[c], flops[c]) for c in COMPONENTS]


def components_dict(rows: list[ComponentStats]) -> dict[str, dict[str, int]]:
    """``{component: {"params", "bytes", "flops"}}``, the profile's JSON form."""
    return {r.component: {k: v for k, v in asdict(r).items() if k != "component"} for r in rows}


def share(components: dict[str, dict[str, int]], names: tuple[str, ...] | str, of: str = "bytes") -> float:
    """The fraction of ``of`` (params, bytes, flops) held by the named components (prefix ``embeddings`` works)."""
    names = (names,) if isinstance(names, str) else names
    total = sum(v[of] for v in components.values())
    held = sum(v[of] for k, v in components.items() if any(k == n or k.startswith(n + ".") for n in names))
    return held / total if total else 0.0
