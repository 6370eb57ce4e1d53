"""The ledger reads each input event's own data, not its envelope: that reading must find
every defect the full decode finds in what the ledger uses, so a damaged event is still
a poison event for the ledger (skipped, its session held back; see
tests/reliability/test_poison_events.py) and never folded past."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from meerkat_runtime import Runtime, UndecodableEvent
from meerkat_runtime.events.catalogue import decode_recorded
from meerkat_runtime.projections import LedgerProjection
from meerkat_runtime.projections._sql import Sql
from meerkat_runtime.store import RecordedEvent

Edit = Callable[[dict[str, Any]], None]


def _set(path: tuple[str, ...], value: Any) -> Edit:
    def edit(payload: dict[str, Any]) -> None:
        for key in path[:-1]:
            payload = payload[key]
        payload[path[-1]] = value

    return edit


def _drop(path: tuple[str, ...]) -> Edit:
    def edit(payload: dict[str, Any]) -> None:
        for key in path[:-1]:
            payload = payload[key]
        del payload[path[-1]]

    return edit


def _queued_payload(payload: dict[str, Any]) -> None:
    data = payload["event"]["data"]
    payload["event"]["data"] = {"code": "queued", "input_id": data["input_id"], "lane": "queue"}


DATA = ("event", "data")
CORRUPTIONS: dict[str, Edit] = {
    "content-null": _set((*DATA, "input", "content"), None),
    "input-type-unknown": _set((*DATA, "input", "input_type"), "telepathy"),
    "durability-unknown": _set((*DATA, "input", "header", "durability"), "forever"),
    "idempotency-key-not-text": _set((*DATA, "input", "header", "idempotency_key"), 7),
    "policy-damaged": _set((*DATA, "policy", "decision"), "?"),
    "input-id-not-a-uuid": _set((*DATA, "input_id"), "nope"),
    "code-unknown": _set((*DATA, "code"), "teleported"),
    "another-events-payload": _queued_payload,
    "another-category": _set(("event", "category"), "run_lifecycle"),
    "no-event": _drop(("event",)),
    "no-timestamp": _drop(("timestamp",)),
    "timestamp-not-a-time": _set(("timestamp",), "yesterday"),
}


@pytest.fixture(scope="module")
def accepted() -> Iterator[tuple[Runtime, RecordedEvent]]:
    with Runtime.open("memory://ledger-reading", projections=False) as rt:
        rt.create_session("s")
        rt.session("s").accept(
            {"input_type": "prompt", "content": "hello", "header": {"idempotency_key": "k"}}
        )
        [rec] = [r for r in rt.store.read_session("s") if r.topic == "input.accepted"]
        yield rt, rec


def _apply(rt: Runtime, rec: RecordedEvent) -> None:
    ledger = LedgerProjection()
    sql = Sql(rt.store)
    with sql.schema_transaction() as cur:
        ledger.create_schema(cur)
    with sql.transaction() as cur:
        ledger.apply(cur, [rec])
        ledger.clear(cur)


def test_the_ledger_reads_an_intact_event(accepted: tuple[Runtime, RecordedEvent]) -> None:
    rt, rec = accepted
    decode_recorded(rec)
    _apply(rt, rec)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_the_ledger_finds_what_the_full_decode_finds(
    accepted: tuple[Runtime, RecordedEvent], corruption: str
) -> None:
    rt, rec = accepted
    data = copy.deepcopy(rec.data)
    CORRUPTIONS[corruption](data)
    bad = replace(rec, data=data)
    with pytest.raises(UndecodableEvent):
        decode_recorded(bad)  # the corruption is one: the full decode refuses it
    with pytest.raises(UndecodableEvent) as caught:
        _apply(rt, bad)
    err = caught.value
    assert (err.session_id, err.version, err.position) == ("s", rec.version, rec.position)
