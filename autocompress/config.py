"""Frozen, versioned configuration records that round-trip through JSON, and handler registries.

The pattern follows torchao: each compression method has a frozen dataclass config; the function that
applies it is registered under the config's type. Adding a technique means adding a config class and a
registered handler; no if/elif dispatcher is edited.

    @register_config("pruning.magnitude")
    @dataclass(frozen=True)
    class MagnitudePruning(Config):
        p: int = 1

    config.to_dict()  ->  {"kind": "pruning.magnitude", "version": 1, "p": 1}
    Config.from_dict(d)  ->  MagnitudePruning(p=1)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from .errors import AutocompressError, ConfigError

C = TypeVar("C", bound="Config")
F = TypeVar("F", bound=Callable[..., Any])

_CONFIG_TYPES: dict[str, type[Config]] = {}
_ALIASES: dict[str, str] = {}  # retired kind -> the kind that now means the same (stored records keep loading)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config record. Subclasses are frozen dataclasses registered with :func:`register_config`."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.KIND, "version": self.VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.to_dict() if isinstance(value, Config) else _plain(value)
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Config:
        """Rebuild any registered config from :meth:`to_dict` output (nested configs included)."""
        if not isinstance(data, dict) or "kind" not in data:
            raise ConfigError(f"config record {data!r}", "a dict with a 'kind' key", "pass the output of to_dict()")
        kind = _ALIASES.get(data["kind"], data["kind"])
        cls = _CONFIG_TYPES.get(kind)
        if cls is None:
            raise ConfigError(f"unknown config kind {kind!r}", f"one of {', '.join(sorted(_CONFIG_TYPES))}",
                              "check the record, or import the module that registers it")
        version = data.get("version", 1)
        if version > cls.VERSION:
            raise ConfigError(f"config {kind!r} of version {version}",
                              f"version {cls.VERSION} or older, which this autocompress reads",
                              "upgrade autocompress")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names) - {"kind", "version"}
        if unknown:
            raise ConfigError(f"config {kind!r} with unknown fields {sorted(unknown)}",
                              f"fields among {sorted(names)}", "remove the unknown fields")
        kwargs = {}
        for key, value in data.items():
            if key in names:
                kwargs[key] = Config.from_dict(value) if isinstance(value, dict) and "kind" in value else \
                    _restore(value)
        return cls(**kwargs)

    @staticmethod
    def from_json(text: str) -> Config:
        return Config.from_dict(json.loads(text))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _restore(value: Any) -> Any:
    # JSON has no tuples; frozen records keep sequences as tuples so that they stay hashable.
    if isinstance(value, list):
        return tuple(_restore(v) for v in value)
    return value


def register_config(kind: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a config class under ``kind`` so :meth:`Config.from_dict` can rebuild it."""

    def decorate(cls: type[C]) -> type[C]:
        if kind in _CONFIG_TYPES and _CONFIG_TYPES[kind] is not cls:
            raise ValueError(f"config kind {kind!r} is already registered to {_CONFIG_TYPES[kind].__name__}")
        cls.KIND = kind
        _CONFIG_TYPES[kind] = cls
        return cls

    return decorate


def register_alias(old_kind: str, kind: str) -> None:
    """Let records of a retired ``old_kind`` load as ``kind`` (e.g. two techniques that turned out the same)."""
    _ALIASES[old_kind] = kind


def registered_kinds(prefix: str = "") -> list[str]:
    return sorted(k for k in _CONFIG_TYPES if k.startswith(prefix))


def family_names(family: str) -> list[str]:
    """The short names registered in one family (``pruning``, ``distillation``, ``quantization``), in the order
    they were registered."""
    return [kind.partition(".")[2] for kind in _CONFIG_TYPES if kind.startswith(f"{family}.")]


def config_from_name(family: str, name: str, *, what: str = "technique", error: type[AutocompressError] | None = None,
                     **params: Any) -> Config:
    """The one name→config map of the technique families: ``config_from_name("distillation", "soft",
    temperature=2)`` builds the config registered as ``distillation.soft``. A retired name registered with
    :func:`register_alias` still works. Unknown names and parameters raise ``error`` (default ConfigError)."""
    error = error or ConfigError
    kind = _ALIASES.get(f"{family}.{name}", f"{family}.{name}") if isinstance(name, str) else None
    if kind not in _CONFIG_TYPES:
        raise error(f"unknown {family} {what} {name!r}", f"one of {', '.join(family_names(family))}",
                    "pick one of these names")
    fields = [f.name for f in dataclasses.fields(_CONFIG_TYPES[kind])]
    if set(params) - set(fields):
        raise error(f"parameters {sorted(params)} for {family} {what} {name!r}", f"parameters among {fields}",
                    "remove the unknown parameters")
    return Config.from_dict({"kind": kind, **params})


class HandlerRegistry(Generic[F]):
    """Maps config types to the functions that apply them: ``registry.register(ConfigType)(fn)``, each
    ``fn(config, request)``; :meth:`apply` runs the one registered for a config."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._handlers: dict[type[Config], F] = {}

    def register(self, config_type: type[Config]) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            self._handlers[config_type] = fn
            return fn

        return decorate

    def __call__(self, config: Config) -> F:
        for cls in type(config).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        known = ", ".join(sorted(c.KIND for c in self._handlers))
        raise ConfigError(f"no {self.what} handler for config {type(config).__name__} ({config.KIND!r})",
                          f"one of {known}", "register a handler for this config type")

    def apply(self, config: Config, request: Any = None) -> Any:
        """Run the handler registered for ``config``'s type. Every family's handlers share this one signature,
        ``handler(config, request)``: the config says what to do, the family's request what to do it to."""
        return self(config)(config, request)

    def kinds(self) -> list[str]:
        return sorted(c.KIND for c in self._handlers)
