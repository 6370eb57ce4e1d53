"""The JSON wire codec, on orjson (the forms are described in docs/reference/wire-format.md).

``encode(obj) -> bytes`` writes any runtime type in its wire form;
``decode(cls, data)`` reads ``bytes``, ``str`` or an already-parsed ``dict``
into ``cls`` or raises :class:`InvalidInput` naming the offending field. The
round trip holds: ``decode(type(x), encode(x)) == x``.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import orjson

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events._codec import from_wire, to_wire
from meerkat_runtime.events.runtime_event import RuntimeEvent, event_from_wire, event_to_wire

__all__ = ["decode", "encode", "loads", "to_json_value"]

T = TypeVar("T")

#: Documents larger than this are refused before parsing (API "oversized payloads").
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def to_json_value(obj: Any) -> Any:
    """The JSON-native value (dicts, lists, strings, numbers) of a runtime object."""
    if isinstance(obj, RuntimeEvent):
        return event_to_wire(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return to_wire(obj)


def encode(obj: Any) -> bytes:
    """The JSON wire form of any runtime type (inputs, events, outcomes, reports, ...)."""
    return orjson.dumps(to_json_value(obj))


def loads(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON bytes/str into JSON-native values; :class:`InvalidInput` when it is not JSON."""
    if len(data) > max_bytes:
        raise InvalidInput(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from None


def decode(cls: type[T], data: bytes | str | bytearray | memoryview | dict[str, Any]) -> T:
    """Decode wire JSON (or a parsed dict) into ``cls``; :class:`InvalidInput` on any defect."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        value = loads(bytes(data))
    elif isinstance(data, str):
        value = loads(data)
    else:
        value = data
    if isinstance(cls, type) and issubclass(cls, RuntimeEvent):
        # Events are written adjacently tagged (``encode``), whichever class is asked for.
        event = event_from_wire(value)
        if not isinstance(event, cls):
            raise InvalidInput(f"expected a {cls.__name__}, got {type(event).__name__}")
        return event
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            raise InvalidInput(f"unknown {cls.__name__} value {str(value)[:64]!r}") from None
    return from_wire(cls, value)
