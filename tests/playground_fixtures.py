"""The learning playground's browser fixtures, shared by test_browser_playground2d.py and
test_playground2d_defects.py (import them by name): one explorer per module with the digits run
(the server object too, to read the network a page trains), and a page opened on the tab."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def playground_server(digits_run):
    """A real explorer (uvicorn in a thread) serving the digits run; its ``app`` holds the
    playground's sessions (``app.state.playground2d``)."""
    from convlens.server.background import BackgroundServer

    server = BackgroundServer([digits_run])
    with server as url:
        server.url = url
        yield server


@pytest.fixture(scope="module")
def explorer(playground_server) -> str:
    """The URL ``open_page`` (conftest.py) opens."""
    return playground_server.url


def open_playground(open_page, path: str = "", width: int = 1280, height: int = 1000):
    """An explorer page on the Learning playground tab with its first network drawn. Chromium
    logs each 4xx answer as a console error: a refused setting's 400 is expected."""
    page = open_page(width=width, height=height, path=path, ignore=lambda text: "400" in text)
    if not path.endswith("#playground2d"):  # main.js opens the tab the hash names
        page.click('#tabs button[data-tab="playground2d"]')
    page.wait_for_selector("#pg2-test-loss[data-value]", timeout=20_000)
    return page


@pytest.fixture
def page(open_page):
    return open_playground(open_page)


def trainer_of(page, server):
    """The server's ``Trainer`` of the network ``page`` shows: its page id is read from the URL
    of one step the page asks for (the network then stands at one more epoch)."""
    with page.expect_request(lambda r: r.url.endswith("/step")) as asked:
        page.click("#pg2-step")
    page_id = asked.value.url.split("/")[-2]
    page.wait_for_selector("#pg2-play:not([data-waiting])")
    return server.app.state.playground2d.sessions[page_id].trainer
