"""The explorer's views (its tabs), each declared once, as TensorBoard's plugins are.

A view is a router (its JSON routes) plus an ES module for the page, and optionally an HTML
fragment (its section's markup) and style sheets; ``register_view`` puts it on
``EXPLORER_VIEWS``. ``create_app`` includes every registered view's router and serves the files
of a view that lives outside the package from that view's own folder; ``GET /api/views`` lists
them in tab order, and ``main.js`` builds the tab bar and one ``<section class="tab">`` per view
from that list and ``import()``s each module. So a new tab is a server module calling
``register_view`` and a JS module, with no edit to the page or the app.

The page's side of the contract: the module's default export is a class constructed with a
context ``{name, section, inputPanel, refresh, state}``; it may define ``registryLoaded(registry)``,
``started(state)``, ``runChanged(state)``, ``shown(state)``, ``hidden()``, and, for a view that
``uses_input``, ``inputChanged(input)``, ``update(state)`` and ``fail(error)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter

from convlens.errors import ConvlensError
from convlens.registry import Registry

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static"
PLUGIN_URL = "/views"  # a view outside the package serves its files under /views/NAME/
TASKS = ("classification", "segmentation")  # what a run's model may do (``Run.task``)
_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")  # a URL part, a CSS id part and a location.hash


@dataclass(frozen=True)
class ExplorerView:
    """One tab of the explorer: what the page shows and where its code lives."""

    name: str  # the tab's id: section#tab-NAME, button[data-tab=NAME], #NAME in the address
    label: str  # the tab's title
    order: int  # tabs are sorted by it (the built-ins are 10, 20, ...: a plugin slots in between)
    module: str  # the ES module, relative to ``folder``; its default export is the view's class
    folder: Path = STATIC_DIR  # where its files are; outside static/ they are served from here
    router: APIRouter | None = None  # its JSON routes (None: it uses routes of the core API)
    markup: str | None = None  # an HTML fragment, relative to ``folder``: the section's content
    styles: tuple[str, ...] = ()  # style sheets, relative to ``folder``
    uses_input: bool = False  # computes from the input panel's image: shown beside it, redrawn with it
    opens_without_runs: bool = False  # the tab the page opens on while no run is loaded
    needs_run: bool = True  # False: works with no run loaded, so a shared link opens it even then
    help: str = ""
    # the runs it can explain: a classification view (softmax bars, attacks) means nothing for a
    # model that answers a class per pixel; the page hides a tab whose tasks exclude the run's
    tasks: tuple[str, ...] = TASKS

    def url(self, file: str) -> str:
        """Where the page fetches one of this view's files."""
        base = STATIC_URL if self.folder == STATIC_DIR else f"{PLUGIN_URL}/{self.name}"
        return f"{base}/{file}"

    def describe(self) -> dict:
        """What ``GET /api/views`` says of this view: everything the page needs to build it."""
        return {
            "name": self.name,
            "label": self.label,
            "help": self.help,
            "order": self.order,
            "module": self.url(self.module),
            "markup": self.url(self.markup) if self.markup else None,
            "styles": [self.url(style) for style in self.styles],
            "uses_input": self.uses_input,
            "opens_without_runs": self.opens_without_runs,
            "needs_run": self.needs_run,
            "tasks": list(self.tasks),
        }


EXPLORER_VIEWS = Registry("explorer view")


