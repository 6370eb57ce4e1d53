"""Silent intents, accepting without wake and a pluggable policy through the asyncio API,
on memory://, SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meerkat_runtime import (
    AdmissionPlan,
    Completed,
    DefaultPolicyTable,
    EchoExecutor,
    Input,
    InputKind,
    InputLifecycleState,
    PostAdmissionSignal,
    RuntimeControlPlaneError,
    WakeMode,
)
from meerkat_runtime.aio import AsyncRuntime, AsyncSession

from ..waiting import WAIT
from ._support import prompt

pytestmark = pytest.mark.anyio
L = InputLifecycleState
SILENT = ["mob.peer_added", "probe.intent"]


def peer_request(intent: str) -> dict[str, Any]:
    return {
        "input_type": "peer",
        "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
        "convention": {"convention_type": "request", "request_id": "req-1", "intent": intent},
        "content": "hi",
    }


class QuietPrompts(DefaultPolicyTable):
    version = 7

    def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
        plan = super().resolve(input, runtime_idle, **facts)
        if input.kind is not InputKind.PROMPT:
            return plan
        quiet = replace(plan.decision, wake_mode=WakeMode.NONE)
        return replace(plan, decision=quiet, signal=PostAdmissionSignal.NONE)


async def phase_of(s: AsyncSession, input_id: Any) -> InputLifecycleState:
    st = await s.input_state(input_id)
    assert st is not None
    return st.current_state


async def test_silent_intents_and_reset(store_url: str) -> None:
    async with AsyncRuntime.open(store_url, executor=EchoExecutor()) as rt:
        s = await rt.create_session("s-1")
        await s.set_silent_intents(SILENT)
        assert await s.silent_intents() == frozenset(SILENT)
        silent = await s.accept(peer_request("mob.peer_added"))
        assert await phase_of(s, silent.input_id) is L.QUEUED
        loud = await s.accept(prompt("wake"))
        assert loud.completion is not None and silent.completion is not None
        assert isinstance(await loud.completion.wait(WAIT), Completed)
        assert isinstance(await silent.completion.wait(WAIT), Completed)
        await s.reset()
        assert await s.silent_intents() == frozenset()
        await s.destroy()
        with pytest.raises(RuntimeControlPlaneError):
            await s.set_silent_intents(SILENT)
    async with AsyncRuntime.open(store_url) as rt2:
        assert await rt2.session("s-1").silent_intents() == frozenset()


async def test_accept_without_wake_and_a_runtime_policy(store_url: str) -> None:
    async with AsyncRuntime.open(store_url, executor=EchoExecutor(), policy=QuietPrompts()) as rt:
        s = rt.session("s-1")
        quiet = await s.accept(prompt("by policy"))
        st = await s.input_state(quiet.input_id)
        assert st is not None and st.policy is not None
        assert (st.policy.version, st.policy.decision.wake_mode) == (7, WakeMode.NONE)
        assert await phase_of(s, quiet.input_id) is L.QUEUED
        request = await s.accept(peer_request("x"), wake=False)
        rst = await s.input_state(request.input_id)
        assert rst is not None and rst.policy is not None
        assert rst.policy.decision.wake_mode is WakeMode.NONE
        assert await phase_of(s, request.input_id) is L.QUEUED
        loud = await s.accept(peer_request("y"))  # wakes: all three run
        for out in (quiet, request, loud):
            assert out.completion is not None
            assert isinstance(await out.completion.wait(WAIT), Completed)
