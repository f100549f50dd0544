"""Name → model registry behind ``worldmodel.dynamics.make``.

A registered name maps to a ``LatentDynamics`` subclass plus config fields fixed by the name
(``svg-fp`` is SVG with ``prior="fixed"``). Presets are named configs on the config class
(``PRESETS = {"tiny": {...}, "paper": {...}}``), never code paths.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from typing import Any

from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics

# name -> (module that registers it, class name, config fields the name fixes)
_BUILTIN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "svg-lp": ("worldmodel.dynamics.svg", "SVG", {"prior": "learned"}),
    "svg-fp": ("worldmodel.dynamics.svg", "SVG", {"prior": "fixed"}),
    "svg-det": ("worldmodel.dynamics.svg", "SVG", {"prior": "none"}),
    "vgan": ("worldmodel.dynamics.vgan", "VGAN", {}),
    "videoflow": ("worldmodel.dynamics.videoflow", "VideoFlow", {}),
    "jepa": ("worldmodel.dynamics.jepa", "JEPA", {}),
}
_EXTRA: dict[str, tuple[type[LatentDynamics], dict[str, Any]]] = {}


def register(name: str, cls: type[LatentDynamics], **fixed: Any) -> None:
    """Register a model class under ``name`` (for models outside this package)."""
    _EXTRA[name] = (cls, fixed)


def available() -> list[str]:
    """Every registered model name: the built-in ones and those added with ``register``."""
    return sorted({*_BUILTIN, *_EXTRA})


def builtin() -> list[str]:
    """The model names this package ships (what the contract test covers)."""
    return sorted(_BUILTIN)


def resolve(name: str) -> tuple[type[LatentDynamics], dict[str, Any]]:
    """The class and the fixed config fields behind ``name``."""
    if name in _EXTRA:
        return _EXTRA[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(available())}")
    module, cls_name, fixed = _BUILTIN[name]
    return getattr(importlib.import_module(module), cls_name), dict(fixed)


def build_config(name: str, preset: str | None = None, **overrides: Any) -> DynamicsConfig:
    """The config for ``name``: class defaults, then the preset, then the name's fixed fields,
    then ``overrides``. Unknown fields raise ``ValueError`` naming them."""
    cls, fixed = resolve(name)
    config_class = cls.config_class
    presets: dict[str, dict[str, Any]] = getattr(config_class, "PRESETS", {})
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r} for {name}; choose one of {', '.join(presets)}")
        values.update(presets[preset])
    values.update(fixed)
    values.update(overrides)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config field(s) for {name}: {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    for key, value in values.items():  # lists from JSON/checkpoints back to tuples
        if isinstance(value, list) and isinstance(fields[key].default, tuple):
            values[key] = tuple(value)
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        if not _fits(value, hints.get(key, Any)):
            raise ValueError(f"{name} config field {key} must be {_describe(hints[key])}, got {value!r}")
    return config_class(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the declared field type (numbers finite; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    if origin is typing.Literal:
        return value in args
    return True


def _describe(hint: Any) -> str:
    """``int`` → "a whole number", ``tuple[float, float]`` → "2 numbers (a,b)"..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a comma-separated list of {_describe(args[0])}s"
        return f"{len(args)} comma-separated values ({', '.join(_describe(a) for a in args)})"
    names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a word"}
    return names.get(hint, "None" if hint is type(None) else str(hint))


def make(name: str, preset: str | None = None, **overrides: Any) -> LatentDynamics:
    """Build a fresh model: ``make("svg-lp", preset="tiny", z_dim=8)``."""
    cls, _ = resolve(name)
    return cls(build_config(name, preset, **overrides))


def name_of(model: LatentDynamics) -> str:
    """The registry name a model was built under (from its class and config)."""
    for name in available():
        cls, fixed = resolve(name)
        if type(model) is cls and all(getattr(model.config, k) == v for k, v in fixed.items()):
            return name
    raise ValueError(f"{type(model).__name__} is not registered")
