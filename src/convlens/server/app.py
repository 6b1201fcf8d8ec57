"""The explorer's FastAPI app: the JSON API plus one static page, for one or more trained runs.

``create_app(run_dirs)`` loads every run up front and returns an ASGI app; ``convlens serve``
runs it with uvicorn. Its routes are the core API (``api``) plus those of every registered view
(``views``: the page's tabs). Bad requests become 4xx answers with a one-line ``detail`` (never a
500, never a crash), and only files inside ``static/`` (or a plugin view's own folder) are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from convlens.errors import ConvlensError
from convlens.server.runs import RunNotFound, RunStore
from convlens.server.uploads import MAX_UPLOAD_BYTES, UploadRejected
from convlens.server.views import PLUGIN_URL, STATIC_DIR, STATIC_URL

MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # one upload plus the other form fields
MAX_JSON_BYTES = 1024 * 1024  # the playground's largest grid (64 x 64 numbers) is ~100 KB
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BODY_TIMEOUT_S = 60.0  # a whole body must arrive in this time: 5 MB at 1 Mbit/s takes 40 s
# The page loads nothing from elsewhere: a browser enforcing this proves "no CDN, works offline".
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("convlens")


class _BodyTooLarge(Exception):
    """Raised into the app by the receive wrapper once a body passes its limit."""


def _host_name(value: str) -> str:
    """The host name of a ``Host`` or origin ``host[:port]``, lower case, IPv6 without brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # only "[ADDRESS]" or "[ADDRESS]:PORT"; "[::1]evil" names no host here
        end = value.find("]")
        rest = value[end + 1 :] if end != -1 else ""
        if end == -1 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return value
        return value[1:end]
    if value.count(":") == 1:
        name, port = value.rsplit(":", 1)
        return name if port.isdigit() else value
    return value


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Guard:
    """Pure ASGI middleware in front of every request:

    - ``Host`` must name this server (loopback names, or those given to ``create_app``): a page
      on another site that re-points its DNS name at 127.0.0.1 (DNS rebinding) gets 421;
    - a POST's or DELETE's ``Origin``, when sent (browsers do), must be the page's own or an
      allowed one: 403;
    - the body is counted as it arrives, chunked or not: past the limit the answer is 413, and
      no more of it is read (a declared ``Content-Length`` over it is refused before any is read);
    - a body not whole within BODY_TIMEOUT_S (one byte a second holds a worker forever) is 408;
      a client that goes away mid-body is no error of ours and is not logged as one;
    - an unexpected exception becomes a 500 answer here, so the connection stays usable;
    - every response gets the page's security headers and ``Server-Timing: app;dur=MS``.
    """

    def __init__(self, app, hosts: frozenset[str], origins: frozenset[str], any_ip: bool = False) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins
        self.any_ip = any_ip  # bound to 0.0.0.0 / ::: an IP-literal Host cannot be a rebinding

    def _host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        return name in self.hosts or (self.any_ip and _is_ip(name))

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        scheme, _, netloc = origin.partition("://")
        return scheme in ("http", "https") and bool(host) and netloc == host.strip().lower()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self._host_allowed(host):
            detail = f"Host {host[:100]!r} is not this server; open the explorer at its own address"
            return await _plain(421, detail)(scope, receive, send)
        origin = headers.get(b"origin", b"").decode("latin-1")
        changes_state = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if changes_state and b"origin" in headers and not self._origin_allowed(origin, host):
            detail = f"Origin {origin[:100]!r} may not send requests to this server"
            return await _plain(403, detail)(scope, receive, send)
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = MAX_JSON_BYTES if kind == b"application/json" else MAX_BODY_BYTES
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _plain(400, "invalid Content-Length header")(scope, receive, send)
            if int(length) > limit:
                return await _plain(413, _too_large(int(length), limit))(scope, receive, send)

        started = time.perf_counter()
        deadline = time.monotonic() + BODY_TIMEOUT_S
        received = 0
        too_large = timed_out = gone = False
        body_done = response_started = False

        async def counting_receive():
            nonlocal received, too_large, timed_out, gone, body_done
            if body_done:  # after the body only a disconnect can come: wait for it as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                timed_out = True
                raise _BodyTooLarge from None  # ends the app's read the same way
            if message["type"] == "http.disconnect":
                gone = True
            elif not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def send_with_headers(message) -> None:
            nonlocal response_started
            if (too_large or timed_out or gone) and not response_started:
                return  # the 413 / 408 below replaces whatever the app answers to a cut-off body
            if message["type"] == "http.response.start":
                response_started = True
                milliseconds = 1000 * (time.perf_counter() - started)  # request in → response out
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"server-timing", f"app;dur={milliseconds:.2f}".encode()),
                ]
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except Exception as exc:
            if response_started:
                raise
            if gone:  # the client left mid-body: nobody to answer, nothing wrong here
                return None
            if not (
                too_large or timed_out
            ):  # a bug, not a bad request: log it with its traceback, keep serving
                log.error("internal error on %s %s: %r", scope["method"], scope["path"], exc, exc_info=exc)
                detail = f"internal error: {exc.__class__.__name__}"
                return await _plain(500, detail, close=False)(scope, receive, send)
        if (too_large or timed_out) and not response_started and not gone:
            # the rest of the body stays unread: close the connection after this answer
            status, detail = (
                (408, f"request body did not arrive within {BODY_TIMEOUT_S:g} s")
                if timed_out
                else (413, _too_large(None, limit))
            )
            await _plain(status, detail, close=True)(scope, receive, send)


