"""Identifiers and the UUIDv7 generator (docs: reference/wire-format.md, general rules).

Every id the runtime mints is a UUIDv7 (time-ordered); any valid uuid is
accepted on input, in any case, with or without hyphens. Ids are plain
:class:`uuid.UUID` values with ``NewType`` names for readability; they are
written lowercase with hyphens.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import uuid
from typing import Any, NewType

from meerkat_runtime.errors import InvalidInput

__all__ = [
    "SESSION_RUNTIME_PREFIX",
    "CausationId",
    "ConversationId",
    "CorrelationId",
    "EventCodeId",
    "IdempotencyKey",
    "InputId",
    "LogicalRuntimeId",
    "PolicyVersion",
    "ProjectionRuleId",
    "RunId",
    "RuntimeEventId",
    "SchemaId",
    "SessionId",
    "SupersessionKey",
    "parse_uuid",
    "session_id_from_runtime_id",
    "uuid7",
    "uuid_text",
    "validate_session_id",
]

InputId = NewType("InputId", uuid.UUID)
RunId = NewType("RunId", uuid.UUID)
RuntimeEventId = NewType("RuntimeEventId", uuid.UUID)
ConversationId = NewType("ConversationId", uuid.UUID)
CausationId = NewType("CausationId", uuid.UUID)
CorrelationId = NewType("CorrelationId", uuid.UUID)
LogicalRuntimeId = NewType("LogicalRuntimeId", str)
IdempotencyKey = NewType("IdempotencyKey", str)
SupersessionKey = NewType("SupersessionKey", str)
#: An unsigned 64-bit integer on the wire (negative, fractional or quoted values are refused).
PolicyVersion = NewType("PolicyVersion", int)
#: A dotted event code such as ``input.accepted``.
EventCodeId = NewType("EventCodeId", str)
SchemaId = NewType("SchemaId", str)
ProjectionRuleId = NewType("ProjectionRuleId", str)
# Session ids are opaque strings of 1 to 256 printable characters.
SessionId = NewType("SessionId", str)

SESSION_RUNTIME_PREFIX = "rt:session:"
# 32 hex digits, bare or in the 8-4-4-4-12 layout (the backreference keeps the
# hyphens all-or-nothing); ``int(..., 16)`` behind ``uuid.UUID`` alone would also
# take blanks, signs and underscores.
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}"
)

_local = threading.local()
# Random bits come from a per-thread buffer refilled 4 KiB at a time: one
# getrandom syscall per ~400 ids instead of two per id (each syscall drops and
# retakes the GIL, queueing the actor thread behind every other thread).
_RANDOM_CHUNK = 4096
_BYTES_PER_ID = 10  # 2 seed the millisecond's counter, 8 are the random tail


def _forget_random_state() -> None:
    # A forked child must never replay its parent's buffered random bytes.
    global _local
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random_state)


def uuid7() -> uuid.UUID:
    """Return a fresh UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter, then random bits.

    Ids minted by one thread stay strictly increasing, also within a millisecond
    (the counter is seeded randomly each millisecond and incremented); ids of
    different threads in the same millisecond are ordered by chance and kept
    unique by 62 random bits. Per-thread state instead of a process-wide lock:
    a lock here made every actor thread queue behind whichever one the GIL had
    paused inside it (about 14% of accept time in a profile).
    """
    # One list per thread, [random buffer, read position, last ms, counter]: one
    # attribute lookup and an unpacking instead of a dict ``get`` per item.
    try:
        state: list[Any] = _local.state
    except AttributeError:
        state = _local.state = [b"", _RANDOM_CHUNK, 0, 0]
    buf, pos, last, counter = state
    if pos + _BYTES_PER_ID > len(buf):
        buf = state[0] = os.urandom(_RANDOM_CHUNK)
        pos = 0
    state[1] = pos + _BYTES_PER_ID
    bits = int.from_bytes(buf[pos : pos + _BYTES_PER_ID], "big")
    ms = time.time_ns() // 1_000_000
    if ms > last:
        counter = bits >> 64 & 0x7FF
    else:
        ms = last
        counter += 1
        if counter > 0xFFF:  # counter exhausted: borrow the next millisecond
            ms += 1
            counter = 0
    state[2] = ms
    state[3] = counter
    rand = bits & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return _uuid_from_int(value)


_UUID_NEW = object.__new__
_UUID_SET = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _uuid_from_int(value: int) -> uuid.UUID:
    # ``uuid.UUID(int=value)`` without its argument checks (about 0.8 us of a 2.4 us
    # uuid7): ``value`` is a 128-bit int by construction. The same two slots are set.
    u: uuid.UUID = _UUID_NEW(uuid.UUID)
    _UUID_SET(u, "int", value)
    _UUID_SET(u, "is_safe", _UNKNOWN_SAFETY)
    return u


def parse_uuid(value: object, path: str = "") -> uuid.UUID:
    """Parse a uuid string (any case, hyphens optional); :class:`InvalidInput` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"expected a uuid string, got {type(value).__name__}", path)
    parsed = _uuid_of(value)
    if parsed is None:
        raise InvalidInput(f"not a uuid: {value[:64]!r}", path)
    return parsed


@functools.lru_cache(maxsize=16384)
def _uuid_of(text: str) -> uuid.UUID | None:
    # Cached: a fold or a projection page decodes the same ids many times.
    if _UUID_TEXT.fullmatch(text) is None:
        return None
    return uuid.UUID(hex=text)


# Written uuids by value (bounded: emptied when full). ``str(uuid)`` costs about a
# microsecond, and one input's id is written in every event of its life.
_TEXT: dict[int, str] = {}
_TEXT_MAX = 16384


def uuid_text(value: uuid.UUID) -> str:
    """``str(value)`` (lowercase, hyphens), cached for plain :class:`uuid.UUID` values."""
    if type(value) is not uuid.UUID:
        return str(value)
    text = _TEXT.get(value.int)
    if text is None:
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        text = _TEXT[value.int] = str(value)
    return text


def validate_session_id(value: object, path: str = "session_id") -> SessionId:
    """Check a session id: a string of 1 to 256 printable characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"session id must be a string, got {type(value).__name__}", path)
    if not 1 <= len(value) <= 256:
        raise InvalidInput(f"session id must have 1 to 256 characters, got {len(value)}", path)
    if not value.isprintable():
        raise InvalidInput("session id must contain only printable characters", path)
    return SessionId(value)


def session_id_from_runtime_id(runtime_id: str) -> uuid.UUID:
    """Extract the session uuid of a ``rt:session:<uuid>`` runtime id (bare uuids are a legacy alias)."""
    text = runtime_id.removeprefix(SESSION_RUNTIME_PREFIX)
    return parse_uuid(text, "runtime_id")
