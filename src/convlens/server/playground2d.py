"""The learning playground's endpoints: start a small network on 2-D points, stream it while it
trains (server-sent events), step it, stop it, set one weight or bias by hand. All training is
``convlens.playground2d``; the request bodies are in ``playground2d_requests``.

One training per page: the page names itself with a random ``page`` id, and starting again
(new settings, reset) or opening a second stream replaces what that page had. At most
``MAX_RUNNING`` streams train at once (the next one gets 429), all on one worker thread with
one PyTorch thread, and each stream sends at most ``UPDATES_PER_SECOND`` updates: the whole
playground never takes more than one core. A stream ends when its page goes away (the next
write fails), after ``MAX_STREAM_SECONDS``, when the server stops, or when replaced.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count

import torch
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from convlens.playground2d import (
    ACTIVATIONS,
    DATASETS,
    FEATURES,
    MAX_LAYERS,
    MAX_NEURONS,
    PLANE,
    Snapshot,
    Trainer,
)
from convlens.playground2d.config import REGULARIZATIONS
from convlens.playground2d.data import MAX_NOISE
from convlens.playground2d.features import feature_maps
from convlens.playground2d.trainer import NEURON_GRID
from convlens.server.deps import ERRORS, POST_ERRORS, ErrorDetail
from convlens.server.encode import floats, packed
from convlens.server.playground2d_requests import DEFAULTS, BiasEdit, StartRequest, WeightEdit
from convlens.server.streams import PAGE_HELP, PAGE_SCHEMA, TooManyTrainings, page_id, sse

router = APIRouter(prefix="/api/playground2d", responses=ERRORS)

MAX_RUNNING = 4  # streams training at once, over all pages
MAX_SESSIONS = 32  # networks kept (paused ones too); the least recently used idle one goes first
UPDATES_PER_SECOND = 20  # per stream: smooth to the eye, and a cap on the work per page
SLICE_SECONDS = 0.03  # training between two updates (at least one epoch)
EPOCHS_PER_UPDATE = 5  # ... and at most this many, so the picture moves at a pace one can follow
MAX_STREAM_SECONDS = 600  # a forgotten tab stops by itself; play starts a new stream

# Every playground computation runs here: one thread, one PyTorch thread (tiny tensors gain
# nothing from more, and other requests keep the rest of the machine).
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convlens-playground2d",
                             initializer=torch.set_num_threads, initargs=(1,))  # fmt: skip


@dataclass
class _Session:
    trainer: Trainer
    stream: int = 0  # the stream allowed to train it now; 0: paused
    used: float = field(default_factory=time.monotonic)


class Sessions:
    """Each page's network, and which stream (if any) trains it."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.lock = threading.Lock()
        self.stream_ids = count(1)

    def running(self) -> int:
        return sum(1 for session in self.sessions.values() if session.stream)

    def put(self, page: str, trainer: Trainer) -> None:
        """``page``'s new network; its old one (and the stream training it) is gone."""
        with self.lock:
            self.sessions[page] = _Session(trainer)
            idle = sorted((s.used, p) for p, s in self.sessions.items() if not s.stream and p != page)
            for _, oldest in idle[: max(0, len(self.sessions) - MAX_SESSIONS)]:
                del self.sessions[oldest]

    def get(self, page: str) -> _Session:
        with self.lock:
            session = self.sessions.get(page)
            if session is None:
                raise HTTPException(404, "this page has no playground network: start one first")
            session.used = time.monotonic()
            return session

    def start_stream(self, page: str) -> tuple[_Session, int]:
        """A new stream for ``page`` (its previous stream stops); 429 beyond ``MAX_RUNNING``."""
        session = self.get(page)
        with self.lock:
            if not session.stream and self.running() >= MAX_RUNNING:
                raise TooManyTrainings(
                    f"{MAX_RUNNING} playground trainings are running already (the most at once); "
                    "pause one in another tab or try again later"
                )
            session.stream = next(self.stream_ids)
            return session, session.stream

    def owns(self, page: str, session: _Session, stream: int) -> bool:
        """Whether ``stream`` may still train ``page``: not replaced, not paused, not deleted."""
        return self.sessions.get(page) is session and session.stream == stream

    def end_stream(self, session: _Session, stream: int) -> None:
        with self.lock:
            if session.stream == stream:
                session.stream = 0

    def remove(self, page: str) -> None:
        with self.lock:
            session = self.sessions.pop(page, None)
            if session is not None:
                session.stream = 0


