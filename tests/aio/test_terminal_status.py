"""Terminal status with the asyncio API: the same witnesses as the sync one (the live
session answers on the loop, the log is read in the default executor)."""

from __future__ import annotations

import uuid

import pytest

from meerkat_runtime import (
    ConsumedOutcome,
    EchoExecutor,
    InputLifecycleState,
    RunResolutionClass,
    RunTerminalStatus,
    SessionNotFound,
    TerminalWitnessSource,
)
from meerkat_runtime.aio import AsyncRuntime

from ..waiting import WAIT
from ._support import prompt

pytestmark = pytest.mark.anyio

LIVE = TerminalWitnessSource.LIVE_RUNTIME
DURABLE = TerminalWitnessSource.DURABLE_STORE


async def test_live_then_durable_after_a_restart(store_url: str) -> None:
    async with AsyncRuntime.open(store_url, executor=EchoExecutor()) as rt:
        s = rt.session("chat")
        out = await s.accept(prompt("hi", idempotency_key="order-1"))
        assert out.completion is not None
        await out.completion.wait(WAIT)
        live = await s.interaction_status(out.input_id)
        # a terminal input has left the live state (issue 17): the log answers for it
        assert live is not None and live.source is DURABLE and live.terminal == ConsumedOutcome()
        assert await s.interaction_status(idempotency_key="order-1") == live
        assert await s.input_id_for_idempotency_key("order-1") == out.input_id
        assert live.resolving_run_id is not None
        run = await s.run_status(live.resolving_run_id)
        assert run.status is RunTerminalStatus.RESOLVED
        assert run.outcome is RunResolutionClass.CONSUMED
        [snapshot] = await s.stored_input_states_snapshot()
        assert snapshot.input_id == out.input_id
        assert snapshot.current_state is InputLifecycleState.CONSUMED
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("chat")
        durable = await s.interaction_status(idempotency_key="order-1")
        assert durable is not None and durable.source is DURABLE
        assert _facts(durable) == _facts(live)
        assert await s.run_status(live.resolving_run_id) == run
        assert await s.input_id_for_idempotency_key("order-1") == out.input_id
        assert rt.live_session_count() == 0
        assert await s.interaction_status(uuid.uuid4()) is None
        queued = await s.accept(prompt("later"))  # no executor: it stays queued, held live
        held = await s.interaction_status(queued.input_id)
        assert held is not None and held.source is LIVE


async def test_a_never_used_session_is_not_found(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("ghost")
        with pytest.raises(SessionNotFound):
            await s.interaction_status(uuid.uuid4())
        with pytest.raises(SessionNotFound):
            await s.run_status(uuid.uuid4())
        with pytest.raises(SessionNotFound):
            await s.input_id_for_idempotency_key("k")
        with pytest.raises(SessionNotFound):
            await s.stored_input_states_snapshot()
        assert await rt.sessions() == []


def _facts(report: object) -> dict[str, object]:
    return {f: getattr(report, f) for f in report.__dataclass_fields__}  # type: ignore[attr-defined]
