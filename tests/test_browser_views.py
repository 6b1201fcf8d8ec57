"""The explorer's views are declared, not listed: every registered view is a tab, and a toy view
registered at run time from outside the package (a router plus a JS module in its own folder)
appears in the page, renders from its own route, and is gone once unregistered."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from convlens.server.views import EXPLORER_VIEWS, register_view

BUILT_IN_TABS = [  # name, title: the page's tabs in order (Segment: shown for segmentation runs only)
    ("overview", "Network"),
    ("segment", "Segment"),
    ("playground", "Convolution playground"),
    ("playground2d", "Learning playground"),
    ("attribution", "Where it looks"),
    ("attack", "Fool it"),
    ("layers", "What layers learned"),
    ("card", "Model card"),
    ("train", "Train"),
]

TOY_MODULE = """\
import { getJSON } from "/static/api.js";

// A toy view: asks its own route about the run shown and writes the answer into its section.
export default class ToyView {
  constructor({ section }) {
    this.box = section.querySelector("#toy-answer");
  }
  runChanged(state) {
    this.run = state.run;
  }
  async shown() {
    const body = await getJSON(`/api/toy/greeting?run=${encodeURIComponent(this.run.id)}`);
    this.box.textContent = body.text;
    this.box.dataset.ready = "true";
  }
}
"""


def toy_router() -> APIRouter:
    router = APIRouter(prefix="/api/toy")

    @router.get("/greeting")
    def greeting(run: str) -> dict:
        return {"text": f"hello from the toy route, run {run}"}

    return router


@pytest.fixture(scope="module")
def toy_view(tmp_path_factory):
    """A view outside the package: its module and markup in a folder of its own."""
    folder = tmp_path_factory.mktemp("toy-view")
    (folder / "toy.js").write_text(TOY_MODULE)
    (folder / "toy.html").write_text('<p id="toy-answer">waiting for the toy route</p>\n')
    (folder / "broken.js").write_text("export class NotTheDefault {}\n")
    register_view(
        "toy",
        label="Toy view",
        order=65,
        module="toy.js",
        markup="toy.html",
        folder=folder,
        router=toy_router(),
    )
    register_view("broken", label="Broken view", order=66, module="broken.js", folder=folder)
    try:
        yield folder
    finally:
        EXPLORER_VIEWS.unregister("toy")
        EXPLORER_VIEWS.unregister("broken")


@pytest.fixture(scope="module")
def explorer(digits_run, toy_view):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run]) as url:
        yield url


def _client(run_dir):
    from fastapi.testclient import TestClient

    from convlens.server import create_app

    return TestClient(create_app([run_dir], allowed_hosts=["testserver"]))


@pytest.mark.parametrize("name", EXPLORER_VIEWS.names())
def test_every_registered_view_serves_its_files(digits_run, name):
    client = _client(digits_run)
    view = next(v for v in client.get("/api/views").json() if v["name"] == name)
    for url in (view["module"], view["markup"], *view["styles"]):
        if url is not None:
            assert client.get(url).status_code == 200, url


def test_the_built_in_tabs_keep_their_names_titles_and_order(digits_run):
    listed = [v for v in _client(digits_run).get("/api/views").json() if v["name"] not in ("toy", "broken")]
    assert [(v["name"], v["label"]) for v in listed] == BUILT_IN_TABS
    assert [v["name"] for v in listed if v["uses_input"]] == ["overview", "segment", "attribution", "attack"]
    assert [v["name"] for v in listed if v["opens_without_runs"]] == ["train"]
    assert [v["name"] for v in listed if not v["needs_run"]] == ["playground", "playground2d", "train"]


def test_a_plugin_view_serves_only_its_own_folder(digits_run, toy_view):
    client = _client(digits_run)
    toy = next(v for v in client.get("/api/views").json() if v["name"] == "toy")
    assert toy["module"] == "/views/toy/toy.js" and client.get(toy["module"]).text.startswith("import")
    assert client.get("/views/toy/../app.py").status_code == 404
    assert client.get("/api/toy/greeting", params={"run": "x"}).json() == {
        "text": "hello from the toy route, run x"
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "Toy View"}, "name must be lower-case letters"),
        ({"module": "missing.js"}, "module: no file 'missing.js'"),
        ({"markup": "../outside.html"}, "markup: '../outside.html' is outside the view's folder"),
    ],
)
def test_a_bad_declaration_fails_where_it_is_made(tmp_path, options, message):
    from convlens.errors import ConvlensError

    (tmp_path / "view.js").write_text("export default class {}\n")
    declaration = {
        "name": "bad",
        "label": "Bad",
        "order": 1,
        "module": "view.js",
        "folder": tmp_path,
        **options,
    }
    with pytest.raises(ConvlensError, match=message):
        register_view(**declaration)
    assert "bad" not in EXPLORER_VIEWS


@pytest.mark.browser
def test_a_registered_view_is_a_tab_that_renders_from_its_route(open_page, digits_run, tmp_path):
    page = open_page()
    tabs = page.locator("#tabs button")
    shown = [(tabs.nth(i).get_attribute("data-tab"), tabs.nth(i).inner_text()) for i in range(tabs.count())]
    # order 65 and 66: after the view at 60
    assert shown == [*BUILT_IN_TABS[:7], ("toy", "Toy view"), ("broken", "Broken view"), *BUILT_IN_TABS[7:]]
    assert page.locator("#tab-toy").is_hidden() and page.locator("#tab-overview").is_visible()
    page.click('#tabs button[data-tab="toy"]')
    page.wait_for_selector("#toy-answer[data-ready=true]")
    run_id = page.locator("#run-select").input_value()
    assert page.locator("#toy-answer").inner_text() == f"hello from the toy route, run {run_id}"
    assert page.locator("#tab-overview").is_hidden() and page.locator("#input-panel").is_hidden()
    page.screenshot(path=tmp_path / "toy.png", full_page=True)


@pytest.mark.browser
def test_the_address_opens_a_tab(open_page):
    page = open_page(path="#card")
    assert page.locator("#tab-card").is_visible() and page.locator("#tab-overview").is_hidden()
    assert page.locator('#tabs button[data-tab="card"]').get_attribute("class") == "active"
    page = open_page(path="#no-such-view")  # an unknown name opens the first tab
    assert page.locator("#tab-overview").is_visible()


@pytest.mark.browser
def test_a_view_that_cannot_start_says_so_in_its_own_tab(open_page):
    page = open_page()
    page.click('#tabs button[data-tab="broken"]')
    assert "The Broken view view could not start: /views/broken/broken.js has no default export" in (
        page.locator("#tab-broken").inner_text()
    )
    page.click('#tabs button[data-tab="card"]')  # the others work
    page.wait_for_selector("#card-stages")
