"""``inspect`` shows a session's silent intents and the inputs waiting for a wake."""

from __future__ import annotations

from pathlib import Path

from meerkat_runtime import Runtime

from ._support import cli, cli_json

REQUEST = {
    "input_type": "peer",
    "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
    "convention": {"convention_type": "request", "request_id": "r-1", "intent": "mob.peer_added"},
    "content": "peer-b joined",
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
