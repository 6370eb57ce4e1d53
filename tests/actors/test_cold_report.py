"""The cold recovery done when a session loads is reported by the next recover that goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from meerkat_runtime import Runtime, RuntimeState, RuntimeStateTransitionError

from ..waiting import WAIT, wait_until
from ._support import GatedExecutor, prompt


def test_a_refused_recover_keeps_the_cold_report_for_the_next_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cold.db'}"
    first = GatedExecutor()
    rt = Runtime.open(url, executor=first, close_timeout=0.1)
    s = rt.session("s")
    s.accept(prompt("interrupted"))
    first.wait_started()
    rt.close()  # the run is still in flight: the log keeps its input staged
    first.release()

    second = GatedExecutor()
    with Runtime.open(url, executor=second) as rt2:
        s2 = rt2.session("s")
        s2.state()  # first use: cold recovery re-queues the staged input, and a run starts
        second.wait_started()
        assert s2.state() is RuntimeState.RUNNING
        with pytest.raises(RuntimeStateTransitionError):
            s2.recover()
        second.release()
        wait_until(lambda: s2.state() is not RuntimeState.RUNNING, WAIT, "the run to finish")
        report = s2.recover()
        assert report.inputs_requeued == 1  # the cold recovery's, not lost to the refusal
        assert any("closed as interrupted" in d for d in report.details)
        again = s2.recover()
        assert again.inputs_requeued == 0  # reported once