def _too_large(size: int | None, limit: int) -> str:
    """``size``: the declared length, or None for a body cut off while it arrived."""
    what = "JSON bodies are" if limit == MAX_JSON_BYTES else "uploads are"
    shown = MAX_UPLOAD_BYTES if limit == MAX_BODY_BYTES else limit
    amount = f"over {limit / 2**20:.1f} MB" if size is None else f"{size / 2**20:.1f} MB"
    return f"request body is {amount}; {what} limited to {shown // 2**20} MB"


def _plain(status: int, detail: str, close: bool = False) -> JSONResponse:
    headers = {"connection": "close"} if close else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one readable line."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        message = str(error.get("msg", "invalid"))
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def _plain_errors(exc: RequestValidationError) -> list[dict]:
    """FastAPI's validation problems as plain JSON: where, what and which kind, never the input
    (it may be bytes, or a ValueError in ``ctx``, which JSON cannot hold)."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid")),
            "type": str(error.get("type", "invalid")),
        }
        for error in exc.errors()
    ]


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. A path with two routes (``GET`` and ``POST
    /api/train``) would otherwise answer a PUT or OPTIONS with ``Allow: GET`` alone: Starlette
    takes the first route whose path matches. Each method is tried against the app's routes
    (included routers match as a whole, so their routes are not listed one by one)."""
    routes = request.app.router.routes
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RunNotFound)
    async def run_not_found(request: Request, exc: RunNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(UploadRejected)
    async def upload_rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ConvlensError)
    async def bad_input(request: Request, exc: ConvlensError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:  # Starlette names the first route's methods only
            headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
            return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": _validation_message(exc), "errors": _plain_errors(exc)}, status_code=422
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: log it with its traceback and keep serving.
        log.error("internal error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {exc.__class__.__name__}"}, status_code=500)


def _state_what_fastapi_cannot(app: FastAPI) -> None:
    """``/openapi.json`` with the rules no parameter declaration can carry (``deps``)."""
    from convlens.server.deps import state_image_forms

    def openapi() -> dict:
        if app.openapi_schema is None:
            state_image_forms(FastAPI.openapi(app))  # FastAPI.openapi keeps what it made
        return app.openapi_schema

    app.openapi = openapi


def create_app(
    run_dirs: list[str | Path],
    *,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    any_ip_host: bool = False,
    runs_dir: str | Path | None = None,
    max_trainings: int | None = None,
) -> FastAPI:
    """The explorer for the given run folders (or checkpoint .json files); the first is shown first.

    ``runs_dir``: where trainings started from the page are written (one new folder each), and
    whose run folders are followed too; without it the page cannot train. ``max_trainings``: how
    many may run at once (default: one per two cores, at most 2).

    Requests must name the server in ``Host``: 127.0.0.1, localhost, [::1] or one of
    ``allowed_hosts`` (host names; a port is ignored); ``any_ip_host`` also accepts any IP address
    (for a server bound to 0.0.0.0). A POST with an ``Origin`` must come from the page itself or one
    of ``allowed_origins`` (e.g. ``http://example.org:3000``); so must a DELETE."""
    from convlens import __version__
    from convlens.server import api, neurons, views
    from convlens.server.api_docs import install_api_docs
    from convlens.server.training import Trainings

    app = FastAPI(
        title="convlens explorer",
        version=__version__,
        description="See how your own CNN sees: feature maps, cell arithmetic, attributions, attacks.",
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: install_api_docs serves it
        redoc_url=None,
    )
    install_api_docs(app)
    _state_what_fastapi_cannot(app)
    app.state.runs = RunStore(run_dirs, runs_dir)
    app.state.trainings = Trainings(app.state.runs, max_trainings)
    app.router.on_shutdown.append(app.state.trainings.shut_down)  # no child outlives the server
    _install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(neurons.router)  # the neuron panel, opened from several views
    app.include_router(views.router)
    for router in views.view_routers():
        app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    for view in views.ordered_views():  # a plugin's module and markup, from its own folder only
        if view.folder != STATIC_DIR:
            app.mount(
                f"{PLUGIN_URL}/{view.name}", StaticFiles(directory=view.folder), name=f"view-{view.name}"
            )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    hosts = frozenset([*LOOPBACK_HOSTS, *(_host_name(h) for h in allowed_hosts)])
    origins = frozenset(o.strip().lower().rstrip("/") for o in allowed_origins)
    app.add_middleware(_Guard, hosts=hosts, origins=origins, any_ip=any_ip_host)
    return app
