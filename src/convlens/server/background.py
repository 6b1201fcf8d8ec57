"""Run the explorer in a background thread on a free loopback port (browser tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class BackgroundServer:
    """``with BackgroundServer(run_dirs) as url:`` serves the explorer at ``url`` until the block ends."""

    def __init__(self, run_dirs: list[str | Path], host: str = "127.0.0.1") -> None:
        from convlens.server import create_app

        self.app = create_app(run_dirs)
        self.host = host
        self.server = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> str:
        import uvicorn

        sock = socket.socket()
        sock.bind((self.host, 0))  # port 0: the OS picks a free one
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the explorer did not start")
            time.sleep(0.02)
        return f"http://{self.host}:{port}/"

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
