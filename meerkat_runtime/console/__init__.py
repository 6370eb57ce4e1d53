"""The operator web console: a read-only web page over a store (``meerkat-runtime console``).

Sessions (filtered by state, searched by id), one session's inputs with their
lifecycle history and its events, inputs found by id or idempotency key,
projections and health, and on a shared store (SQLite file or PostgreSQL) the cluster's nodes,
leases and projection owners. Pages are rendered on the server (Starlette and
Jinja2 templates; no JavaScript, no frontend build).

It never writes: the store is opened read-only (``Runtime.open(url, read_only=True)``,
as the CLI's read commands do), every route answers ``GET`` and ``HEAD`` only, and
anything else gets ``405``. It has no authentication: :func:`serve` binds to
``127.0.0.1`` unless told otherwise. Needs the ``console`` extra
(``pip install 'meerkat-runtime[console]'``).
"""

from __future__ import annotations

try:
    import jinja2 as _jinja2  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as _e:
    raise ImportError(
        f"the web console needs the console extra: pip install 'meerkat-runtime[console]' ({_e})"
    ) from _e

from meerkat_runtime.console._app import DEFAULT_HOST, DEFAULT_PORT, create_app, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve"]
