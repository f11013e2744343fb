"""Architecture records: the shapes and plain attributes of a (possibly pruned) float model, as JSON.

Structured pruning changes two things in a model: the shapes of parameters and buffers, and plain attributes
such as ``in_channels``/``out_features``/``num_heads`` (this is what ``torch_pruning.load_state_dict``
restores too). Both fit in a JSON dict, so an exported archive needs no pickled Python object to describe a
pruned architecture: :func:`rebuild` applies the record to a copy of the original (unpruned) model.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._tensors import ModelInput

ARCH_VERSION = 1
_PLAIN = (bool, int, float, str, type(None))
# Attributes that describe state, not architecture; never recorded nor restored.
_SKIP_ATTRS = {"training", "dump_patches", "call_super_init"}


# Module classes of autocompress that replace a base model's module (a trimmed or int8 embedding): rebuild()
# constructs them from their recorded attributes and shapes, ``cls.from_record(attrs, tensors)``.
_REPLACEMENTS: dict[str, type[nn.Module]] = {}
_OWN_PACKAGE = __name__.rpartition(".")[0] + "."


def register_replacement(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: let :func:`rebuild` put a ``cls`` where the base model has another module. ``cls`` needs
    a ``from_record(attrs, tensors)`` classmethod that builds it (zero weights) from its architecture entry."""
    _REPLACEMENTS[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _replacement(class_name: str) -> type[nn.Module] | None:
    """The registered replacement class named ``class_name``; only autocompress's own modules are imported."""
    if class_name not in _REPLACEMENTS and class_name.startswith(_OWN_PACKAGE):
        try:
            importlib.import_module(class_name.rpartition(".")[0])
        except ImportError:
            return None
    return _REPLACEMENTS.get(class_name)


def _plain_value(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, _PLAIN) for v in value)
    return False


def _attrs(module: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name in _SKIP_ATTRS or not _plain_value(value):
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def capture(model: nn.Module) -> dict[str, Any]:
    """The architecture record of a float model: per module, its class, plain attributes and tensor shapes."""
    modules: dict[str, Any] = {}
    for name, module in model.named_modules():
        tensors = {k: [list(t.shape), str(t.dtype).removeprefix("torch.")]
                   for k, t in list(module._parameters.items()) + list(module._buffers.items()) if t is not None}
        modules[name] = {"class": f"{type(module).__module__}.{type(module).__qualname__}",
                         "attrs": _attrs(module), "tensors": tensors}
    record: dict[str, Any] = {"version": ARCH_VERSION, "modules": modules}
    config = hf_config(model)
    widths = {k: getattr(config, k) for k in HF_CONFIG_FIELDS if hasattr(config, k)} if config is not None else {}
    if widths:
        # Pruning patches the Hugging Face config (widths, heads); a rebuilt model must carry the same config, or
        # save_pretrained would write the unpruned one.
        record["hf_config"] = widths
    return record


HF_CONFIG_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "num_key_value_heads", "head_dim",
                    "embedding_size", "word_embed_proj_dim", "hidden_dim", "ffn_dim", "n_inner")


def hf_config(model: nn.Module) -> Any:
    """The Hugging Face config of ``model`` (a ``PretrainedConfig``, attention or not), or None.

    Checked by type, not by attribute names: a user's own ``config`` object is never mistaken for one and
    written to, and every Hugging Face model is recognised, so pruning can say when its config cannot
    describe the pruned widths. ``transformers`` is only looked at if already imported (an HF model implies it).
    """
    if "transformers" not in sys.modules:
        return None
    from transformers import PretrainedConfig

    config = getattr(model, "config", None)
    return config if isinstance(config, PretrainedConfig) else None


def rebuild(base_model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """A copy of ``base_model`` reshaped to ``record`` (weights are zeros until a state dict is loaded).

    A module that the record says autocompress replaced (a registered replacement class, such as a trimmed
    embedding) is built from its record in place of the base model's module. Raises ``ValueError`` naming the
    first module that the base model lacks, or whose class differs.
    """
    model = copy.deepcopy(base_model)
    named = dict(model.named_modules())
    for name, entry in record["modules"].items():
        module = named.get(name)
        if module is None:
            raise ValueError(f"the base model has no module {name!r}")
        cls = f"{type(module).__module__}.{type(module).__qualname__}"
        if cls != entry["class"]:
            replacement = _replacement(entry["class"]) if name else None
            if replacement is None:
                raise ValueError(f"module {name!r} is a {cls}, the archive expects {entry['class']}")
            parent, _, child = name.rpartition(".")
            named[name] = replacement.from_record(entry["attrs"], entry["tensors"])
            setattr(model.get_submodule(parent) if parent else model, child, named[name])
            continue
        for attr, value in entry["attrs"].items():
            current = getattr(module, attr, None)
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            if attr in vars(module) and current != value:
                setattr(module, attr, value)
        for key, (shape, dtype) in entry["tensors"].items():
            # Only reshaped tensors are replaced, so tied weights of unpruned layers stay tied.
            torch_dtype = getattr(torch, dtype)
            if key in module._parameters and module._parameters[key] is not None:
                old = module._parameters[key]
                if list(old.shape) != shape:
                    module._parameters[key] = nn.Parameter(torch.zeros(shape, dtype=torch_dtype),
                                                           requires_grad=old.requires_grad)
            elif key in module._buffers and module._buffers[key] is not None:
                if list(module._buffers[key].shape) != shape:
                    module._buffers[key] = torch.zeros(shape, dtype=torch_dtype)
            else:
                raise ValueError(f"module {name!r} of the base model has no tensor {key!r}")
    config = hf_config(model)
    for key, value in record.get("hf_config", {}).items():
        if config is not None:
            setattr(config, key, value)
    return model


def input_spec(x: ModelInput) -> dict[str, Any]:
    """Shapes and dtypes of an example input, as JSON (a tensor, or a dict of tensors)."""
    if isinstance(x, Mapping):
        return {"kind": "dict", "items": {k: input_spec(v) for k, v in x.items()}}
    return {"kind": "tensor", "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}


def input_from_spec(spec: Mapping[str, Any]) -> ModelInput:
    """An input of the recorded shapes: zeros for integer tensors (valid token ids), ones elsewhere."""
    if spec["kind"] == "dict":
        return {k: input_from_spec(v) for k, v in spec["items"].items()}
    dtype = getattr(torch, spec["dtype"])
    if dtype.is_floating_point:
        return torch.rand(spec["shape"], generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.ones(spec["shape"], dtype=dtype)


def layer_widths(record: Mapping[str, Any]) -> dict[str, int]:
    """The output width of each conv and linear layer in an architecture record (``out_channels`` or
    ``out_features``), by module name, in model order: what structured pruning narrows."""
    widths: dict[str, int] = {}
    for name, module in record["modules"].items():
        for key in ("out_channels", "out_features"):
            if isinstance(module["attrs"].get(key), int):
                widths[name] = module["attrs"][key]
                break
    return widths
