"""The store's seams into eventsourcing internals (``store/_eventsourcing.py`` says why each
exists). Each test names its seam, so a release of the library that changes one fails
here, loudly, rather than somewhere deep in an append."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import eventsourcing.postgres
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from meerkat_runtime.store import EventCodec, open_store
from meerkat_runtime.store._eventsourcing import (
    raw_sqlite_connection,
    recorder_of,
    sqlite_insert_in,
)


def test_the_library_is_the_release_the_seams_were_verified_on() -> None:
    from importlib.metadata import version

    assert version("eventsourcing").startswith("9.5."), (
        "the store's seams into eventsourcing (store/_eventsourcing.py, "
        "_postgres.FencedPostgresRecorder) were verified on 9.5.x: verify them on this "
        "release, then widen this check and setup.cfg's pin"
    )


@pytest.fixture
def datastore(tmp_path: Path) -> SQLiteDatastore:
    return SQLiteDatastore(db_name=str(tmp_path / "seam.db"), originator_id_type="text")


def test_seam_1_raw_sqlite_connection_of_a_pooled_connection(datastore: SQLiteDatastore) -> None:
    with datastore.get_connection(commit=False) as conn:
        raw = raw_sqlite_connection(conn)
        assert isinstance(raw, sqlite3.Connection), "seam 1: SQLiteConnection._sqlite_conn"
        assert raw.execute("SELECT 41 + 1").fetchone()[0] == 42


def test_seam_2_sqlite_insert_inside_the_callers_transaction(datastore: SQLiteDatastore) -> None:
    recorder = SQLiteApplicationRecorder(datastore, "seam_events")
    recorder.create_table()
    stored = [StoredEvent("s", v, "t", b"{}") for v in (1, 2)]
    with datastore.transaction(commit=False) as cursor:
        ids = sqlite_insert_in(recorder, cursor, stored)
        assert len(ids) == 2 and ids[0] < ids[1], "seam 2: _insert_events returns the ids"
    # Not committed by the seam: the caller's transaction decides (here: rolled back).
    assert recorder.select_events("s") == []


def test_seam_3_postgres_recorder_builds_its_stored_event_type() -> None:
    cls = eventsourcing.postgres.PostgresApplicationRecorder
    hook = getattr(cls, "construct_pg_stored_event", None)
    assert callable(hook), "seam 3: PostgresApplicationRecorder.construct_pg_stored_event is gone"
    params = list(inspect.signature(hook).parameters)
    assert params == ["self", "originator_id", "originator_version", "topic", "state"], (
        f"seam 3: construct_pg_stored_event{params}"
    )


def test_seam_3_postgres_recorder_attributes(postgres_url: str) -> None:
    with open_store(postgres_url, codec=EventCodec()) as store:
        recorder = recorder_of(store)
        assert isinstance(getattr(recorder, "channel_name", None), str), "seam 3: channel_name"
        assert isinstance(getattr(recorder, "stored_event_type_name", None), str), (
            "seam 3: stored_event_type_name"
        )
        assert isinstance(getattr(recorder, "events_table_name", None), str), (
            "seam 3: events_table_name"
        )
