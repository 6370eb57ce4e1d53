"""A private in-memory SQLite database for read models that have no database of their own.

``memory://`` stores keep their read models here (the log itself lives in
eventsourcing's POPO recorder), and so do the projections of a read-only
store, which must not write a byte to it. Transactions are serialised by one
lock, so each is also a consistent read.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import cast

from meerkat_runtime.store._base import SQLCursor, mapped_errors

__all__ = ["PrivateSQLite", "ScratchReadModels"]


class PrivateSQLite:
    """One in-memory SQLite connection and the lock that serialises its transactions."""

    unavailable_errors: tuple[type[Exception], ...] = (
        sqlite3.OperationalError,
        sqlite3.InterfaceError,
    )
    database_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A transaction on the private database: commits at the end, rolls back on error."""
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN")
            try:
                yield cursor
            except BaseException:
                self._conn.rollback()
                raise
            else:
                self._conn.commit()
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ScratchReadModels:
    """A :class:`~meerkat_runtime.store.ReadModelHost` of its own: read models kept in a
    private in-memory SQLite database (the projections of a read-only store)."""

    def __init__(self, where: str) -> None:
        self._db = PrivateSQLite()
        self._where = where

    @contextmanager
    def transaction(self) -> Iterator[SQLCursor]:
        with self._mapped("use the private read models"), self._db.transaction() as cur:
            yield cast(SQLCursor, cur)

    def read_transaction(self) -> AbstractContextManager[SQLCursor]:
        """Transactions are serialised: each is a consistent read."""
        return self.transaction()

    def schema_transaction(self) -> AbstractContextManager[SQLCursor]:
        return self.transaction()

    @staticmethod
    def table_name(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def _mapped(self, what: str) -> AbstractContextManager[None]:
        return mapped_errors(
            what,
            f"{self._where} (private copy)",
            PrivateSQLite.unavailable_errors,
            PrivateSQLite.database_errors,
            str,
        )

    def close(self) -> None:
        self._db.close()
