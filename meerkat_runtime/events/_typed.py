"""Typed objects checked exactly like wire input.

Python code can build any spec dataclass with any value in any field (the
dataclasses do not check types), so an object a host hands over is only
trusted once it has been through the wire decoder: :func:`checked` encodes it
to its wire form and decodes that again, which applies every check wire JSON
gets (required and non-null fields, enum values, uuids, timestamps with an
offset, JSON depth, finite numbers, 64-bit integers, Unicode text) and returns
the decoded value, equal to what a later read of the stored form gives.

The generated encoder is tried first. When it cannot write a field at all (a
``str`` where an enum belongs, ``bytes`` content, a naive datetime), a slower
path-aware encoder walks the object instead: a value the decoder takes as a
Python value (e.g. ``"durable"`` for :class:`InputDurability`, a ``dict`` for a
nested object) is written as the decoder reads it, anything else is refused as
:class:`InvalidInput` naming the field, as the decoder would name it in JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events._codec import (
    JSON,
    Custom,
    _decoder_for,
    _encoder_for,
    _plan,
    _unwrap_newtype,
    from_wire,
    join_path,
    to_wire_tagged,
)

__all__ = ["checked", "checked_wire"]

T = TypeVar("T")


def checked(cls: type[T], obj: Any) -> T:
    """``obj`` decoded from its own wire form as ``cls``.

    Raises :class:`InvalidInput` naming the field when wire input of the same
    shape would be refused.
    """
    return from_wire(cls, checked_wire(obj))


def checked_wire(obj: Any) -> Any:
    """The wire form of a spec object; :class:`InvalidInput` naming a field it cannot write."""
    try:
        return to_wire_tagged(obj)  # decodable as its union too
    except Exception as exc:  # something the generated encoder cannot write: find what
        cause = exc
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise InvalidInput(f"cannot be written as JSON: {type(cause).__name__}: {cause}")
    return _encode_object(obj, "")


def _cannot(v: Any, path: str) -> InvalidInput:
    return InvalidInput(f"a {type(v).__name__} value cannot be written as JSON here", path)


def _encode(tp: Any, v: Any, path: str) -> Any:
    """``v`` (declared as ``tp``) written as its wire value, field by field.

    Raises :class:`InvalidInput` naming the field for a value the decoder refuses
    or that cannot be written at all.
    """
    if v is None:
        return None  # whether null is allowed is the decoder's call
    tp = _unwrap_newtype(tp)
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, Custom):
                return _leaf(extra.encode, extra.decode, v, path)
            if extra is JSON:
                return v
        return _encode(base, v, path)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _encode(members[0], v, path)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _encode_object(v, path)
    if origin in (tuple, list) and isinstance(v, (list, tuple)):
        args = get_args(tp)
        item = args[0] if args else Any
        return [_encode(item, x, join_path(path, f"[{i}]")) for i, x in enumerate(v)]
    if origin is dict and isinstance(v, dict):
        args = get_args(tp)
        val = args[1] if len(args) == 2 else Any
        return {k: _encode(val, x, join_path(path, str(k))) for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum) and not isinstance(v, enum.Enum):
        return _leaf(_encoder_for(tp), _decoder_for(tp), v, path)
    try:
        enc = _encoder_for(tp)
    except TypeError:
        raise _cannot(v, path) from None
    return _leaf(enc, _decoder_for(tp), v, path)


def _leaf(enc: Any, dec: Any, v: Any, path: str) -> Any:
    """One value: as the encoder writes it, else as the decoder reads it (or its refusal)."""
    if enc is None:
        return v  # already JSON-native if valid at all: the decoder checks it
    try:
        return enc(v)
    except Exception:
        pass
    try:
        decoded = dec(v, path)  # raises InvalidInput naming the field when refused
    except InvalidInput:
        raise
    except Exception:
        raise _cannot(v, path) from None
    try:
        return enc(decoded)
    except Exception:
        raise _cannot(v, path) from None


def _encode_object(obj: Any, path: str) -> Any:
    cls = type(obj)
    plan = _plan(cls)
    if plan.custom:
        try:
            return obj.__wire_encode__()
        except Exception:
            raise _cannot(obj, path) from None
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, Any] = {}
    if plan.tag_key is not None:
        out[plan.tag_key] = plan.tag
    for fp in plan.fields:
        v = getattr(obj, fp.attr)
        omit = fp.omit
        if omit is not None and (
            (omit == "none" and v is None)
            or (omit == "empty" and not v)
            or (omit == "false" and v is False)
        ):
            continue
        out[fp.key] = _encode(hints[fp.attr], v, join_path(path, fp.key))
    return out
