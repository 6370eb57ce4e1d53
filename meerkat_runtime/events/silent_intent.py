"""Silent intents: peer requests a session admits without a turn of their own.

A session's silent intents are session state, folded from its
``runtime.silent_intents_set`` events (``session.set_silent_intents``), so they
survive restarts; ``reset``, ``stop`` and ``destroy`` clear them (spec 14, and
the Rust machine's reset, stop and destroy transitions). A peer request whose
``intent`` is one of them is admitted with wake ``none`` (spec 6.2): it waits in
its queue until something else wakes the session, then runs with that work.
"""

from __future__ import annotations

from collections.abc import Collection

from meerkat_runtime.events.inputs import Input, PeerInput, PeerRequest

__all__ = ["matches_silent_intent"]


def matches_silent_intent(input: Input, silent_intents: Collection[str]) -> bool:
    """True when ``input`` is a peer request whose intent is one of ``silent_intents``.

    Only the request convention carries an intent: peer messages, responses and
    every other kind never match.
    """
    if not silent_intents or not isinstance(input, PeerInput):
        return False
    convention = input.convention
    return isinstance(convention, PeerRequest) and convention.intent in silent_intents
