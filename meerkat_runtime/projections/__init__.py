"""Projections: read models kept from the event log, exactly once (``rt.ledger``, ``rt.views``)."""

from meerkat_runtime.projections._framework import (
    FailureStrategy,
    Projection,
    ProjectionRunner,
    ProjectionSet,
    ProjectionStatus,
    SkippedEvent,
)
from meerkat_runtime.projections._ledger import LedgerProjection, LedgerQueries, LedgerRow
from meerkat_runtime.projections._sql import Cursor, Sql
from meerkat_runtime.projections._verify import Mismatch, VerifyReport, verify
from meerkat_runtime.projections._views import ViewQueries, ViewRow, ViewsProjection

__all__ = [
    "Cursor",
    "FailureStrategy",
    "LedgerProjection",
    "LedgerQueries",
    "LedgerRow",
    "Mismatch",
    "Projection",
    "ProjectionRunner",
    "ProjectionSet",
    "ProjectionStatus",
    "SkippedEvent",
    "Sql",
    "VerifyReport",
    "ViewQueries",
    "ViewRow",
    "ViewsProjection",
    "verify",
]
