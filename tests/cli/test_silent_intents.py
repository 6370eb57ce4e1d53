"""``inspect`` shows a session's silent intents and the inputs waiting for a wake; ``health``
does not count those as a stuck queue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from meerkat_runtime import Runtime
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.health import HealthLimits, check_health

from ..waiting import WAIT
from ._support import cli, cli_json

REQUEST = {
    "input_type": "peer",
    "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
    "convention": {"convention_type": "request", "request_id": "r-1", "intent": "mob.peer_added"},
    "content": "peer-b joined",
}
PROGRESS = {
    "input_type": "peer",
    "header": {"source": {"type": "peer", "peer_id": "peer-c"}},
    "convention": {
        "convention_type": "response_progress",
        "request_id": "r-9",
        "phase": "in_progress",
    },
    "content": "",
}


def test_inspect_shows_silent_intents_and_what_waits_for_a_wake(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'silent.db'}"
    with Runtime.open(url) as rt:
        s = rt.create_session("agent")
        s.set_silent_intents(["mob.peer_added", "probe.intent"])
        waiting = s.accept(REQUEST).input_id
        rt.create_session("plain")
    info = cli_json("inspect", "agent", "--store", url)
    assert info["silent_intents"] == ["mob.peer_added", "probe.intent"]
    assert info["waiting_for_wake"] == [str(waiting)]
    assert info["queue"] == [str(waiting)]
    plain = cli_json("inspect", "plain", "--store", url)
    assert plain["silent_intents"] == [] and plain["waiting_for_wake"] == []
    table = cli("inspect", "agent", "--store", url)
    assert table.exit_code == 0
    assert "silent intents: mob.peer_added, probe.intent  waiting for a wake: 1" in table.stdout
    assert "silent intents" not in cli("inspect", "plain", "--store", url).stdout


def test_health_does_not_count_inputs_that_wait_for_a_wake_by_design(tmp_path: Path) -> None:
    """A silent request or a peer progress update (wake none) may wait for another input's
    run for hours: the store is not unhealthy for that. Before, ``health`` reported
    "an input has been queued for 3600s" for a lone progress update."""
    url = f"sqlite:///{tmp_path / 'health.db'}"
    hour_later = utc_now() + timedelta(hours=1)
    limits = HealthLimits(max_queue_age=60)
    with Runtime.open(url) as rt:
        s = rt.create_session("agent")
        s.set_silent_intents(["mob.peer_added"])
        s.accept(REQUEST)
        s.accept(PROGRESS)
        rt.projections.wait_caught_up(WAIT)
        report = check_health(rt, limits, hour_later)
        assert report.queued_inputs == 2
        assert report.oldest_queued_age == 0.0
        assert report.healthy, report.problems
        # An input that asked for a wake and still waits is what the check is for.
        rt.session("other").accept({"input_type": "prompt", "content": "hello"})
        rt.projections.wait_caught_up(WAIT)
        report = check_health(rt, limits, hour_later)
        assert report.queued_inputs == 3
        assert report.oldest_queued_age > 3000
        assert not report.healthy
