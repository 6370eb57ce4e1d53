"""Projections: read models kept from the event log, exactly once (``rt.ledger``, ``rt.views``,
and a host's own: :class:`HostProjection`).

A handler failure follows the projection's :class:`FailureStrategy`. An event that
cannot be read back (written by an older version, or edited by hand) is never
retried: by default it is skipped and only its session is held back, so the
ledger and the views go on for every other session; ``health`` names it and
``verify`` reports it as a mismatch.
"""

from meerkat_runtime.projections._framework import (
    FailureStrategy,
    Projection,
    ProjectionRunner,
    ProjectionSet,
    ProjectionStatus,
    SkippedEvent,
)
from meerkat_runtime.projections._host import HostProjection, ProjectedEvent
from meerkat_runtime.projections._ledger import LedgerProjection, LedgerQueries, LedgerRow
from meerkat_runtime.projections._sql import Cursor, PageRows, RowCache, ScratchSql, Sql
from meerkat_runtime.projections._verify import Mismatch, VerifyReport, verify
from meerkat_runtime.projections._views import ViewQueries, ViewRow, ViewsProjection

__all__ = [
    "Cursor",
    "FailureStrategy",
    "HostProjection",
    "LedgerProjection",
    "LedgerQueries",
    "LedgerRow",
    "Mismatch",
    "PageRows",
    "ProjectedEvent",
    "Projection",
    "ProjectionRunner",
    "ProjectionSet",
    "ProjectionStatus",
    "RowCache",
    "ScratchSql",
    "SkippedEvent",
    "Sql",
    "VerifyReport",
    "ViewQueries",
    "ViewRow",
    "ViewsProjection",
    "verify",
]
