"""A body that trickles in is cut off (408); a client that leaves mid-body is not our error.

A chunked body at one byte a second to ``/api/train`` once held its connection for good (40 at
once held 40); a client that disconnected mid-body was logged as an internal error. Driven at
the ASGI level, so the clock and the disconnect are the test's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import pytest

from convlens.server import app as server_app
from convlens.server import create_app

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/api/train",
    "raw_path": b"/api/train",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


def _call(app, messages) -> list[dict]:
    """Run one request whose body arrives as ``messages`` (None: nothing more, ever)."""
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client sends nothing more

    async def send(message):
        sent.append(message)

    # a thread of its own: once a browser test has run, Playwright's sync API leaves an event loop
    # running in the test thread, where asyncio.run refuses to start another
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(app(dict(SCOPE), receive, send), timeout=20)).result()
    return sent


@pytest.fixture(scope="module")
def app(digits_run):
    return create_app([digits_run])


def test_a_body_that_does_not_arrive_in_time_is_408(app, monkeypatch):
    monkeypatch.setattr(server_app, "BODY_TIMEOUT_S", 0.3)
    sent = _call(app, [{"type": "http.request", "body": b'{"data": ', "more_body": True}])
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"did not arrive within 0.3 s" in body
    assert (b"connection", b"close") in start["headers"]


def test_a_client_leaving_mid_body_is_not_logged_as_an_error(app, caplog):
    with caplog.at_level(logging.ERROR, logger="convlens"):
        sent = _call(
            app,
            [
                {"type": "http.request", "body": b'{"data": ', "more_body": True},
                {"type": "http.disconnect"},
            ],
        )
    assert not [m for m in sent if m["type"] == "http.response.start"]  # nobody to answer
    assert "internal error" not in caplog.text


def test_a_whole_body_in_time_is_served(app):
    sent = _call(app, [{"type": "http.request", "body": b'{"data": 5}', "more_body": False}])
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 422  # read whole and answered: the field is wrong, not the timing
