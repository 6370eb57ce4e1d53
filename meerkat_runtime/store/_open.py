"""``open_store``: from a URL and options to a ready event store."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg

from meerkat_runtime.errors import StoreError, mask_url
from meerkat_runtime.store._base import EventStore, StoreOptions
from meerkat_runtime.store._codec import EventCodec

__all__ = ["open_store"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SUPPORTED = "memory://, sqlite:///relative.db, sqlite:////abs/path.db or postgresql://user:pass@host:port/db"


def open_store(
    url: str, *, codec: EventCodec, incarnation: str | None = None, **options: Any
) -> EventStore:
    """Open (creating tables if needed) the event store at ``url``.

    URLs: ``memory://`` (private, in-process; ``memory://<name>`` is shared by
    the stores of one process opened with that name), ``sqlite:///relative.db``
    and ``sqlite:////abs/path.db`` (file created with mode 0600; its directory
    must exist), ``postgresql://user:pass@host:port/db[?schema=name]``.

    ``incarnation`` is the writer id recorded on every appended event (default:
    a fresh random id). Options:

    * ``snapshot_interval`` (100): callers snapshot every N events; 0 = never.
    * ``sqlite_synchronous`` (``"full"``): ``"normal"`` survives process crashes
      but may lose the last commits on power loss.
    * ``group_commit`` (True): one writer thread commits the appends queued
      together in one transaction. False: each append is its own transaction
      on the caller's thread.
    * ``max_batch_events`` (1000): upper bound of events per group commit.
    * ``max_batch_wait`` (0.0 s): how long the writer waits for more appends
      before committing; 0 takes what is queued and never waits.
    * ``cipher_key`` (None): base64 AES key (16/24/32 bytes) to encrypt
      payloads and snapshots at rest (AES-GCM); topics, ids and versions stay clear.
      The ledger read model then keeps idempotency keys as keyed hashes only.
    * ``compress`` (False): zlib-compress payloads and snapshots.
    * ``pool_size`` (5): connections kept open (SQL backends).
    * ``lock_timeout`` (10 s): how long a writer waits for a database lock.
    * ``connect_timeout`` (5 s): how long to wait for a PostgreSQL connection.

    Raises :class:`StoreError` (password masked) for an unknown scheme or
    option, a missing directory, an unreachable database, bad credentials, or
    a database written by a newer incompatible release.
    """
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a str, got {type(url).__name__}")
    masked = mask_url(url)
    parsed_options = StoreOptions.from_kwargs(options)
    if not isinstance(codec, EventCodec):
        raise StoreError("open_store needs codec=EventCodec(...) with the topics to store")
    if incarnation is None:
        incarnation = uuid.uuid4().hex
    elif not isinstance(incarnation, str) or not incarnation:
        raise StoreError("incarnation must be a non-empty str")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""

    if scheme == "memory":
        from meerkat_runtime.store._memory import MemoryEventStore

        return MemoryEventStore(
            name=url.split("://", 1)[1],
            url=masked,
            codec=codec,
            incarnation=incarnation,
            options=parsed_options,
        )
    if scheme == "sqlite":
        return _open_sqlite(url, masked, codec, incarnation, parsed_options)
    if scheme in ("postgresql", "postgres"):
        return _open_postgres(url, masked, codec, incarnation, parsed_options)
    raise StoreError(f"unsupported store URL {masked!r}: use {_SUPPORTED}")


def _open_sqlite(
    url: str, masked: str, codec: EventCodec, incarnation: str, options: StoreOptions
) -> EventStore:
    from meerkat_runtime.store._sqlite import SQLiteEventStore, create_database_file

    prefix = "sqlite:///"
    path = url[len(prefix) :] if url[: len(prefix)].lower() == prefix else ""
    if not path:
        raise StoreError(
            f"bad SQLite store URL {masked!r}: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    if path == ":memory:" or "mode=memory" in path:
        raise StoreError(f"bad SQLite store URL {masked!r}: use memory:// for an in-memory store")
    # Absolute, so the library never reads the name as a "file:" URI.
    path = os.path.abspath(path)
    create_database_file(path, masked)
    try:
        return SQLiteEventStore(
            path=path, url=masked, codec=codec, incarnation=incarnation, options=options
        )
    except StoreError:
        raise
    except Exception as e:
        raise StoreError(
            f"cannot open SQLite store {masked}: {type(e).__name__}: {e}; check that the file "
            f"is a meerkat-runtime SQLite database and is readable and writable"
        ) from e


def _open_postgres(
    url: str, masked: str, codec: EventCodec, incarnation: str, options: StoreOptions
) -> EventStore:
    from meerkat_runtime.store._postgres import PostgresEventStore

    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as e:
        raise StoreError(f"bad PostgreSQL store URL {masked!r}: {e}") from None
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    dbname = unquote(parts.path.lstrip("/"))
    if not (parts.hostname and user and dbname):
        raise StoreError(
            f"bad PostgreSQL store URL {masked!r}: use postgresql://user:pass@host:port/db"
        )
    schema = "public"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "schema":
            raise StoreError(
                f"unknown parameter {key!r} in PostgreSQL store URL {masked!r} "
                f"(the only one is 'schema')"
            )
        if not _SCHEMA_NAME.fullmatch(value):
            raise StoreError(
                f"bad schema name {value!r} in store URL {masked!r}: use letters, digits "
                f"and underscores, at most 63"
            )
        schema = value
    secrets = (password, quote(password, safe=""), parts.password or "")
    scrub = _scrubber(secrets)
    try:
        return PostgresEventStore(
            host=parts.hostname,
            port=port,
            user=user,
            password=password,
            dbname=dbname,
            schema=schema,
            url=masked,
            codec=codec,
            incarnation=incarnation,
            options=options,
            secrets=secrets,
        )
    except StoreError as e:
        raise StoreError(scrub(str(e))) from None
    except psycopg.OperationalError as e:
        raise StoreError(
            f"cannot connect to PostgreSQL store {masked}: {' '.join(scrub(str(e)).split())}; check that "
            f"the server is running and reachable, and that the user, password and database "
            f"in the URL are right"
        ) from None
    except Exception as e:
        raise StoreError(
            f"cannot open PostgreSQL store {masked}: {type(e).__name__}: {' '.join(scrub(str(e)).split())}; "
            f"check that the user may create tables in schema {schema!r}"
        ) from None


def _scrubber(secrets: tuple[str, ...]) -> Callable[[str], str]:
    def scrub(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    return scrub