_SETUP_LOCK = threading.Lock()


def sessions_of(request: Request) -> Sessions:
    """The app's sessions, made on first use (create_app stays unaware of the playground)."""
    with _SETUP_LOCK:
        if not hasattr(request.app.state, "playground2d"):
            request.app.state.playground2d = Sessions()
    return request.app.state.playground2d


def snapshot_json(snapshot: Snapshot, activation: str) -> dict:
    """A snapshot for the page: maps as packed float32 with the hidden neurons' colour limits
    (``neuron_limits[layer][neuron]``; the output is a probability, or a regression's predicted
    value), weights as plain lists."""
    from convlens.views.maps import neuron_limits

    return {
        "task": snapshot.task,
        "epoch": snapshot.epoch,
        "train_loss": snapshot.train_loss,
        "test_loss": snapshot.test_loss,
        "train_accuracy": snapshot.train_accuracy,
        "test_accuracy": snapshot.test_accuracy,
        "layers": [packed(layer) for layer in snapshot.neurons],
        "neuron_limits": [
            [neuron_limits(activation, plane) for plane in layer] for layer in snapshot.neurons[:-1]
        ],
        "boundary": packed(snapshot.boundary),
        "weights": [floats(weights) for weights in snapshot.weights],
        "biases": [floats(biases) for biases in snapshot.biases],
    }


def _start_json(trainer: Trainer) -> dict:
    from convlens.views.maps import map_limits

    points = trainer.points
    features = feature_maps(tuple(FEATURES), NEURON_GRID)  # (features, G, G)

    # a class as 0 or 1; a regression's target to 4 decimals, as the coordinates
    target = int if trainer.classifies else (lambda value: round(value, 4))

    def listed(coordinates: torch.Tensor, labels: torch.Tensor) -> list:
        return [
            [round(x1, 4), round(x2, 4), target(label)]
            for (x1, x2), label in zip(coordinates.tolist(), labels.tolist(), strict=True)
        ]

    return {
        "config": trainer.config.to_json(),
        "init_seed": trainer.init_seed,
        "plane": PLANE,
        "feature_maps": packed(features),  # all, chosen or not
        "feature_limits": [map_limits(plane) for plane in features],
        "points": {
            "train": listed(points.train_points, points.train_labels),
            "test": listed(points.test_points, points.test_labels),
        },
        "snapshot": snapshot_json(trainer.snapshot(), trainer.config.activation),
    }


async def _on_worker(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_WORKER, function, *args)


@router.get("", summary="What the learning playground offers: data sets, features, bounds, defaults")
def options() -> dict:
    return {
        "datasets": {name: dataset.help for name, dataset in DATASETS.items()},
        "tasks": {name: dataset.task for name, dataset in DATASETS.items()},
        "features": {name: label for name, (label, _) in FEATURES.items()},
        "activations": list(ACTIVATIONS),
        "regularizations": list(REGULARIZATIONS),
        "max_layers": MAX_LAYERS,
        "max_neurons": MAX_NEURONS,
        "max_noise": MAX_NOISE,
        "defaults": DEFAULTS.to_json(),
    }


@router.post("/start", responses=POST_ERRORS, summary="A new network for this page (replaces its old one)")
async def start(request: Request, body: StartRequest) -> dict:
    """Builds the points and the network; answers the points, each input feature over the plane
    and the epoch-0 snapshot. The page's running stream, if any, ends."""
    page = page_id(body.page)
    config = body.config()  # a bad value: 400 naming it
    trainer = await _on_worker(Trainer, config, body.init_seed)  # a bad init_seed: 400 naming it
    sessions_of(request).put(page, trainer)
    return await _on_worker(_start_json, trainer)


PAGE = Path(description=PAGE_HELP, json_schema_extra=PAGE_SCHEMA)  # checked by page_id: a 400


def _paused(request: Request, page: str) -> _Session:
    """``page``'s session with its stream stopped. Async callers only: the stream checks
    ``owns`` and queues its next slice on the worker with no await between, so once this
    returns no slice can be queued after the caller's work: the worker's queue is in order."""
    sessions = sessions_of(request)
    session = sessions.get(page_id(page))
    with sessions.lock:
        session.stream = 0
    return session


