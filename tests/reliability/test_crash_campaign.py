"""Crash campaign: SIGKILL a runtime process at random moments; nothing acknowledged is lost.

Each trial is one test: a child process (forked from a zygote, see
``_crash.py``) runs a random workload through the public API on a fresh
store, reports every acknowledged input on its stdout pipe, and is SIGKILLed
at a random moment (after a random number of acknowledgements, or a random
delay that may fall inside ``Runtime.open``). The test reopens the store,
recovers and checks: every acknowledged input is in its session's log exactly
once and in the ledger; every input in the log was presented by the child and
has its whole accept decision (``input.accepted`` then ``input.queued``, or
consumed on accept); every state is one the recovery rules allow; every
completion the child saw is still there; ``verify`` passes; executor calls
are counted per input, and none falls outside the runtime's documented
at-least-once window (no input run again after its run consumed or applied
it, none run by two calls at once). A share of the trials then reopen with
an executor and run every durable input to the end.

CI runs 50 trials on SQLite and 20 on PostgreSQL (override with
``MEERKAT_CRASH_TRIALS_SQLITE`` / ``MEERKAT_CRASH_TRIALS_POSTGRES``; the seed
with ``MEERKAT_CRASH_SEED``). ``benchmarks/soak.py`` runs thousands.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meerkat_runtime import InputAccepted, InputConsumed, Runtime
from meerkat_runtime.events.catalogue import envelope_to_record
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, open_store

from ._crash import (
    TrialRecord,
    TrialSpec,
    Zygote,
    check_trial,
    drop_trial_store,
    new_trial_url,
    zygote_process,
)

SQLITE_TRIALS = int(os.environ.get("MEERKAT_CRASH_TRIALS_SQLITE", "50"))
POSTGRES_TRIALS = int(os.environ.get("MEERKAT_CRASH_TRIALS_POSTGRES", "20"))
SEED = int(os.environ.get("MEERKAT_CRASH_SEED", "20251125"))
DRAIN_RATE = 0.15

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL"),
]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    log = tmp_path_factory.mktemp("zygote") / "zygote.log"
    with zygote_process(log) as z:
        yield z


def _trial(zygote: Zygote, backend: str, base: str, directory: Path, n: int) -> None:
    rng = random.Random(f"{SEED}-{backend}-{n}")
    url = new_trial_url(backend, base, directory, n)
    node_id = "crash-node" if backend == "postgresql" else None
    spec = TrialSpec.random(n, url, rng, node_id=node_id, drain_rate=DRAIN_RATE)
    result = check_trial(zygote.run(spec))
    assert result.ok, result.describe()
    drop_trial_store(backend, url)


@pytest.mark.parametrize("n", range(SQLITE_TRIALS))
def test_sqlite_crash_trial(zygote: Zygote, tmp_path: Path, n: int) -> None:
    _trial(zygote, "sqlite", "", tmp_path, n)


@pytest.mark.postgres
@pytest.mark.parametrize("n", range(POSTGRES_TRIALS))
def test_postgres_crash_trial(
    zygote: Zygote, postgres_server_url: str, tmp_path: Path, n: int
) -> None:
    _trial(zygote, "postgresql", postgres_server_url, tmp_path, 1000 + n)


# ---------------------------------------------------------------------- the checker itself


def _one_trial(zygote: Zygote, tmp_path: Path, n: int) -> tuple[TrialRecord, str]:
    url = new_trial_url("sqlite", "", tmp_path, n)
    spec = TrialSpec(
        trial=n, url=url, seed=n, executor="echo", threads=2, life=False, kill="acks", kill_at=15
    )
    record = zygote.run(spec)
    assert check_trial(record).ok
    return record, url


def test_the_checker_sees_a_lost_or_duplicated_acknowledgement(
    zygote: Zygote, tmp_path: Path
) -> None:
    """The campaign is not vacuous: forged acknowledgements are caught."""
    record, _ = _one_trial(zygote, tmp_path, 9001)
    accepted = [w for w in record.words("A") if w[3] == "accepted"]
    assert accepted
    never = str(uuid.uuid4())
    record.lines.append(["A", "s0", never, "accepted", "durable", "-", "-"])
    moved = accepted[0]
    other = next(s for s in ("s0", "s1", "s2") if s != moved[1])
    record.lines.append(["A", other, *moved[2:]])
    result = check_trial(record)
    assert any(never in m for m in result.lost), result.describe()
    assert any(moved[2] in m for m in result.duplicated), result.describe()


def test_the_checker_sees_a_duplicate_executor_call(zygote: Zygote, tmp_path: Path) -> None:
    """Executor calls are counted: a forged second call for a consumed input, or an
    overlapping one, is reported as a duplicate outside the window."""
    record, url = _one_trial(zygote, tmp_path, 9003)
    result = check_trial(record)
    assert result.calls > 0 and not result.duplicate_calls, result.describe()
    with Runtime.open(url) as rt:
        consumed_by = {
            str(e.event.run_id)
            for sid in rt.sessions()
            for e in rt.session(sid).events()
            if isinstance(e.event, InputConsumed)
        }
    call = next(w for w in record.words("X") if w[2] in consumed_by)
    sid, run_id, ids = call[1], call[2], call[3:]
    assert any(w[0] == "Y" and w[2] == run_id for w in record.lines)
    again = ["X", sid, str(uuid.uuid4()), *ids]
    record.lines.extend([again, ["Y", sid, again[2]]])
    at = record.lines.index(call)
    record.lines.insert(at + 1, ["X", sid, str(uuid.uuid4()), *ids])  # overlaps the first
    result = check_trial(record)
    assert any("applied or consumed" in m for m in result.duplicate_calls), result.describe()
    assert any("while an earlier call" in m for m in result.duplicate_calls), result.describe()
    assert not result.ok


def test_the_checker_sees_a_torn_accept_decision(zygote: Zygote, tmp_path: Path) -> None:
    """An ``input.accepted`` without its ``input.queued`` (a half-written decision) is caught."""
    record, url = _one_trial(zygote, tmp_path, 9002)
    with Runtime.open(url) as rt:
        events = list(rt.session("s0").events())
        accepted = next(
            e
            for e in events
            if isinstance(e.event, InputAccepted)
            and e.event.input is not None
            and e.event.input.kind == "prompt"
        )
    forged_id = uuid.uuid4()
    assert isinstance(accepted.event, InputAccepted)
    half = RuntimeEventEnvelope(
        id=uuid.uuid4(),
        timestamp=accepted.timestamp,
        runtime_id="s0",
        event=InputAccepted(
            input_id=forged_id,
            input=accepted.event.input,
            policy=accepted.event.policy,
            runtime_semantics=accepted.event.runtime_semantics,
        ),
    )
    with open_store(url, codec=event_codec()) as store:
        topic, data = envelope_to_record(half)
        store.append("s0", store.session_version("s0"), [NewEvent(topic, data)])
    record.lines.append(["P", "s0", str(forged_id)])
    result = check_trial(record)
    assert any("torn accept decision" in m for m in result.mismatches), result.describe()


def test_a_store_killed_before_its_read_models_existed_answers_at_once(tmp_path: Path) -> None:
    """Regression: a kill right after the store's tables were created (before the projections
    made theirs) left a file on which ``rt.ledger`` and ``verify`` raised "no such table"
    until the projection runners had started; read models now exist when open returns."""
    url = f"sqlite:///{tmp_path / 'early.db'}"
    open_store(url, codec=event_codec()).close()  # what the killed process got to write
    for _ in range(3):
        with Runtime.open(url) as rt:
            assert rt.ledger.list() == []
            assert rt.views.list() == []
            assert rt.verify().ok
    drop_trial_store("sqlite", url)
