"""Session calls for operations and user interrupts, sync and asyncio.

:class:`~meerkat_runtime.Session` and :class:`~meerkat_runtime.aio.AsyncSession`
take these methods from the two mixins below (their docs: the API reference and
docs/concepts/operations.md, docs/concepts/runs.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from meerkat_runtime.actors import _messages as msg
from meerkat_runtime.actors._operations import OperationWait, OperationWatchers
from meerkat_runtime.errors import CompletionWaitError, InvalidInput, OperationLifecycleError
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.interrupt import UserInterruptOutcome
from meerkat_runtime.events.operations import CompletionBatch, OperationRecord
from meerkat_runtime.events.session import SessionState

if TYPE_CHECKING:
    from meerkat_runtime.aio import AsyncRuntime
    from meerkat_runtime.runtime import Runtime

__all__ = ["AsyncSessionOperations", "SessionOperations"]


def _wait_ids(ids: Sequence[str]) -> tuple[str, ...]:
    if isinstance(ids, str):
        raise InvalidInput("ids must be a sequence of operation ids, not one string", "ids")
    out = tuple(ids)
    seen: set[str] = set()
    for n, op_id in enumerate(out):
        if not isinstance(op_id, str):
            raise InvalidInput(f"operation id must be a string, got {op_id!r}", f"ids[{n}]")
        if op_id in seen:
            raise OperationLifecycleError(
                "duplicate_wait", op_id, f"wait_operations names operation {op_id!r} twice"
            )
        seen.add(op_id)
    return out


def _check_after(after: int) -> int:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidInput(f"after must be an int >= 0, got {after!r}", "after")
    return after


def _read_for_wait(ids: tuple[str, ...]) -> Callable[[SessionState, bool], list[Any]]:
    def read(st: SessionState, _attached: bool) -> list[Any]:
        return [st.operations.get(i) for i in ids]

    return read


def _known(
    watchers: OperationWatchers, wait: OperationWait, records: list[OperationRecord | None]
) -> None:
    """Resolve what the registry already holds as terminal; refuse unknown ids (the Rust
    ``NotFound``)."""
    for op_id, record in zip(wait.ids, records, strict=True):
        if record is None:
            watchers.forget(wait)
            raise OperationLifecycleError(
                "not_found", op_id, f"operation not found: {op_id!r} (wait_operations)"
            )
    watchers.resolve_known(wait, [r for r in records if r is not None and r.terminal])


def _timeout_error(ids: tuple[str, ...], wait: OperationWait, timeout: float | None) -> Exception:
    pending = [i for i in ids if i not in wait.done]
    return CompletionWaitError("timeout", f"operations {pending} not terminal after {timeout} s")


class SessionOperations:
    """Operations and interrupts on :class:`~meerkat_runtime.Session`."""

    __slots__ = ()

    if TYPE_CHECKING:
        id: str
        _rt: Runtime

        def _call(self, message: msg.Message, *, admission: bool = False) -> Any: ...
        def _query(self, fn: Callable[[SessionState, bool], Any]) -> Any: ...

    def operations(self) -> list[OperationRecord]:
        """Every operation the session's registry holds (running and retained terminal
        ones), in the order they started."""
        result: list[OperationRecord] = self._query(lambda st, _: st.operations.records())
        return result

    def operation(self, operation_id: str) -> OperationRecord | None:
        """One operation's record, or None when the session does not know it."""
        result: OperationRecord | None = self._query(lambda st, _: st.operations.get(operation_id))
        return result

    def operation_completions(self, after: int = 0) -> CompletionBatch:
        """The completion feed: operations that ended after completion sequence ``after``,
        in the order they ended. Read on from the batch's ``watermark``; ``gap_after``
        says what an old cursor missed."""
        cursor = _check_after(after)
        result: CompletionBatch = self._query(lambda st, _: st.operations.feed(cursor))
        return result

    def wait_operations(
        self, ids: Sequence[str], timeout: float | None = None
    ) -> list[OperationRecord]:
        """Block until every operation of ``ids`` is terminal; their records, in order.

        Unknown ids raise :class:`~meerkat_runtime.OperationLifecycleError`
        (``not_found``), a repeated one ``duplicate_wait``; a timeout raises
        :class:`~meerkat_runtime.CompletionWaitError` (``timeout``), a closing runtime
        ``channel_closed``.
        """
        wanted = _wait_ids(ids)
        if not wanted:
            return []
        watchers = self._rt._services.operations
        wait = watchers.watch(self.id, wanted)
        try:
            _known(watchers, wait, self._query(_read_for_wait(wanted)))
            try:
                return wait.future.result(timeout)
            except CompletionWaitError:
                raise
            except FutureTimeout:
                raise _timeout_error(wanted, wait, timeout) from None
        finally:
            watchers.forget(wait)

    def interrupt(self, reason: str = "user interrupt") -> UserInterruptOutcome:
        """Hard-cancel the run in flight, if any (as :meth:`cancel_run`), and say what it
        found: the public result ``interrupted`` (also for an idle session: nothing to
        cancel), ``conflict`` (retired or stopped) or ``not_found`` (never used)."""
        outcome: UserInterruptOutcome = self._call(msg.UserInterrupt(str(reason)))
        return outcome

    def interrupt_if_current(self, run_id: uuid.UUID | str, reason: str = "user interrupt") -> bool:
        """Hard-cancel run ``run_id`` only while it is the session's current run; False when
        it already ended (a stale retry never cancels a newer run)."""
        done: bool = self._call(msg.CancelRun(str(reason), parse_uuid(run_id, "run_id")))
        return done


