"""The messages a session actor handles, and how they travel.

Every request to a session (a host call such as ``Session.accept``, an executor's
result, a timer) is one small frozen dataclass below. The registry wraps it in a
:class:`Call` with the :class:`Reply` its sender waits on and posts it to the
session's mailbox; :class:`~meerkat_runtime.actors._session.SessionActor` dispatches
on the message's class with ``match``. So a reader, and mypy, can follow an accept
from ``Session.accept`` (``Accept``) to ``SessionActor._on_accept`` to the commit.

:class:`Mailer` is what a session actor needs of the registry to message itself and
its peers later (a retry, a run's result, a settled append): the registry implements
it and hands itself to each actor it creates, so neither module imports the other's
internals.
"""

from __future__ import annotations

import _thread
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.session import Command

if TYPE_CHECKING:
    from meerkat_runtime.actors._executor import RunResult
    from meerkat_runtime.events.session import SessionState

__all__ = [
    "Accept",
    "AcceptMany",
    "BoundaryReceipt",
    "Call",
    "CancelRun",
    "Checkpoint",
    "Execute",
    "GetCompletion",
    "LeaseLost",
    "Mailer",
    "Message",
    "Passivate",
    "Query",
    "RecoverAll",
    "Reply",
    "Retry",
    "RunDone",
    "RunTimeout",
    "Settle",
    "Touch",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- host calls


@dataclass(frozen=True, slots=True)
class Accept:
    """``Session.accept``: admit one input; answered once its events are durable.

    ``validated``: the host API decoded the input from its wire form
    (``coerce_input``), so what is decided from it reads back (see
    ``SessionActor._verified``)."""

    input: Input
    wake: bool = True
    validated: bool = False


@dataclass(frozen=True, slots=True)
class AcceptMany:
    """``Session.accept_many`` (and a session's share of ``Runtime.accept_many``);
    ``validated`` as for :class:`Accept`."""

    inputs: Sequence[Input]
    validated: bool = False


@dataclass(frozen=True, slots=True)
class Execute:
    """A lifecycle command for the decider: retire, recycle, reset, destroy, stop, recover."""

    command: Command


@dataclass(frozen=True, slots=True)
class Query:
    """A read of the session's state: ``fn(state, attached)`` runs on the actor."""

    fn: Callable[[SessionState, bool], Any]


@dataclass(frozen=True, slots=True)
class GetCompletion:
    """``Session.completion``: a handle on an input accepted earlier, or None."""

    input_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class CancelRun:
    """``Session.cancel_run``: end the run in flight (only ``run_id``, when given)."""

    reason: str
    run_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class UserInterrupt:
    """``Session.interrupt``: cancel the run in flight and report what was found."""

    reason: str


@dataclass(frozen=True, slots=True)
class BoundaryReceipt:
    """``Session.boundary_receipt``: the committed receipt of a run's checkpoint."""

    run_id: uuid.UUID
    sequence: int


@dataclass(frozen=True, slots=True)
class RecoverAll:
    """``Runtime.recover``: the cold recovery done at load, else an in-process one."""


# ---------------------------------------------------------------- from runs and timers


@dataclass(frozen=True, slots=True)
class RunDone:
    """An executor call returned (``redeliveries``: times its recording was retried)."""

    run_id: uuid.UUID
    result: RunResult
    redeliveries: int = 0


@dataclass(frozen=True, slots=True)
class RunTimeout:
    """A run's ``run_timeout`` elapsed."""

    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A run applied inputs at a checkpoint (``RunContext.checkpoint``)."""

    run_id: uuid.UUID
    absorbed: tuple[uuid.UUID, ...]
    conversation_digest: str | None
    message_count: int


@dataclass(frozen=True, slots=True)
class Retry:
    """The backoff before re-running rolled-back inputs elapsed."""


@dataclass(frozen=True, slots=True)
class Touch:
    """Wake the session so it looks again (a cancelled call's grace period ended)."""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The heartbeat found the session's lease taken by another process."""


@dataclass(frozen=True, slots=True)
class Settle:
    """A pipelined append failed: drain and answer its host (the actor may be idle)."""


@dataclass(frozen=True, slots=True)
class Passivate:
    """Stop the actor after the messages it already has (posted by the registry)."""


Message = (
    Accept
    | AcceptMany
    | Execute
    | Query
    | GetCompletion
    | CancelRun
    | UserInterrupt
    | BoundaryReceipt
    | RecoverAll
    | RunDone
    | RunTimeout
    | Checkpoint
    | Retry
    | Touch
    | LeaseLost
    | Settle
    | Passivate
)


# Serialises the first-set-wins check of every Reply (held for two assignments).
_SETTING = _thread.allocate_lock()


class Reply:
    """A one-shot answer: set once by the actor (or a commit callback), awaited by the host.

    What ``concurrent.futures.Future`` does for a call, minus its per-object
    ``Condition``: a pre-acquired lock that setting releases. A profile of the
    accept path put a fifth of its CPU into creating, waking and notifying those.
    """

    __slots__ = ("_callbacks", "_error", "_gate", "_set", "_value")

    def __init__(self) -> None:
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self._set = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Reply], None]] | None = None

    def done(self) -> bool:
        return self._set

    def set_result(self, value: Any) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with _SETTING:
            if self._set:
                return  # the first answer wins
            self._value, self._error = value, error
            self._set = True
            callbacks, self._callbacks = self._callbacks, None
        self._gate.release()
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                log.exception("reply callback %r failed", callback)

    def _wait(self, timeout: float | None) -> None:
        if not self._set:
            if not self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise TimeoutError("no reply yet")
            self._gate.release()  # let any other waiter through too

    def result(self, timeout: float | None = None) -> Any:
        """The answer, or raise the actor's exception; ``TimeoutError`` after ``timeout`` s."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def add_done_callback(self, callback: Callable[[Reply], None]) -> None:
        """Call ``callback(self)`` once set (at once if it already is)."""
        with _SETTING:
            if not self._set:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)


@dataclass(slots=True)
class Call:
    """One message to a session actor, and where to put the answer."""

    message: Message
    reply: Reply = field(default_factory=Reply)

    @property
    def kind(self) -> str:
        """The message's name, for logs."""
        return type(self.message).__name__


class Mailer(Protocol):
    """What a session actor needs of its registry: messaging sessions, and saying when
    it has handled a message."""

    def post(self, session_id: str, message: Message, admission: bool = False) -> Reply: ...

    def send(self, session_id: str, message: Message) -> Future[Any]: ...

    def tell(self, session_id: str, message: Message) -> None: ...

    def tell_if_live(self, session_id: str, message: Message) -> None: ...

    def message_done(self, session_id: str, busy: bool) -> None: ...
