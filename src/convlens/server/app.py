"""The explorer's FastAPI app: the JSON API plus one static page, for one or more trained runs.

``create_app(run_dirs)`` loads every run up front and returns an ASGI app; ``convlens serve``
runs it with uvicorn. Bad requests become 4xx answers with a one-line ``detail`` (never a
500, never a crash), and only files inside ``static/`` are ever served.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from convlens.errors import ConvlensError
from convlens.server.runs import RunNotFound, RunStore
from convlens.server.uploads import MAX_UPLOAD_BYTES, UploadRejected

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # one upload plus the other form fields
# The page loads nothing from elsewhere: a browser enforcing this proves "no CDN, works offline".
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("convlens")


class _BodyLimit:
    """Pure ASGI middleware: refuse a request whose declared body exceeds the upload limit
    before any of it is read; add the page's security headers and the server time
    (``Server-Timing: app;dur=MS``, shown by browser dev tools) to every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            detail = (
                f"request body is {int(length) / 2**20:.1f} MB; uploads are limited to "
                f"{MAX_UPLOAD_BYTES // 2**20} MB"
                if length.isdigit()
                else "invalid Content-Length header"
            )
            status = 413 if length.isdigit() else 400
            return await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)

        started = time.perf_counter()

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                milliseconds = 1000 * (time.perf_counter() - started)  # request in → response out
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"server-timing", f"app;dur={milliseconds:.2f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one readable line."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


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

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc), "errors": exc.errors()}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: log it with its traceback and keep serving.
        log.error("internal error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {exc.__class__.__name__}"}, status_code=500)


def create_app(run_dirs: list[str | Path]) -> FastAPI:
    """The explorer for the given run folders (or checkpoint .json files); the first is shown first."""
    from convlens import __version__
    from convlens.server import api, explain, layers, playground

    app = FastAPI(
        title="convlens explorer",
        version=__version__,
        description="See how your own CNN sees: feature maps, cell arithmetic, attributions, attacks.",
    )
    app.state.runs = RunStore(run_dirs)
    _install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(explain.router)
    app.include_router(playground.router)
    app.include_router(layers.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(_BodyLimit)
    return app
