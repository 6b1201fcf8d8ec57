"""The explorer command: serve."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import err
from convlens.errors import ConvlensError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def explorer_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/"


def serve_runs(
    run_dirs: list[Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    open_browser: bool = False,
    allow_origins: list[str] | None = None,
    runs_dir: Path | None = None,
) -> None:
    """Load the runs, print the URL and serve the explorer until Ctrl-C."""
    from convlens.server import create_app
    from convlens.server.background import explorer_server, uvicorn_config

    if not 0 < port < 65536:
        raise ConvlensError(f"--port must be 1..65535, got {port}")
    origins = [check_origin(origin) for origin in allow_origins or []]
    if runs_dir is not None and runs_dir.exists() and not runs_dir.is_dir():
        raise ConvlensError(f"--runs-dir {runs_dir}: is a file, not a folder")
    wildcard = host in ("0.0.0.0", "::", "")
    # Host must name this server (DNS rebinding): loopback names, --host, and for 0.0.0.0 any IP
    application = create_app(  # loads every run now: a bad folder fails before binding
        run_dirs,
        allowed_hosts=[] if wildcard else [host],
        allowed_origins=origins,
        any_ip_host=wildcard,
        runs_dir=runs_dir,
    )
    if not is_loopback(host):
        err.print(
            f"[yellow]convlens: warning: serving on {host}, not loopback: anyone who can reach this "
            "machine can use the explorer and its models; use --host 127.0.0.1 to keep it local[/]"
        )
    sock = listening_socket(host, port)
    url = explorer_url(host, port)
    runs = ", ".join(application.state.runs.runs) or "no runs yet"
    err.print(f"[bold]convlens explorer[/] for {runs}: open [bold]{url}[/]  (Ctrl-C stops it)")
    if runs_dir is not None:
        err.print(f"trainings started on the page are written to {runs_dir}/")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    config = uvicorn_config(application)
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises it: that is the normal way to stop
    with contextlib.suppress(KeyboardInterrupt):
        explorer_server(application, config).run(sockets=[sock])
    err.print("explorer stopped")


def check_origin(origin: str) -> str:
    """An ``--allow-origin`` value: scheme://host[:port], nothing else."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ConvlensError(f"--allow-origin must look like http://host:port, got {origin!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def listening_socket(host: str, port: int):
    """Bind before serving, so a taken port or unknown host is one clear error, not a log line."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConvlensError(f"--host {host!r}: cannot use this address ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConvlensError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using it? try --port"
        ) from None
    return sock


@app.command()
def serve(
    run_dirs: list[Path] = typer.Argument(
        None,
        help="Run folders written by `convlens train` (default: the runs in --runs-dir); switch "
        "between them on the page.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; keep loopback unless you mean it."
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
    runs_dir: Path = typer.Option(
        Path("runs"),
        "--runs-dir",
        help="Folder the page's Train view writes new runs into (one subfolder each, never elsewhere); "
        "its run folders are served and followed too, also those `convlens train` writes while serving.",
    ),
    allow_origin: list[str] = typer.Option(
        None,
        "--allow-origin",
        help="Another page (scheme://host:port) that may POST (or DELETE) to the API; repeatable. "
        "By default only the explorer's own page may.",
    ),
) -> None:
    """Start the explorer: a local web page that shows how your CNN sees.

    Feature maps as you draw, cell-by-cell arithmetic, a convolution playground, Grad-CAM,
    attacks, filters and the model card.

    The Train view trains a model on a built-in data set into a new folder of --runs-dir and
    shows its curves, first-layer filters and feature maps epoch by epoch; it joins the runs
    when it finishes.

    Interactive, so no --json; the page's own JSON API is described in docs/explorer.md.

    Examples:  convlens serve runs/mnist runs/fashion --open

               convlens serve --runs-dir runs     (every run in runs/; train new ones there)
    """
    serve_runs(run_dirs or [], host, port, open_browser, allow_origin, runs_dir)
