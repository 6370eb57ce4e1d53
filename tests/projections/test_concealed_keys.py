"""Idempotency keys are not kept in clear in the ledger of an encrypted store (issue 13,
item 9): with ``cipher_key`` the ledger keeps HMAC-SHA256 of each key under a key
derived from the cipher key; lookups by key hash the key asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventsourcing.cryptography import AESCipher

from meerkat_runtime import EchoExecutor
from meerkat_runtime.projections import Sql

from ..waiting import WAIT
from ._support import prompt
from .conftest import Db

SECRET = "order-7731-of-alice@example.com"


def _ledger_text(db: Db, **options: Any) -> str:
    """Every column of every ledger row, as text."""
    store = db.store(**options)
    with Sql(store).transaction() as cur:
        rows = cur.execute(f"SELECT * FROM {cur.table('meerkat_ledger')}").fetchall()
    return repr(rows)


def _file_bytes(db: Db) -> bytes:
    """The SQLite database file with its WAL (what is on disk)."""
    path = Path(db.url.removeprefix("sqlite:///"))
    return b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )


def test_an_encrypted_store_keeps_only_keyed_hashes_of_idempotency_keys(db: Db) -> None:
    key = AESCipher.create_key(32)
    rt = db.runtime(executor=EchoExecutor(), cipher_key=key)
    session = rt.session("s")
    first = session.accept(prompt("hello", idempotency_key=SECRET))
    assert first.kind == "accepted" and first.completion is not None
    first.completion.wait(WAIT)
    again = session.accept(prompt("hello again", idempotency_key=SECRET))
    assert again.kind == "deduplicated"  # idempotency itself works on the clear key
    plain = session.accept(prompt("no key"))
    rt.projections.wait_caught_up(WAIT)

    row = rt.ledger.get(first.input_id)
    assert row is not None and row.idempotency_key is not None
    assert row.idempotency_key.startswith("hmac-sha256:") and SECRET not in row.idempotency_key
    assert row.input_state.idempotency_key == row.idempotency_key
    no_key = rt.ledger.get(plain.input_id)
    assert no_key is not None and no_key.idempotency_key is None
    # lookups take the key in clear
    assert [r.input_id for r in rt.ledger.list(idempotency_key=SECRET)] == [first.input_id]
    assert rt.ledger.list(idempotency_key="some-other-key") == []
    report = rt.verify()
    assert report.ok, report.mismatches
    rt.close()

    assert SECRET not in _ledger_text(db, cipher_key=key)
    if db.backend == "sqlite":  # nowhere in the file: the events are encrypted too
        assert SECRET.encode() not in _file_bytes(db)


def test_the_hash_is_keyed_by_the_cipher_key(tmp_path: Path) -> None:
    """The same key under another cipher key hashes differently: a digest cannot be
    matched against guesses without the store's key."""
    digests = []
    for n in range(2):
        url = f"memory://concealed-{n}-{tmp_path.name}"
        other = Db("memory", url)
        try:
            rt = other.runtime(cipher_key=AESCipher.create_key(32))
            out = rt.session("s").accept(prompt(idempotency_key=SECRET))
            rt.projections.wait_caught_up(WAIT)
            row = rt.ledger.get(out.input_id)
            assert row is not None
            digests.append(row.idempotency_key)
        finally:
            other.close()
    assert digests[0] != digests[1]


def test_without_encryption_the_key_is_kept_as_given(db: Db) -> None:
    rt = db.runtime()
    out = rt.session("s").accept(prompt(idempotency_key=SECRET))
    rt.projections.wait_caught_up(WAIT)
    row = rt.ledger.get(out.input_id)
    assert row is not None and row.idempotency_key == SECRET
    assert [r.input_id for r in rt.ledger.list(idempotency_key=SECRET)] == [out.input_id]
    assert rt.verify().ok
