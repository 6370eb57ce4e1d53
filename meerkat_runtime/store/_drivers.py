"""Optional database drivers, imported only where they are used.

The core (SQLite and memory stores) needs no PostgreSQL driver: ``psycopg`` comes
with the ``postgres`` extra (``pip install 'meerkat-runtime[postgres]'``) and is
imported only when a ``postgresql://`` store is opened.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from meerkat_runtime.errors import StoreError

__all__ = ["POSTGRES_EXTRA_HINT", "postgres_driver_errors", "require_psycopg"]

POSTGRES_EXTRA_HINT = "pip install 'meerkat-runtime[postgres]'"


def require_psycopg(masked_url: str) -> ModuleType:
    """The ``psycopg`` module; ``StoreError`` naming the extra when it is not installed."""
    try:
        import psycopg
    except ImportError as e:
        raise StoreError(
            f"cannot open PostgreSQL store {masked_url}: the PostgreSQL driver (psycopg) is "
            f"not installed; install the postgres extra: {POSTGRES_EXTRA_HINT} ({e})"
        ) from None
    return psycopg


def postgres_driver_errors() -> tuple[type[Exception], ...]:
    """psycopg's errors that mean the database cannot be used now (connection lost,
    refused, timed out); none when psycopg is not installed, since then no
    PostgreSQL store can be open."""
    if importlib.util.find_spec("psycopg") is None:
        return ()
    import psycopg

    return (psycopg.OperationalError, psycopg.InterfaceError)