def register_view(
    name: str,
    *,
    label: str,
    order: int,
    module: str,
    folder: str | Path = STATIC_DIR,
    router: APIRouter | None = None,
    markup: str | None = None,
    styles: tuple[str, ...] = (),
    uses_input: bool = False,
    opens_without_runs: bool = False,
    needs_run: bool = True,
    help: str = "",
    tasks: tuple[str, ...] = TASKS,
) -> ExplorerView:
    """Declare a view; ``create_app`` (called after this) includes its router and serves its files.

    Every file must exist now: a typo fails here, not as a blank tab in someone's browser.
    ``tasks``: the kinds of run the view explains (``TASKS``); on another run its tab is hidden.
    """
    unknown = [task for task in tasks if task not in TASKS]
    if not tasks or unknown:
        raise ConvlensError(
            f"tasks must name some of {', '.join(TASKS)}, got {list(tasks)!r}", parameter="tasks"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConvlensError(
            f"name must be lower-case letters, digits and -, starting with a letter, got {name!r}",
            parameter="name",
        )
    folder = Path(folder).resolve()
    files = [("module", module), ("markup", markup), *(("styles", style) for style in styles)]
    for parameter, file in files:
        if file is None:
            continue
        if not (folder / file).resolve().is_relative_to(folder):
            raise ConvlensError(
                f"{parameter}: {file!r} is outside the view's folder {folder}", parameter=parameter
            )
        if not (folder / file).is_file():
            raise ConvlensError(f"{parameter}: no file {file!r} in {folder}", parameter=parameter)
    view = ExplorerView(
        name=name,
        label=label,
        order=order,
        module=module,
        folder=folder,
        router=router,
        markup=markup,
        styles=tuple(styles),
        uses_input=uses_input,
        opens_without_runs=opens_without_runs,
        needs_run=needs_run,
        help=help,
        tasks=tuple(tasks),
    )
    EXPLORER_VIEWS.register(name, view, label=label, help=help or label)
    return view


def ordered_views() -> list[ExplorerView]:
    """Every registered view in tab order (``order``, then registration)."""
    return sorted((entry.function for entry in EXPLORER_VIEWS), key=lambda view: view.order)


def view_routers() -> list[APIRouter]:
    """Each view's router once (several views may share one: arithmetic, attribution and attack)."""
    routers: list[APIRouter] = []
    for view in ordered_views():
        if view.router is not None and all(view.router is not known for known in routers):
            routers.append(view.router)
    return routers


router = APIRouter(prefix="/api")


@router.get("/views", summary="The explorer's tabs: name, title, order, module, markup, styles")
def list_views() -> list[dict]:
    """Every registered view in tab order; the page builds its tab bar and sections from this."""
    return [view.describe() for view in ordered_views()]


def _register_built_in_views() -> None:
    """The explorer's own tabs, in their order; a plugin calls ``register_view`` the same way."""
    from convlens.server import explain, layers, network, playground, playground2d, segmentation, train_api

    register_view(
        "overview",
        label="Network",
        order=10,
        module="overview.js",
        markup="views/overview.html",
        router=network.router,
        uses_input=True,
        help="every stage's feature maps of one image, and any cell's arithmetic",
    )
    register_view(
        "segment",
        label="Segment",
        order=15,
        module="segment.js",
        markup="views/segment.html",
        styles=("segment.css",),
        router=segmentation.router,
        uses_input=True,
        tasks=("segmentation",),
        help="a class per pixel: the mask, each class's probability map, why one pixel got its class",
    )
    register_view(
        "playground",
        label="Convolution playground",
        order=20,
        module="playground.js",
        markup="views/playground.html",
        router=playground.router,
        needs_run=False,
        help="one kernel sliding over a small grid, step by step",
    )
    register_view(
        "playground2d",
        label="Learning playground",
        order=30,
        module="playground2d.js",
        markup="views/playground2d.html",
        styles=("playground2d.css",),
        router=playground2d.router,
        needs_run=False,
        help="a small dense network learning a 2-D data set, live",
    )
    register_view(
        "attribution",
        label="Where it looks",
        order=40,
        module="attribution.js",
        markup="views/attribution.html",
        router=explain.router,
        uses_input=True,
        help="attribution maps of every registered method",
        tasks=("classification",),
    )
    register_view(
        "attack",
        label="Fool it",
        order=50,
        module="attack.js",
        markup="views/attack.html",
        router=explain.router,
        uses_input=True,
        help="an adversarial attack with an ε slider",
        tasks=("classification",),
    )
    register_view(
        "layers",
        label="What layers learned",
        order=60,
        module="layers.js",
        markup="views/layers.html",
        router=layers.router,
        help="kernels, feature visualization and top images per stage",
    )
    register_view(
        "card",
        label="Model card",
        order=70,
        module="card.js",
        markup="views/card.html",
        help="stages, training curves and test metrics of the run",
    )
    register_view(
        "train",
        label="Train",
        order=80,
        module="train.js",
        markup="views/train.html",
        styles=("train.css",),
        router=train_api.router,
        opens_without_runs=True,
        needs_run=False,
        help="train a model from the page and watch any run learn",
    )


_register_built_in_views()
