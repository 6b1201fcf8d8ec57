"""Run the explorer in a background thread on a free loopback port (browser tests, benchmarks),
and the uvicorn settings ``convlens serve`` shares with it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
HEADER_TIMEOUT_S = 10.0  # a connection that has not sent a whole request head by then is closed
MAX_HEADER_BYTES = 64 * 1024  # h11: a request head larger than this is a 400


def header_timeout_protocol():
    """uvicorn's h11 protocol, plus a deadline for the request head: a client that opens a
    connection (or finishes a request) and then sends a partial head, or nothing, is cut off
    after ``HEADER_TIMEOUT_S`` instead of holding the socket forever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _head_deadline = None

        def _arm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            self._head_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timed_out)

        def _head_timed_out(self) -> None:
            waiting_for_head = self.conn.their_state is h11.IDLE and (
                self.cycle is None or self.cycle.response_complete
            )
            if waiting_for_head and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def connection_lost(self, exc) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_config(app, **options):
    """The explorer's uvicorn settings: no access log, short keep-alive, bounded request heads."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        http=header_timeout_protocol(),
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )


def explorer_server(app, config):
    """A uvicorn server that, when told to stop (Ctrl-C), first ends the explorer's event streams
    and asks its trainings to stop: an open stream would keep a graceful shutdown waiting."""
    import uvicorn

    class ExplorerServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.trainings.close()
            super().handle_exit(sig, frame)

    return ExplorerServer(config)


class BackgroundServer:
    """``with BackgroundServer(run_dirs) as url:`` serves the explorer at ``url`` until the block ends."""

    def __init__(self, run_dirs: list[str | Path], host: str = "127.0.0.1", **app_options) -> None:
        from convlens.server import create_app

        self.app = create_app(run_dirs, **app_options)
        self.host = host
        self.server = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> str:
        sock = socket.socket()
        sock.bind((self.host, 0))  # port 0: the OS picks a free one
        port = sock.getsockname()[1]
        config = uvicorn_config(self.app)
        self.server = explorer_server(self.app, config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the explorer did not start")
            time.sleep(0.02)
        return f"http://{self.host}:{port}/"

    def __exit__(self, *exc_info) -> None:
        self.app.state.trainings.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
