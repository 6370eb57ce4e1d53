"""Ingress metadata types (Rust ``ingress_types.rs``): pure data, no behaviour.

* :class:`ContentShape`: an admitted input's content classification, closed to
  the nine input kinds (Rust keeps it from being an arbitrary string on purpose:
  it wraps an ``InputKind``). ``InputState.content_shape`` gives it, so callers
  can correlate admissions by content type without reading the input payload.
* ``RequestId`` and ``ReservationKey``: string newtypes for correlation ids and
  admission reservation keys.

None of them is a wire type of their own: in Rust they derive no serde, and the
spec gives them no form. Where a request id is written (a peer convention's or
a continuation's ``request_id``) it is a plain string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from meerkat_runtime.events.inputs import InputKind, KindId

__all__ = ["ContentShape", "RequestId", "ReservationKey"]

#: A request id for correlation tracking (Rust ``RequestId(String)``).
RequestId = NewType("RequestId", str)
#: A reservation key of an admitted input (Rust ``ReservationKey(String)``).
ReservationKey = NewType("ReservationKey", str)


@dataclass(frozen=True, slots=True)
class ContentShape:
    """The content shape of an admitted input: one of the nine input kinds.

    Built from an :class:`InputKind` (or a ``KindId``) only, never from free
    text; ``str(shape)`` and :meth:`as_str` are the kind's string.
    """

    kind: InputKind

    def __post_init__(self) -> None:
        if not isinstance(self.kind, InputKind):
            raise TypeError(f"a content shape wraps an InputKind, not {type(self.kind).__name__}")

    @classmethod
    def from_kind(cls, kind: InputKind) -> ContentShape:
        return cls(kind)

    @classmethod
    def from_kind_id(cls, kind_id: KindId) -> ContentShape:
        return cls(kind_id)

    def as_str(self) -> str:
        return self.kind.value

    def __str__(self) -> str:
        return self.kind.value
