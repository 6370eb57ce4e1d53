"""Health signals of a runtime's store, as ``meerkat-runtime health`` and the web console
report them: one definition of "healthy" for both.

Unhealthy when an input that asked for a wake has waited queued longer than
``max_queue_age`` (one admitted with wake ``none`` waits for another input's run by
design: a silent peer request, ``accept(..., wake=False)``, a peer progress update), a session's
current run has lasted longer than ``max_run_age`` (counted from when its inputs were
staged, not from the session's last event, so a stuck run that keeps receiving input
still shows), a projection is not running (``standby`` is fine: another node runs it)
or lags more than ``max_lag`` events, or a projection skipped an event. Projections the
store records but ``rt`` does not run (a host's own read models, seen from the command
line) count too, as ``standby`` at their stored offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meerkat_runtime.events.input_state import InputLifecycleState
from meerkat_runtime.events.policy import WakeMode
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.projections import LedgerRow, ProjectionStatus, SkippedEvent, ViewRow
from meerkat_runtime.runtime import Runtime

__all__ = ["HealthLimits", "HealthReport", "check_health"]


@dataclass(frozen=True, slots=True)
class HealthLimits:
    """When :func:`check_health` calls a store unhealthy."""

    max_queue_age: float = 300.0
    """Seconds an input may wait queued."""
    max_run_age: float = 600.0
    """Seconds a session's current run may last."""
    max_lag: int = 1000
    """Events a projection may lag behind the log."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The signals and, when unhealthy, the problems found (one line each)."""

    queued_inputs: int
    oldest_queued_age: float
    """Seconds the longest-waiting queued input that asked for a wake has waited (0 without
    any); inputs admitted with wake ``none`` wait for another input's run by design."""
    stuck_runs: list[str]
    """Sessions whose current run has lasted longer than ``max_run_age``."""
    projections: list[ProjectionStatus]
    skipped: list[SkippedEvent]
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems


def _all(lister: Callable[..., list[Any]], **filters: Any) -> Iterator[Any]:
    after = None
    while True:
        page = lister(limit=1000, after=after, **filters)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].position


def _asked_for_wake(row: LedgerRow) -> bool:
    policy = row.input_state.policy
    return policy is None or policy.decision.wake_mode is not WakeMode.NONE


def run_started(rt: Runtime, view: ViewRow) -> datetime:
    """When a running session's current run started: when its inputs were staged for it.

    Not the view's ``updated_at``: that moves on with every later event of the session
    (inputs queued during the run), so a stuck run that keeps receiving input would hide.
    """
    times = []
    for state in (
        InputLifecycleState.STAGED,
        InputLifecycleState.APPLIED,
        InputLifecycleState.APPLIED_PENDING_CONSUMPTION,
    ):
        for row in _all(rt.ledger.list, session_id=view.session_id, state=state.value):
            staged = [e.timestamp for e in row.history if e.to == InputLifecycleState.STAGED]
            if row.run_id == view.current_run_id and staged:
                times.append(staged[-1])
    return min(times, default=view.updated_at)


def check_health(
    rt: Runtime, limits: HealthLimits = HealthLimits(), now: datetime | None = None
) -> HealthReport:
    """Read the signals from ``rt``'s read models and projections (nothing is written)."""
    now = now or utc_now()
    queued = list(_all(rt.ledger.list, state=InputLifecycleState.QUEUED.value))
    waking = [r for r in queued if _asked_for_wake(r)]
    oldest = max(((now - r.state_since).total_seconds() for r in waking), default=0.0)
    stuck = [
        v.session_id
        for v in _all(rt.views.list, state="running")
        if (now - run_started(rt, v)).total_seconds() > limits.max_run_age
    ]
    # Read models run by other processes (a host's own) report from their stored offsets.
    others, others_skipped = rt.projections.elsewhere()
    status = rt.projections.status() + others
    skipped = rt.projections.skipped() + others_skipped
    problems = []
    if oldest > limits.max_queue_age:
        problems.append(
            f"an input has been queued for {oldest:.0f}s (> {limits.max_queue_age:.0f}s)"
        )
    if stuck:
        problems.append(
            f"{len(stuck)} session(s) running for more than {limits.max_run_age:.0f}s: "
            + ", ".join(stuck[:5])
        )
    for s in status:
        if s.status not in ("running", "standby"):  # standby: another node runs it
            problems.append(f"projection {s.name} is {s.status}: {s.error}")
        if s.lag > limits.max_lag:
            problems.append(f"projection {s.name} lags {s.lag} events (> {limits.max_lag})")
    if skipped:
        problems.append(f"{len(skipped)} projection event(s) skipped")
        # Name each bad event once (a held-back session's later events repeat it).
        for sid, first in {s.session_id: s for s in reversed(skipped)}.items():
            problems.append(
                f"projection {first.projection} skipped session {sid!r} at log position "
                f"{first.position}: {first.error}"
            )
    return HealthReport(
        queued_inputs=len(queued),
        oldest_queued_age=oldest,
        stuck_runs=stuck,
        projections=status,
        skipped=skipped,
        problems=problems,
    )
