"""The console's Starlette application and its server.

Design choices, written down here because no spec covers a console:

* Read-only by construction: the app serves a runtime opened with ``read_only=True``
  (nothing is created, appended or written back to the store; the read models are
  kept up to date in memory), every route answers ``GET``/``HEAD`` only, and a
  middleware answers ``405`` to any other method before routing.
* No authentication (out of scope): :func:`serve` binds to ``127.0.0.1`` by default
  and says so at startup. On a loopback address the app accepts only loopback
  ``Host`` headers, so a web page elsewhere cannot reach it through DNS rebinding.
* No JavaScript and no external resources: pages are rendered on the server, the
  style sheet is inline, and a strict Content-Security-Policy forbids the rest.
* Lists are paged with cursors (``after``), never offsets, so a page stays correct
  while the store grows.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from meerkat_runtime import __version__
from meerkat_runtime.console import _data
from meerkat_runtime.errors import InvalidInput, MeerkatRuntimeError, mask_url
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.timefmt import format_timestamp
from meerkat_runtime.health import HealthLimits, check_health
from meerkat_runtime.runtime import Runtime

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve"]

DEFAULT_HOST = "127.0.0.1"
"""The console binds here unless told otherwise: it has no authentication."""
DEFAULT_PORT = 8765
PAGE_SIZE = 50
"""Rows per page unless ``?limit=`` says otherwise (at most ``MAX_PAGE_SIZE``)."""
MAX_PAGE_SIZE = 500
READ_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]

_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class ReadOnlyMiddleware:
    """Answer ``405`` to every method but ``GET`` and ``HEAD``, whatever the path, and add
    the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            response = PlainTextResponse(
                "405 Method Not Allowed: the console is read-only (GET and HEAD only)\n",
                status_code=405,
                headers={"allow": "GET, HEAD", **_SECURITY_HEADERS},
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in _SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------- templates


def _ts(value: datetime | None) -> str:
    return format_timestamp(value) if value is not None else "-"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = _ts
    env.filters["age"] = _age
    env.filters["part"] = lambda value: quote(str(value), safe="")
    return env


class _Pages:
    """The route handlers, bound to one runtime."""

    def __init__(self, rt: Runtime, store_label: str, limits: HealthLimits) -> None:
        self.rt = rt
        self.store_label = store_label
        self.limits = limits
        self.env = _environment()
        self.shared = rt.store.supports_leases

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(
            request=request,
            store=self.store_label,
            version=__version__,
            shared=self.shared,
            link=_link,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    async def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        elif isinstance(exc, InvalidInput):
            status, message = 400, str(exc)
        else:  # a store error: the database is unreachable or the query failed
            status, message = 503, mask_url(f"{type(exc).__name__}: {exc}")
        return self.render(request, "error.html", status=status, code=status, message=message)

    # ------------------------------------------------------------ pages

    def overview(self, request: Request) -> Response:
        return self.render(
            request,
            "overview.html",
            health=check_health(self.rt, self.limits),
            sessions_by_state=self.rt.views.count_by_state(),
        )

    def sessions(self, request: Request) -> Response:
        q = request.query_params
        state = _choice(q.get("state"), RuntimeState, "state")
        search = (q.get("q") or "").strip()
        after = _cursor(q.get("after"))
        limit = _limit(q.get("limit"))
        page = _data.sessions(self.rt, state, search, after, limit)
        base = {"state": state or "", "q": search, "limit": limit if limit != PAGE_SIZE else ""}
        return self.render(
            request,
            "sessions.html",
            page=page,
            state=state or "",
            search=search,
            states=[s.value for s in RuntimeState],
            counts=self.rt.views.count_by_state(),
            next_url=_link("/sessions", {**base, "after": page.next_after})
            if page.next_after is not None
            else None,
            first_url=_link("/sessions", base) if after is not None else None,
        )

    def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        q = request.query_params
        inputs_after = _cursor(q.get("inputs_after"))
        events_after = _cursor(q.get("events_after")) or 0
        limit = _limit(q.get("limit"))
        view = self.rt.views.get(session_id)
        if view is None and self.rt.store.session_version(session_id) == 0:
            raise HTTPException(404, f"no session {session_id!r} in this store")
        inputs = _data.session_inputs(self.rt, session_id, inputs_after, limit)
        events = _data.session_events(self.rt, session_id, events_after, limit)
        path = f"/sessions/{quote(session_id, safe='')}"
        keep = {"limit": limit if limit != PAGE_SIZE else ""}

        def at(inputs_from: int | None, events_from: int | None, anchor: str) -> str:
            """This page with the inputs and the events from those cursors."""
            query = {**keep, "inputs_after": inputs_from, "events_after": events_from or ""}
            return _link(path, query) + anchor

        more_inputs, more_events = inputs.next_after, events.next_after
        return self.render(
            request,
            "session.html",
            session_id=session_id,
            view=view,
            inputs=inputs,
            events=events,
            inputs_next=None if more_inputs is None else at(more_inputs, events_after, "#inputs"),
            inputs_first=None if inputs_after is None else at(None, events_after, "#inputs"),
            events_next=None if more_events is None else at(inputs_after, more_events, "#events"),
            events_first=at(inputs_after, None, "#events") if events_after else None,
        )

    def input(self, request: Request) -> Response:
        input_id = _data.parse_input_id(request.path_params["input_id"])
        session_id = request.query_params.get("session")
        rows = (
            [r for r in [self.rt.ledger.get(input_id, session_id)] if r is not None]
            if session_id
            else self.rt.ledger.find(input_id)
        )
        if not rows:
            where = f" in session {session_id!r}" if session_id else ""
            raise HTTPException(404, f"no input {input_id}{where} in this store")
        return self.render(request, "input.html", input_id=input_id, rows=rows)

    def find(self, request: Request) -> Response:
        query = (request.query_params.get("q") or "").strip()
        rows = _data.find_inputs(self.rt, query) if query else []
        return self.render(request, "find.html", query=query, rows=rows)

    def cluster(self, request: Request) -> Response:
        return self.render(request, "cluster.html", cluster=_data.cluster_info(self.rt))

    def favicon(self, request: Request) -> Response:
        return Response(status_code=204)


def _link(path: str, params: Mapping[str, Any] | None = None) -> str:
    """``path?query`` with the parameters that have a value."""
    kept = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    return f"{path}?{urlencode(kept)}" if kept else path


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidInput(f"must be a whole number >= 0, got {value!r:.40}", "after")
    return int(value)


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise InvalidInput(
            f"must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r:.40}", "limit"
        )
    return int(value)


def _choice(value: str | None, choices: type[StrEnum], field: str) -> str | None:
    if value is None or value == "":
        return None
    names = [c.value for c in choices]
    if value not in names:
        raise InvalidInput(f"unknown {field} {value!r:.40}; use one of: {', '.join(names)}", field)
    return value


def create_app(
    runtime: Runtime,
    *,
    allowed_hosts: list[str] | None = None,
    limits: HealthLimits | None = None,
) -> Starlette:
    """The console for ``runtime`` (open it read-only: ``Runtime.open(url, read_only=True)``).

    The caller keeps ownership of the runtime and closes it after the app is done.
    ``allowed_hosts``: the ``Host`` headers accepted (``None``: any); :func:`serve`
    passes the loopback names when it binds a loopback address. ``limits``: when
    the front page calls the runtime unhealthy (the CLI ``health`` defaults).
    """
    pages = _Pages(runtime, runtime.store.url, limits or HealthLimits())
    get = ["GET"]  # Starlette adds HEAD to every GET route
    routes = [
        Route("/", pages.overview, methods=get, name="overview"),
        Route("/sessions", pages.sessions, methods=get, name="sessions"),
        Route("/sessions/{session_id:path}", pages.session, methods=get, name="session"),
        Route("/inputs", pages.find, methods=get, name="find"),
        Route("/inputs/{input_id}", pages.input, methods=get, name="input"),
        Route("/cluster", pages.cluster, methods=get, name="cluster"),
        Route("/favicon.ico", pages.favicon, methods=get),
    ]
    middleware = [Middleware(ReadOnlyMiddleware)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: pages.error,
        InvalidInput: pages.error,
        MeerkatRuntimeError: pages.error,
    }
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``OSError`` if it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    runtime: Runtime,
    sock: socket.socket,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the console for ``runtime`` on the listening socket ``sock`` until
    interrupted (Ctrl-C or SIGTERM). ``on_ready`` gets the console's URL once it answers."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    allowed = LOOPBACK_HOSTS if is_loopback(host) else None
    app = create_app(runtime, allowed_hosts=allowed)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    if on_ready is not None:
        started = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await started(sockets)
            if server.started:
                on_ready(url)

        server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])