class AsyncSessionOperations:
    """Operations and interrupts on :class:`~meerkat_runtime.aio.AsyncSession`."""

    __slots__ = ()

    if TYPE_CHECKING:
        id: str
        _art: AsyncRuntime

        async def _ask(self, message: msg.Message, *, admission: bool = False) -> Any: ...

    async def operations(self) -> list[OperationRecord]:
        """Every operation the session's registry holds (see :meth:`Session.operations`)."""
        result: list[OperationRecord] = await self._ask(
            msg.Query(lambda st, _: st.operations.records())
        )
        return result

    async def operation(self, operation_id: str) -> OperationRecord | None:
        """One operation's record, or None when the session does not know it."""
        result: OperationRecord | None = await self._ask(
            msg.Query(lambda st, _: st.operations.get(operation_id))
        )
        return result

    async def operation_completions(self, after: int = 0) -> CompletionBatch:
        """The completion feed after ``after`` (see :meth:`Session.operation_completions`)."""
        cursor = _check_after(after)
        result: CompletionBatch = await self._ask(
            msg.Query(lambda st, _: st.operations.feed(cursor))
        )
        return result

    async def wait_operations(
        self, ids: Sequence[str], timeout: float | None = None
    ) -> list[OperationRecord]:
        """Wait until every operation of ``ids`` is terminal (see
        :meth:`Session.wait_operations`); no thread is held while waiting."""
        wanted = _wait_ids(ids)
        if not wanted:
            return []
        watchers = self._art.sync._services.operations
        wait = watchers.watch(self.id, wanted)
        try:
            _known(watchers, wait, await self._ask(msg.Query(_read_for_wait(wanted))))
            fut = wait.future
            if fut.done():
                return fut.result()
            awaited = asyncio.wrap_future(fut)
            try:
                return await asyncio.wait_for(awaited, timeout)
            except CompletionWaitError:
                raise
            except TimeoutError:
                raise _timeout_error(wanted, wait, timeout) from None
        finally:
            watchers.forget(wait)

    async def interrupt(self, reason: str = "user interrupt") -> UserInterruptOutcome:
        """Hard-cancel the run in flight and say what was found (see :meth:`Session.interrupt`)."""
        outcome: UserInterruptOutcome = await self._ask(msg.UserInterrupt(str(reason)))
        return outcome

    async def interrupt_if_current(
        self, run_id: uuid.UUID | str, reason: str = "user interrupt"
    ) -> bool:
        """Hard-cancel run ``run_id`` only while it is current (see
        :meth:`Session.interrupt_if_current`)."""
        done: bool = await self._ask(msg.CancelRun(str(reason), parse_uuid(run_id, "run_id")))
        return done
