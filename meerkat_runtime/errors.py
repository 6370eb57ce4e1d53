"""The error hierarchy of meerkat-runtime.

One family, modelled on the DB-API style the ``eventsourcing`` library uses:
a host catches :class:`MeerkatRuntimeError` for everything, or one of the
specific classes below. This module imports nothing of the project, so every
layer (``events``, ``store``, ``actors``, ``projections``) can use it.

Messages never contain a store password: code that builds a message from a
store URL passes it through :func:`mask_url` first.
"""

from __future__ import annotations

import re
from typing import Self

__all__ = [
    "AcceptManyFailed",
    "AmbiguousInputId",
    "CompletionWaitError",
    "ConcurrencyConflict",
    "InvalidInput",
    "LeaseUnavailable",
    "MeerkatRuntimeError",
    "OperationLifecycleError",
    "Overloaded",
    "RuntimeControlPlaneError",
    "RuntimeStateTransitionError",
    "SessionNotFound",
    "SessionOwnedElsewhere",
    "StoreError",
    "StoreUnavailable",
    "UndecodableEvent",
    "mask_url",
    "split_userinfo",
]


class MeerkatRuntimeError(Exception):
    """Base class of every error raised by meerkat-runtime.

    ``hint`` says, in one line, what an operator can do about it (the CLI prints it
    under the error); a class sets its usual hint, a raise site a better one
    (:meth:`with_hint`).
    """

    hint: str = ""

    def with_hint(self, hint: str) -> Self:
        """This error with ``hint`` as its operator hint."""
        self.hint = hint
        return self


class InvalidInput(MeerkatRuntimeError, ValueError):
    """Malformed input: not valid wire JSON, unknown variant, missing field, wrong type.

    ``path`` names the offending field (``"header.timestamp"``, ``"appends[2].role"``),
    empty for the document itself. Nothing is written when this is raised.
    """

    hint = "see the wire format in the documentation (docs/reference/wire-format.md)"

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}" if path else message)


class StoreError(MeerkatRuntimeError):
    """The event store failed or refused: bad URL, unreachable database, schema mismatch."""

    hint = "check the --store URL and that the database is running and reachable"


class StoreUnavailable(StoreError):
    """The database cannot be used now: connection lost or refused, pool or lock timeout.

    Nothing of the failed call was done; the same call may succeed later. Each
    backend maps its driver's errors of this kind to this class (and its other
    database errors to :class:`StoreError`), so no caller needs to know the driver.
    """


class ConcurrencyConflict(StoreError):
    """An append lost an optimistic-concurrency race: nothing of it was written.

    ``session_id`` is the session, ``expected_version`` the version the writer
    folded, ``actual_version`` the version found in the store when known.

    What a host sees: a session actor that meets a conflict reloads the session
    from the store and decides the call once more, so ``accept`` or a lifecycle
    command raises this only when another writer (another process on the same
    store) appended to that session again in between. Nothing of the call was
    written and the session has been reloaded, so retrying it is safe (for
    ``accept``, with the same idempotency key it deduplicates). A subclass of
    :class:`StoreError`.
    """

    def __init__(
        self, session_id: str, expected_version: int, actual_version: int | None = None
    ) -> None:
        self.session_id = session_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        found = "unknown" if actual_version is None else str(actual_version)
        super().__init__(
            f"concurrency conflict on session {session_id!r}: expected version "
            f"{expected_version}, store has {found}"
        )


class LeaseUnavailable(StoreError):
    """A lease is held by another live owner, or an append's fence no longer holds.

    ``name`` is the lease (``session:<id>``, ``projection:<name>``); ``owner`` the
    node holding it now, or None when nobody holds it (expired or released).
    """

    def __init__(self, name: str, owner: str | None) -> None:
        self.name = name
        self.owner = owner
        holder = f"held by {owner!r}" if owner else "no longer held by this node"
        super().__init__(f"lease {name!r} is {holder}")


class UndecodableEvent(MeerkatRuntimeError):
    """A stored event cannot be read back (written by an older version, or edited by hand).

    Only its session is affected: loading that session (and any call on it) raises
    this error, naming ``session_id``, the event's ``version`` in the session, its
    ``position`` in the store-wide log (0 when unknown), its ``topic`` and the
    ``detail`` of what is wrong; other sessions, the read models and the read
    commands go on (see the projections' failure strategies). Not a
    :class:`StoreError`: retrying cannot help, the event must be repaired or removed.
    """

    hint = (
        "only this session is affected: restore the event from a backup or correct it, "
        "then run rebuild-projections"
    )

    def __init__(
        self, session_id: str, version: int, position: int, topic: str, detail: str
    ) -> None:
        self.session_id = session_id
        self.version = version
        self.position = position
        self.topic = topic
        self.detail = detail
        where = f"log position {position}, " if position else ""
        super().__init__(
            f"session {session_id!r}: event {version} ({where}topic {topic!r}) "
            f"cannot be read: {detail}"
        )


class RuntimeStateTransitionError(MeerkatRuntimeError):
    """An illegal runtime state move; nothing was changed."""

    def __init__(self, from_state: str, to_state: str) -> None:
        self.from_state = from_state
        self.to_state = to_state
        super().__init__(f"Invalid runtime state transition: {from_state} -> {to_state}")


