"""Optional database drivers, imported only where they are used.

The core (SQLite and memory stores) needs no PostgreSQL driver: ``psycopg`` comes
with the ``postgres`` extra (``pip install 'meerkat-runtime[postgres]'``) and is
imported only when a ``postgresql://`` store is opened.
"""

from __future__ import annotations

from types import ModuleType

from meerkat_runtime.errors import StoreError

__all__ = ["POSTGRES_EXTRA_HINT", "require_psycopg"]

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
