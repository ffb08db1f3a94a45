"""Typed configuration: frozen dataclasses filled from TOML tables and dotted-key overrides.

The dataclass defaults are the built-in defaults; a TOML table names only what it changes. Values
are checked against the fields' type hints (lists become tuples, integers may stand for floats,
numbers for strings, tables for nested dataclasses), and every error is one line naming the
dotted key. Each function takes the error class to raise, a subclass of :class:`TypedConfigError`.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class TypedConfigError(ValueError):
    """An unreadable file, an unknown key or an invalid value; the message is one line."""


def read_toml(path: str | Path, error: type[TypedConfigError] = TypedConfigError) -> dict[str, Any]:
    """The TOML file's tables; a missing, unreadable or malformed file raises ``error``."""
    file = Path(path).expanduser()
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"configuration file not found: {file}") from None
    except OSError as exc:
        raise error(f"cannot read configuration file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{file}: invalid TOML: {exc}") from None


def load(
    base: T,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    error: type[TypedConfigError] = TypedConfigError,
) -> T:
    """``base``, then the TOML file (if any), then dotted-key overrides, checked together: an
    override replaces a bad value of the file before anything is checked."""
    nested = _nested(overrides or {})
    if path is None:
        return merge(base, nested, error)
    data = read_toml(path, error)
    try:
        return merge(base, _deep_merge(data, nested), error)
    except TypedConfigError as exc:
        if nested and _fits(base, data):  # the file is right by itself: an override is wrong
            raise
        raise error(f"{Path(path).expanduser()}: {exc}") from None


def with_overrides(
    base: T, overrides: Mapping[str, Any], error: type[TypedConfigError] = TypedConfigError
) -> T:
    """A copy of ``base`` with dotted keys replaced, e.g. ``{"vad.hangover": 0.4}``."""
    return merge(base, _nested(overrides), error)


def _fits(base: Any, data: Mapping[str, Any]) -> bool:
    """Whether ``data`` applies to ``base`` without a configuration error."""
    try:
        merge(base, data)
    except TypedConfigError:
        return False
    return True


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested tables: ``{"vad.hangover": 0.4}`` -> ``{"vad": {"hangover": 0.4}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _deep_merge(data: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with ``top``'s values over it, table by table."""
    merged = dict(data)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def merge(
    base: T, data: Any, error: type[TypedConfigError] = TypedConfigError, where: str = ""
) -> T:
    """``base`` (a dataclass instance) with the values of ``data`` (a TOML table) applied."""
    assert is_dataclass(base) and not isinstance(base, type)
    values = _values(type(base), data, where, error, current=base)
    return _construct(partial(replace, base), values, where, error)


def _build(cls: type[T], data: Any, where: str, error: type[TypedConfigError]) -> T:
    """A new ``cls`` from a TOML table that gives at least its fields without defaults."""
    values = _values(cls, data, where, error)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise error(f"{where}{f.name} is required")
    return _construct(cls, values, where, error)


def _values(
    cls: type, data: Any, where: str, error: type[TypedConfigError], current: Any = None
) -> dict[str, Any]:
    """The table's values checked against ``cls``'s fields; tables merge into ``current``'s."""
    if not isinstance(data, dict):
        raise error(f"{where.rstrip('.') or 'configuration'} must be a table")
    known = {f.name for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in known:
            raise error(f"unknown configuration key {name!r}")
        old = getattr(current, key, None)
        if is_dataclass(old):
            values[key] = merge(old, value, error, f"{name}.")
        else:
            values[key] = _coerce(value, hints[key], name, error)
    return values


def _construct(
    make: Callable[..., T], values: dict[str, Any], where: str, error: type[TypedConfigError]
) -> T:
    """``make(**values)``; a ValueError of the dataclass's own checks names the table."""
    try:
        return make(**values)
    except TypedConfigError:
        raise
    except (TypeError, ValueError) as exc:
        table = where.rstrip(".")
        message = str(exc)
        if table and not message.startswith(table):
            message = f"{table}: {message}"
        raise error(message) from None


def _coerce(value: Any, hint: Any, name: str, error: type[TypedConfigError]) -> Any:
    """Check a TOML/flag value against a field's type hint."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _coerce(value, options[0], name, error)
        for option in options:
            try:
                return _coerce(value, option, name, error)
            except TypedConfigError:
                continue
        raise error(f"{name} has an invalid value {value!r}")
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise error(f"{name} must be a list")
        (item_type, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(v, item_type, name, error) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{name} must be a table")
        key_type, value_type = typing.get_args(hint)
        return {
            _coerce(k, key_type, name, error): _coerce(v, value_type, f"{name}.{k}", error)
            for k, v in value.items()
        }
    if isinstance(hint, type) and is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, f"{name}.", error)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    base = origin or hint  # os.PathLike[str] -> os.PathLike
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise error(f"{name} must be of type {base.__name__}, got {value!r}")
    return value