class RuntimeControlPlaneError(MeerkatRuntimeError):
    """A control-plane operation failed (``NotFound``, ``InvalidState``, ``StoreError``, ``Internal``).

    ``kind`` is the variant name in snake_case (``not_found``, ``invalid_state``, ...).
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class CompletionWaitError(MeerkatRuntimeError, TimeoutError):
    """Waiting for an input's completion failed.

    ``kind`` is ``"timeout"``, ``"channel_closed"``, ``"attachment_replaced"`` or
    ``"authority_unavailable"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class AmbiguousInputId(MeerkatRuntimeError, LookupError):
    """An input id asked for without a session matches inputs of several sessions.

    Input ids are unique within a session only (a ledger belongs to one session, as in
    the Rust runtime); ``session_ids`` lists the sessions that hold ``input_id``: ask
    again with one of them.
    """

    def __init__(self, input_id: str, session_ids: list[str]) -> None:
        self.input_id = input_id
        self.session_ids = session_ids
        shown = ", ".join(repr(s) for s in session_ids[:5])
        more = f" and {len(session_ids) - 5} more" if len(session_ids) > 5 else ""
        super().__init__(
            f"input {input_id} is in {len(session_ids)} sessions ({shown}{more}); name the session"
        )


class Overloaded(MeerkatRuntimeError):
    """Admission refused at once because a bounded queue is full; nothing was written."""


class SessionNotFound(MeerkatRuntimeError, LookupError):
    """The session was never used: its log holds no event (the Rust crate's ``NotFound``).

    Raised by lifecycle calls and queries on such a session id; nothing is written,
    so the id stays free (a ``destroy`` of a mistyped id no longer burns it). A
    session comes into being with its first accepted input or
    :meth:`Runtime.create_session`.
    """

    hint = (
        "list sessions with `meerkat-runtime sessions`; a session exists once it has "
        "accepted an input or was created"
    )

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r} not found: it has no events")


class SessionOwnedElsewhere(MeerkatRuntimeError):
    """The session is owned by another live runtime node; ``owner`` names it."""

    def __init__(self, session_id: str, owner: str) -> None:
        self.session_id = session_id
        self.owner = owner
        super().__init__(f"session {session_id!r} is owned by node {owner!r}")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Connection-string keywords whose values are secrets (libpq's password, sslpassword,
# oauth_client_secret, scram keys), whether in a URL query or a key=value DSN.
_SECRET_PARAM = re.compile(
    r"(?P<k>\b[a-z_]*(?:password|secret|scram_client_key|scram_server_key)=)(?P<pw>[^&\s'\"]+)",
    re.IGNORECASE,
)


def split_userinfo(rest: str) -> tuple[str, str | None, str] | None:
    """Split the part of a URL after ``scheme://`` into (user, password, host part), as written.

    The user information ends at the last ``@`` before the query (the last ``@`` at
    all when the query has none before it), so a password may hold raw ``/``,
    ``@``, ``:``, ``#``, ``?`` or ``%`` as well as percent-escapes: masking errs on
    the side of hiding more. None when there is no ``@`` (no user information).
    """
    query = rest.find("?")
    at = rest.rfind("@", 0, query) if query >= 0 else -1
    if at < 0:
        at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None), rest[at + 1 :]


def mask_url(text: str) -> str:
    """Return ``text`` (a URL, or a message holding URLs) with every password replaced by ``***``.

    Each ``scheme://...`` up to the next whitespace is parsed with
    :func:`split_userinfo`; ``password=``-like connection parameters are masked too.
    """
    out: list[str] = []
    pos = 0
    for match in _SCHEME.finditer(text):
        if match.start() < pos:
            continue
        start = match.end()
        end = start
        while end < len(text) and not text[end].isspace():
            end += 1
        parts = split_userinfo(text[start:end])
        if parts is not None and parts[1] is not None:
            user, _, host = parts
            out.append(text[pos:start] + f"{user}:***@")
            pos = end - len(host)
    out.append(text[pos:])
    return _SECRET_PARAM.sub(lambda m: f"{m['k']}***", "".join(out))


class AcceptManyFailed(MeerkatRuntimeError):
    """``Runtime.accept_many`` could not make every session's inputs durable.

    Each session's share of the batch is one atomic append, so it is durable
    whole or not at all; shares of other sessions may have been written.
    ``results`` holds, in input order, the ``AcceptOutcome`` of each input whose
    session's share was written, or the exception that failed its share. Sending
    the batch again is safe for inputs with idempotency keys: the written ones
    deduplicate.
    """

    def __init__(self, results: list[object]) -> None:
        self.results = results
        failed = [r for r in results if isinstance(r, BaseException)]
        super().__init__(
            f"{len(failed)} of {len(results)} inputs were not accepted: {failed[0]}"
            if failed
            else "accept_many failed"
        )


class OperationLifecycleError(MeerkatRuntimeError):
    """A move an operation's lifecycle forbids; the operations registry did not change.

    An operation input asking for one is accepted all the same (as the Rust runtime
    admits it) and its outcome's ``operation_error`` holds this error; a
    ``wait_operations`` naming an unknown or repeated operation raises it.

    The Rust crate's ``OpsLifecycleError``: ``kind`` is ``not_found`` (an event for an
    operation the session does not know), ``already_registered`` (``started`` for one it
    knows), ``invalid_transition`` (any event for an operation that is terminal),
    ``id_mismatch`` (the event's ``id`` is not the input's ``operation_id``) or
    ``duplicate_wait`` (a wait names an operation twice). ``status`` is the
    operation's status when there is one, ``action`` the refused event's type.
    """

    hint = "read the operation's status with `meerkat-runtime operations SESSION`"

    def __init__(
        self,
        kind: str,
        operation_id: str,
        message: str,
        *,
        status: str | None = None,
        action: str | None = None,
    ) -> None:
        self.kind = kind
        self.operation_id = operation_id
        self.status = status
        self.action = action
        super().__init__(message)
