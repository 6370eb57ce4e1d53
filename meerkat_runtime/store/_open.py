"""``open_store``: from a URL and options to a ready event store."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from meerkat_runtime.errors import StoreError, mask_url, split_userinfo
from meerkat_runtime.store._base import EventStore, StoreOptions
from meerkat_runtime.store._drivers import require_psycopg
from meerkat_runtime.store._mapper import EventCodec

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
    must exist; the path is percent-decoded; ``?mode=ro`` opens it read-only,
    ``?mode=rw`` refuses to create it), ``postgresql://user:pass@host:port/db``
    with optional query parameters ``schema=name`` and any libpq connection
    parameter (``sslmode``, ``sslrootcert``, ``application_name``, ...). A
    password may hold any character; percent-encode it (``%40`` for ``@``) to
    be safe, though raw ``/ @ : # ?`` are understood (the user information ends
    at the last ``@`` before the query).

    ``incarnation`` is the writer id recorded on every appended event (default:
    a fresh random id). It also identifies this process start to the leases of
    a shared store: never give two processes (or two starts) the same one. Options:

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
    * ``store_timeout`` (30 s): PostgreSQL: the longest one store call (an append,
      a read) keeps waiting for and retrying a server that is unreachable or
      refuses connections; then it raises :class:`StoreError` (for an append:
      nothing of it was written).
    * ``read_only`` (False): open an existing store for reading only: nothing is
      created or changed (SQLite opens the file read-only, so a read-only file or
      a backup copy works; PostgreSQL sessions are read-only). Appends and
      snapshots raise :class:`StoreError`. A database without the store's tables
      raises ``StoreError("... is not a meerkat-runtime store ...")``.
    * ``create_schema`` (``"auto"``): ``"auto"`` creates the tables in an empty
      database (or PostgreSQL schema) or completes those of an existing store,
      and refuses a database that holds other tables but no meerkat-runtime
      store, so a mistyped URL never adds tables to another application's
      database; ``"force"`` adds them there anyway; ``"never"`` requires an
      existing store. Creation is one transaction: a failed open leaves nothing.

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

        if parsed_options.read_only:
            raise StoreError(f"a memory:// store cannot be opened read-only ({masked})")
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
    raise StoreError(f"unsupported store URL {masked!r}: use {_SUPPORTED}").with_hint(
        "use sqlite:///path.db, postgresql://user:pass@host:port/db or memory://"
    )


def _open_sqlite(
    url: str, masked: str, codec: EventCodec, incarnation: str, options: StoreOptions
) -> EventStore:
    from meerkat_runtime.store._sqlite import SQLiteEventStore, create_database_file

    prefix = "sqlite:///"
    rest = url[len(prefix) :] if url[: len(prefix)].lower() == prefix else ""
    raw_path, _, query = rest.partition("?")
    path = unquote(raw_path)
    if not path:
        raise StoreError(
            f"bad SQLite store URL {masked!r}: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    if path == ":memory:" or "mode=memory" in query:
        raise StoreError(f"bad SQLite store URL {masked!r}: use memory:// for an in-memory store")
    mode = "rwc"
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "mode" or value not in ("ro", "rw", "rwc"):
            raise StoreError(
                f"unknown parameter {key}={value} in SQLite store URL {masked!r} "
                f"(the only one is mode=ro, rw or rwc)"
            )
        mode = value
    if mode == "ro" and not options.read_only:
        options = dataclasses.replace(options, read_only=True)
    # Absolute, so the library never reads the name as a "file:" URI.
    path = os.path.abspath(path)
    if options.read_only or options.create_schema == "never" or mode == "rw":
        if not os.path.isfile(path):
            raise StoreError(
                f"no store at {masked}: {path} does not exist"
                + ("" if os.path.isdir(os.path.dirname(path)) else " (nor does its directory)")
            )
    else:
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
            f"is a meerkat-runtime SQLite database and is readable"
            + ("" if options.read_only else " and writable")
        ) from e


# libpq parameters the URL itself or a store option sets: refused in the query.
_RESERVED_PARAMS = {
    "host": "the host goes in the URL (postgresql://user:pass@HOST:port/db)",
    "port": "the port goes in the URL (postgresql://user:pass@host:PORT/db)",
    "dbname": "the database goes in the URL (postgresql://user:pass@host:port/DB)",
    "user": "the user goes in the URL (postgresql://USER:pass@host:port/db)",
    "password": "the password goes in the URL (postgresql://user:PASS@host:port/db)",
    "connect_timeout": "use the connect_timeout store option",
    "replication": "a store needs a normal connection",
}


def _libpq_keywords(psycopg: ModuleType) -> set[str]:
    return {o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()}


def _open_postgres(
    url: str, masked: str, codec: EventCodec, incarnation: str, options: StoreOptions
) -> EventStore:
    psycopg = require_psycopg(masked)  # before _postgres, which needs it to import
    from meerkat_runtime.store._postgres import PostgresEventStore

    usage = "use postgresql://user:pass@host:port/db"
    parts = split_userinfo(url.split("://", 1)[1])
    if parts is None:
        raise StoreError(f"bad PostgreSQL store URL {masked!r}: no user; {usage}")
    raw_user, raw_password, rest = parts
    user, password = unquote(raw_user), unquote(raw_password or "")
    secrets: tuple[str, ...] = (password, raw_password or "", quote(password, safe=""))
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    hostport, tail = rest[:cut], rest[cut:]
    raw_db, _, query = (
        tail.removeprefix("/").partition("?") if tail[:1] == "/" else ("", "", tail[1:])
    )
    host, port_text = hostport, ""
    if hostport.startswith("["):  # [IPv6]:port
        host, _, after = hostport[1:].partition("]")
        port_text = after.removeprefix(":")
    elif ":" in hostport:
        host, _, port_text = hostport.rpartition(":")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise StoreError(f"bad port {port_text!r} in PostgreSQL store URL {masked!r}: {usage}")
    port = int(port_text) if port_text else 5432
    dbname = unquote(raw_db)
    if not (host and user and dbname):
        raise StoreError(f"bad PostgreSQL store URL {masked!r}: {usage}")
    schema = "public"
    params: dict[str, str] = {}
    known = _libpq_keywords(psycopg)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreError(
            f"bad query in PostgreSQL store URL {masked!r}: use ?key=value&..."
        ) from None
    for key, value in pairs:
        if key == "schema":
            if not _SCHEMA_NAME.fullmatch(value):
                raise StoreError(
                    f"bad schema name {value!r} in store URL {masked!r}: use letters, digits "
                    f"and underscores, at most 63"
                )
            schema = value
        elif key in _RESERVED_PARAMS:
            raise StoreError(
                f"parameter {key!r} not allowed in PostgreSQL store URL {masked!r}: "
                f"{_RESERVED_PARAMS[key]}"
            )
        elif key in known:
            params[key] = value
            if _SECRET_KEY.search(key):
                secrets += (value, quote(value, safe=""))
        else:
            raise StoreError(
                f"unknown parameter {key!r} in PostgreSQL store URL {masked!r}: use schema=name "
                f"or a libpq connection parameter (sslmode, sslrootcert, application_name, ...)"
            )
    scrub = _scrubber(secrets)
    try:
        return PostgresEventStore(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=dbname,
            schema=schema,
            params=params,
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


_SECRET_KEY = re.compile(r"password|secret|key", re.IGNORECASE)


def _scrubber(secrets: tuple[str, ...]) -> Callable[[str], str]:
    # Longest first, so a secret that contains another is replaced whole.
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "***")
        return text

    return scrub
