from dataclasses import dataclass

import pytest

from autocompress.config import Config, HandlerRegistry, register_config
from autocompress.errors import ConfigError


@register_config("test.inner")
@dataclass(frozen=True)
class _Inner(Config):
    ratio: float = 0.5
    layers: tuple = ("conv", "linear")


@register_config("test.outer")
@dataclass(frozen=True)
class _Outer(Config):
    inner: _Inner = _Inner()
    steps: int = 1


def test_round_trip_through_json_with_nesting():
    config = _Outer(inner=_Inner(ratio=0.25), steps=3)
    text = config.to_json()
    assert '"kind": "test.outer"' in text and '"version": 1' in text
    assert Config.from_json(text) == config


def test_unknown_kind_and_fields_and_future_version_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown config kind 'test.nope'"):
        Config.from_dict({"kind": "test.nope"})
    with pytest.raises(ConfigError, match=r"unknown fields \['bogus'\]"):
        Config.from_dict({"kind": "test.inner", "bogus": 1})
    with pytest.raises(ConfigError, match="version 99"):
        Config.from_dict({"kind": "test.inner", "version": 99})


def test_handler_registry_dispatches_by_type_and_names_known_kinds():
    registry: HandlerRegistry = HandlerRegistry("test")
    registry.register(_Inner)(lambda c: c.ratio)
    assert registry(_Inner(ratio=0.1))(_Inner(ratio=0.1)) == 0.1
    with pytest.raises(ConfigError, match="one of test.inner"):
        registry(_Outer())
