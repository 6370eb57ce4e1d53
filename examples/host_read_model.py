"""A host's own read model: prompts per session and the last prompt's text, kept exactly once.

Run it with ``python examples/host_read_model.py [STORE_URL]`` (default: an in-memory store).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from meerkat_runtime import EchoExecutor, InputAccepted, PromptInput, Runtime
from meerkat_runtime.events.inputs import content_text
from meerkat_runtime.projections import Cursor, HostProjection, ProjectedEvent


class PromptStats(HostProjection):
    """One row per session: how many prompts it accepted and the last one's text."""

    name = "prompt_stats"  # keys the stored offset: keep it stable
    tables = ("app_prompt_stats",)  # emptied by rebuild, dropped by a new schema_version
    schema_version = 1

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table('app_prompt_stats')} ("
            "session_id TEXT PRIMARY KEY, prompts INTEGER NOT NULL, last_prompt TEXT NOT NULL)"
        )

    def handle_batch(self, cur: Cursor, events: Sequence[ProjectedEvent]) -> None:
        # One page of the log, in order; written through `cur`, in the transaction that
        # also moves this projection's offset (so a crash keeps both or neither).
        rows = []
        for e in events:
            event = e.envelope.event
            if isinstance(event, InputAccepted) and isinstance(event.input, PromptInput):
                rows.append((e.session_id, content_text(event.input.content)))
        cur.executemany(
            f"INSERT INTO {cur.table('app_prompt_stats')} AS t (session_id, prompts, last_prompt) "
            "VALUES (?, 1, ?) ON CONFLICT (session_id) DO UPDATE "
            "SET prompts = t.prompts + 1, last_prompt = excluded.last_prompt",
            rows,
        )


def prompt_stats(cur: Cursor) -> dict[str, tuple[int, str]]:
    """The read model's rows: ``{session: (prompts, last prompt)}``."""
    rows = cur.execute(f"SELECT * FROM {cur.table('app_prompt_stats')}").fetchall()
    return {r["session_id"]: (int(r["prompts"]), r["last_prompt"]) for r in rows}


def main(url: str = "memory://") -> dict[str, tuple[int, str]]:
    with Runtime.open(url, executor=EchoExecutor(), projections=[PromptStats()]) as rt:
        sent = [("chat-1", "hello"), ("chat-1", "how are you?"), ("chat-2", "hi")]
        for session_id, text in sent:
            outcome = rt.session(session_id).accept({"input_type": "prompt", "content": text})
            assert outcome.completion is not None
            outcome.completion.wait(10)  # its run's events are in the log too
        rt.projections.wait_caught_up(timeout=10)  # the read models have everything durable
        status = {s.name: s for s in rt.projections.status()}["prompt_stats"]
        print(f"prompt_stats: {status.status} at {status.position}, lag {status.lag}")
        stats = rt.projections.query(prompt_stats)
        print(stats)
        return stats


if __name__ == "__main__":
    main(*sys.argv[1:])
