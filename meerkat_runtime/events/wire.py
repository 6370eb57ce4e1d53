"""The JSON wire codec, on orjson (the forms are described in docs/reference/wire-format.md).

``encode(obj) -> bytes`` writes any runtime type in its wire form;
``decode(cls, data)`` reads ``bytes``, ``str`` or an already-parsed value into
``cls`` or raises :class:`InvalidInput` naming the offending field. The round
trip holds: ``decode(type(x), encode(x)) == x``.

``cls`` may be any spec type: a class, an identifier (``InputId``,
``PolicyVersion``, ...), an alias such as ``ContentInput``, an enum or a
container of these (``tuple[InputId, ...]``). Inner values and their carriers
are separate, as in Rust's serde: an event family value (an
``InputLifecycleEvent``, ...) is written in its own form
``{"code": ..., ...}`` and a ``StagedRunInput`` as ``{"boundary": ...}``;
the tag around them belongs to the carrier, so ``encode(x, as_type=RuntimeEvent)``
writes ``{"category": ..., "data": ...}`` and ``encode(x, as_type=RunPrimitive)``
adds ``"primitive_type"`` (as a field of those types does). ``decode`` reads
the form of the class it is given.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any, TypeVar, overload

import orjson

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events._codec import (
    _FAST_ENC,
    _check_json,
    decode_value,
    encode_value,
    from_wire,
    to_wire,
)
from meerkat_runtime.events.ids import uuid_text
from meerkat_runtime.events.runtime_event import RuntimeEvent, event_from_wire, event_to_wire
from meerkat_runtime.events.timefmt import format_timestamp

__all__ = ["check_json", "decode", "encode", "loads", "to_json_value"]

T = TypeVar("T")

#: Documents larger than this are refused before parsing (API "oversized payloads").
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def to_json_value(obj: Any, as_type: Any = None) -> Any:
    """The JSON-native value (dicts, lists, strings, numbers) of a runtime object.

    ``as_type`` is the declared type to write it as, when its form depends on it:
    ``RuntimeEvent`` (the ``category``/``data`` carrier of an event), a union such
    as ``RunPrimitive``, an identifier (``PolicyVersion`` checks its range), an
    alias (``ContentInput``). Without it, ``obj`` is written in its own form.
    """
    if as_type is None:
        enc = _FAST_ENC.get(type(obj))
        if enc is not None:
            return enc(obj)
        return _own_value(obj)
    if as_type is RuntimeEvent:
        if not isinstance(obj, RuntimeEvent) or not obj.__category__:
            raise InvalidInput(f"a {type(obj).__name__} is not a runtime event")
        return event_to_wire(obj)
    try:
        return encode_value(as_type, obj)
    except InvalidInput:
        raise
    except Exception as exc:  # a value the declared type cannot hold
        raise InvalidInput(f"a {type(obj).__name__} cannot be written as {as_type!r}") from exc


def _own_value(obj: Any) -> Any:
    """The wire value of anything but a class with a compiled encoder already."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_wire(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, uuid.UUID):
        return uuid_text(obj)
    if isinstance(obj, datetime):
        return format_timestamp(obj)
    if isinstance(obj, (list, tuple)):
        return [_own_value(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _own_value(v) for k, v in obj.items()}
    return _check_json(obj, "")  # scalars: refuse what JSON cannot carry


def encode(obj: Any, as_type: Any = None) -> bytes:
    """The JSON wire form of any runtime type (inputs, events, outcomes, reports, ids, ...);
    ``as_type`` as for :func:`to_json_value`."""
    return orjson.dumps(to_json_value(obj, as_type))


def loads(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON bytes/str into JSON-native values; :class:`InvalidInput` when it is not JSON."""
    if len(data) > max_bytes:
        raise InvalidInput(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from None


@overload
def decode(cls: type[T], data: Any) -> T: ...


@overload
def decode(cls: Any, data: Any) -> Any: ...


def decode(cls: Any, data: Any) -> Any:
    """Decode wire JSON (bytes or str), or an already-parsed value, as ``cls`` (any spec type);
    :class:`InvalidInput` on any defect."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        value = loads(bytes(data))
    elif isinstance(data, str):
        value = loads(data)
    else:
        value = data
    if cls is RuntimeEvent:  # the adjacently tagged carrier of the five families
        return event_from_wire(value)
    if isinstance(cls, type):
        if issubclass(cls, enum.Enum):
            try:
                return cls(value)
            except ValueError:
                raise InvalidInput(f"unknown {cls.__name__} value {str(value)[:64]!r}") from None
        if dataclasses.is_dataclass(cls):
            return from_wire(cls, value)
    return decode_value(cls, value)


def check_json(value: Any, path: str = "") -> Any:
    """``value`` itself if it is JSON the wire form carries; :class:`InvalidInput` naming
    ``path`` if not (non-finite numbers, out-of-range integers, invalid text, too deep)."""
    return _check_json(value, path)
