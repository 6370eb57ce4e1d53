"""The event catalogue: the stable topic of every stored event, and the mapping
between envelopes and stored records.

A topic is the spec's dotted event code (``input.accepted``,
``runtime.state_changed``, ...), never a module path, so renaming a Python
class never orphans stored events. The stored payload of an event is its
envelope's wire form; its sequence is the stored version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from meerkat_runtime.errors import InvalidInput, UndecodableEvent
from meerkat_runtime.events._codec import from_wire, to_wire
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.events.upcast import EVENT_UPCASTERS

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

__all__ = [
    "EVENT_TOPICS",
    "SCHEMA_VERSIONS",
    "UPCASTERS",
    "check_record",
    "decode_recorded",
    "envelope_from_record",
    "envelope_to_record",
]

#: Every topic a session log may hold.
EVENT_TOPICS: tuple[str, ...] = (
    "input.accepted",
    "input.deduplicated",
    "input.superseded",
    "input.coalesced",
    "input.queued",
    "input.staged",
    "input.applied",
    "input.consumed",
    "input.abandoned",
    "input.state_transitioned",
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.checkpointed",
    "runtime.state_changed",
    "topology.runtime_created",
    "topology.runtime_retired",
    "topology.runtime_recycled",
    "topology.runtime_destroyed",
    "runtime.projection_emitted",
    "runtime.silent_intents_set",
)

#: The current schema version of each topic's payload (bump with an upcaster when a shape changes):
#: ``input.accepted`` 2 (Rust's key names in ``runtime_semantics``), ``run.failed`` 2 (Rust's
#: error kinds), every other topic 1.
SCHEMA_VERSIONS: dict[str, int] = {
    topic: 1 + len(EVENT_UPCASTERS.get(topic, {})) for topic in EVENT_TOPICS
}

#: The upcasters of each topic, by old schema version (see ``meerkat_runtime.events.upcast``).
UPCASTERS: dict[str, dict[int, Upcaster]] = {
    topic: dict(EVENT_UPCASTERS.get(topic, {})) for topic in EVENT_TOPICS
}


_RUNTIME_TOPICS = frozenset(EVENT_TOPICS)


def envelope_to_record(envelope: RuntimeEventEnvelope) -> tuple[str, dict[str, Any]]:
    """The (topic, payload) a store keeps for an envelope."""
    payload: dict[str, Any] = to_wire(envelope)
    return envelope.event.event_code, payload


def envelope_from_record(data: dict[str, Any], version: int) -> RuntimeEventEnvelope:
    """Rebuild an envelope from its stored payload; ``version`` becomes its ``sequence``."""
    envelope = from_wire(RuntimeEventEnvelope, data)
    object.__setattr__(envelope, "sequence", version)
    return envelope


class StoredRecord(Protocol):
    """What :func:`decode_recorded` needs of a stored event (a store's ``RecordedEvent``)."""

    @property
    def session_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


def decode_recorded(rec: StoredRecord) -> RuntimeEventEnvelope:
    """The envelope of a stored event; :class:`UndecodableEvent` (naming the session, the
    version and the log position) when it cannot be read back or is not its topic's event."""
    try:
        envelope = envelope_from_record(rec.data, rec.version)
    except InvalidInput as exc:
        raise UndecodableEvent(
            rec.session_id, rec.version, rec.position, rec.topic, str(exc)
        ) from None
    code = envelope.event.event_code
    if code != rec.topic:
        raise UndecodableEvent(
            rec.session_id, rec.version, rec.position, rec.topic,
            f"the payload is a {code!r} event",
        )  # fmt: skip
    return envelope


def check_record(topic: str, data: dict[str, Any]) -> None:
    """Refuse a stored payload that does not decode back into an envelope of ``topic``.

    The runtime's store codec calls it on every event about to be written:
    :class:`InvalidInput` names what would not read back. Topics that are not runtime
    events (a tool may register its own in the runtime's codec) are the tool's business.
    """
    if topic not in _RUNTIME_TOPICS:
        return
    envelope = from_wire(RuntimeEventEnvelope, data)
    code = envelope.event.event_code
    if code != topic:
        raise InvalidInput(f"the payload is a {code!r} event, stored under topic {topic!r}")