@router.post(
    "/{page:page}/pause", responses=POST_ERRORS, summary="Stop training and answer the network as it is"
)
async def pause(request: Request, page: str = PAGE) -> dict:
    """The stream stops; the answer is the snapshot after the last slice it trained (a page that
    only stopped reading would show the last snapshot it read, while the server trained on)."""
    session = _paused(request, page)

    def now() -> dict:
        return snapshot_json(session.trainer.snapshot(), session.trainer.config.activation)

    return await _on_worker(now)


@router.post("/{page:page}/step", responses=POST_ERRORS, summary="Train one epoch and answer the snapshot")
async def step(request: Request, page: str = PAGE) -> dict:
    """Pauses a running stream first, so the answer is exactly one epoch after the pause."""
    session = _paused(request, page)

    def one_epoch() -> dict:
        session.trainer.train_epoch()
        return snapshot_json(session.trainer.snapshot(), session.trainer.config.activation)

    return await _on_worker(one_epoch)


async def _edited(request: Request, page: str, edit) -> dict:
    """Pause ``page``'s stream, apply ``edit(trainer)`` (a bad index or value: 400 naming it) and
    answer the edited network's snapshot: the page redraws from the server's own network."""
    session = _paused(request, page)

    def apply() -> dict:
        edit(session.trainer)
        return snapshot_json(session.trainer.snapshot(), session.trainer.config.activation)

    return await _on_worker(apply)


@router.post("/{page:page}/weight", responses=POST_ERRORS, summary="Set one weight by hand (pauses)")
async def set_weight(request: Request, body: WeightEdit, page: str = PAGE) -> dict:
    """The weight from ``source`` into ``neuron`` of matrix ``layer`` becomes ``value``; the
    answer is the snapshot of the edited network (its losses too), as a step's."""
    return await _edited(
        request, page, lambda trainer: trainer.set_weight(body.layer, body.neuron, body.source, body.value)
    )


@router.post("/{page:page}/bias", responses=POST_ERRORS, summary="Set one neuron's bias by hand (pauses)")
async def set_bias(request: Request, body: BiasEdit, page: str = PAGE) -> dict:
    """The bias of ``neuron`` in layer ``layer`` (0: the first hidden layer; the last: the
    output) becomes ``value``; the answer is the edited network's snapshot."""
    return await _edited(request, page, lambda trainer: trainer.set_bias(body.layer, body.neuron, body.value))


@router.delete(
    "/{page:page}", responses=POST_ERRORS, summary="Forget this page's network (the page went away)"
)
def forget(request: Request, page: str = PAGE) -> dict:
    sessions_of(request).remove(page_id(page))
    return {"page": page, "removed": True}


def _train_slice(trainer: Trainer) -> str:
    trainer.train_for(EPOCHS_PER_UPDATE, SLICE_SECONDS)
    return sse(snapshot_json(trainer.snapshot(), trainer.config.activation), "snapshot")


@router.get(
    "/{page:page}/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: snapshot` per update, then `event: end`",
        },
        429: {"model": ErrorDetail, "description": f"{MAX_RUNNING} trainings stream already"},
    },
    summary="Train this page's network and stream a snapshot per update (server-sent events)",
)
async def stream(
    request: Request,
    page: str = PAGE,
    updates: int | None = Query(
        None, ge=1, le=1_000_000, description="stop after this many updates [default: no limit]"
    ),
) -> StreamingResponse:
    """``event: snapshot`` with the same fields as a step's answer, up to ``UPDATES_PER_SECOND``
    a second, each after a slice of training; then ``event: end`` with ``{"reason"}``:
    ``updates`` (the limit asked for), ``time limit``, ``replaced`` or ``server stopping``."""
    sessions = sessions_of(request)
    session, stream_id = sessions.start_stream(page_id(page))  # TooManyTrainings: 429
    stopping = request.app.state.trainings.closing.is_set  # the explorer is shutting down

    async def events():
        sent, reason = 0, "time limit"
        deadline = time.monotonic() + MAX_STREAM_SECONDS
        try:
            while time.monotonic() < deadline:
                started = time.monotonic()
                if stopping() or not sessions.owns(page, session, stream_id):
                    reason = "server stopping" if stopping() else "replaced"
                    break
                yield await _on_worker(_train_slice, session.trainer)
                sent += 1
                if updates is not None and sent >= updates:
                    reason = "updates"
                    break
                await asyncio.sleep(max(0.0, 1 / UPDATES_PER_SECOND - (time.monotonic() - started)))
            yield sse({"reason": reason, "updates": sent}, "end")
        finally:  # also when the page went away and the write failed
            sessions.end_stream(session, stream_id)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
