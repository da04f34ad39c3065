"""One way for a trainer to build its dataclass ``Config`` from a flat mapping.

A trainer's config arrives as a plain mapping (a YAML file's ``fixed`` values plus a tuner's
suggestion), so values come with a tuner's or YAML's types: ``256.0`` for an int, numpy
scalars, ``1`` for a float. :func:`config_from_mapping` checks every key against the
dataclass fields and coerces every value by its field's annotation:

- ``int``: an integer, or an integral real number (``256.0`` -> ``256``); never a bool
- ``float``: any real number (ints and numpy scalars become ``float``); never a bool
- ``str``: a string; ``bool``: a bool (or a numpy bool)
- ``X | None``: ``None``, or a value that ``X`` accepts (likewise for other unions)

Every error is a ``ValueError`` of one line naming the trainer, the field, the rule and the
value (``gflownet config: hidden must be an integer, got 2.5``); an unknown key names the
known ones. Range and choice rules stay with each trainer's ``Config`` (``__post_init__`` or
``validate``). Plain Python only: no pydantic, so a trainer runs where only torch is.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_NONE = type(None)


def config_from_mapping(cls: type[T], values: Mapping[str, Any], name: str) -> T:
    """``cls(**values)`` with every key known and every value coerced to its field's type.

    ``name`` prefixes every error (``"gflownet"`` -> ``"gflownet config: ..."``).
    """
    prefix = f"{name} config"
    if not isinstance(values, Mapping):
        raise ValueError(f"{prefix}: must be a mapping of field names to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{prefix}: unknown key {key!r}; known: {sorted(known)}")
        try:
            kwargs[key] = coerce(value, hints[key])
        except _Mismatch as bad:
            raise ValueError(f"{prefix}: {key} must be {bad.rule}, got {value!r}") from None
    return cls(**kwargs)


class _Mismatch(Exception):
    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def coerce(value: Any, kind: Any) -> Any:
    """``value`` converted to the annotation ``kind``; raises ``_Mismatch`` naming the rule."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = typing.get_args(kind)
        if value is None and _NONE in members:
            return None
        for member in members:
            if member is _NONE:
                continue
            try:
                return coerce(value, member)
            except _Mismatch:
                pass
        raise _Mismatch(" or ".join(_rule(m) for m in members))
    rule = _rule(kind)  # raises TypeError for an annotation this helper does not handle
    if kind is bool:
        if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
            return bool(value)
        raise _Mismatch(rule)
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        raise _Mismatch(rule)  # True is an int to Python, but never a count or a rate here
    if kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise _Mismatch(rule)
    if kind is float:
        if isinstance(value, numbers.Real):
            return float(value)
        raise _Mismatch(rule)
    if isinstance(value, str):  # kind is str
        return str(value)
    raise _Mismatch(rule)


_RULES = {int: "an integer", float: "a number", str: "a string", bool: "a bool", _NONE: "null"}


def _rule(kind: Any) -> str:
    try:
        return _RULES[kind]
    except (KeyError, TypeError):
        raise TypeError(f"config_from_mapping: unsupported field annotation {kind!r}") from None
