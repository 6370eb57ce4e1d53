"""Table names and the store format version recorded in every SQL database."""

from __future__ import annotations

from typing import Final

from meerkat_runtime.errors import StoreError

EVENTS_TABLE: Final = "meerkat_events"
SNAPSHOTS_TABLE: Final = "meerkat_snapshots"
SCHEMA_TABLE: Final = "meerkat_schema"
LEASES_TABLE: Final = "meerkat_leases"
NODES_TABLE: Final = "meerkat_nodes"
# A row of meerkat_schema per component; other layers (projections) may add theirs.
SCHEMA_COMPONENT: Final = "store"
# Raise when a change makes the tables unreadable for older releases.
SCHEMA_VERSION: Final = 1


def newer_schema_error(url: str, found: int) -> StoreError:
    """The error for a database written by a newer, incompatible release."""
    return StoreError(
        f"store {url} was written by a newer meerkat-runtime (schema {found}, this one reads "
        f"up to {SCHEMA_VERSION}); upgrade meerkat-runtime to open it"
    )


def not_a_store_error(url: str, why: str) -> StoreError:
    """The error for opening, without creating, a database that holds no store."""
    return StoreError(f"{url} is not a meerkat-runtime store ({why})")


def foreign_tables_error(url: str, where: str, tables: list[str]) -> StoreError:
    """The error for creating a store next to another application's tables."""
    shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
    return StoreError(
        f"{url} is not a meerkat-runtime store: {where} holds other tables ({shown}); "
        f"check the URL, or pass create_schema='force' to add meerkat-runtime's tables there"
    )
