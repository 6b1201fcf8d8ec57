"""The Train view's API: start a training, follow it epoch by epoch, stop it, resume a stopped
one, and scrub any run's per-epoch snapshots (first-layer kernels and a probe image's feature maps, ``train.snapshots``).

Run ids are the server's: a training gets a new folder of the runs dir named by ``RunStore``;
the client only ever names an id the server listed, never a path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path as FilePath

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from convlens.errors import ConvlensError
from convlens.server.deps import ERRORS, POST_ERRORS, RUN_ID, ErrorDetail, WholeNumber, get_store
from convlens.server.encode import packed
from convlens.server.runs import RunStore
from convlens.server.streams import PAGE_SCHEMA, page_id, sse
from convlens.server.training import Training, Trainings
from convlens.train.follow import (
    EpochEvent,
    Follower,
    Restart,
    interrupted_at,
    planned_epochs,
    training_alive,
)
from convlens.train.jobs import MAX_EPOCHS, TrainJob

router = APIRouter(prefix="/api/train", responses=ERRORS)

POLL_S = 0.25  # how often a stream looks at the folder: a new epoch shows within a quarter second
MAX_PAGE_SEED = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER
KEEP_ALIVE_S = 15.0  # an SSE comment line this often, so proxies keep an idle stream open


def _data_names(schema: dict) -> None:
    """The data sets a page may train on: built-in and available here (``TrainJob.check`` with
    ``paths=False``), read when the schema is made."""
    from convlens.data import list_datasets

    schema["enum"] = [row["name"] for row in list_datasets() if row["available"]]


def _model_names(schema: dict) -> None:
    from convlens.models import list_families

    schema["enum"] = list(list_families())


# Fields whose valid values are names: stated in the schema, checked (400) by ``TrainJob.check``
_CHOICES = {"data": _data_names, "model": _model_names}


def _json_type(hint):
    """A whole-number field takes 3.0 as 3 (JSON Schema's integers), never true or "3"."""
    if hint is int:
        return WholeNumber
    if hint == int | None:
        return WholeNumber | None
    return hint


def _bounds(spec: dataclasses.Field) -> dict:
    """The field's bounds; the seed's below 2**53, the largest whole number a page's JavaScript
    holds exactly (``start`` refuses larger ones; ``TrainJob`` itself takes up to 2**63 - 1)."""
    bounds = dict(spec.metadata["bounds"])
    if spec.name == "seed":
        bounds["maximum"] = min(bounds["maximum"], MAX_PAGE_SEED)
    return bounds


def _train_body() -> type[BaseModel]:
    """The body of ``POST /api/train``: ``TrainJob``'s fields with their types, help and bounds
    (published in the OpenAPI schema; ``TrainJob.check`` enforces them), and the asking page.
    Types are strict and unknown fields refused: ``"epochs": "4"`` or ``"out"`` is a 422."""
    hints = typing.get_type_hints(TrainJob)
    fields: dict = {
        spec.name: (
            _json_type(hints[spec.name]),
            Field(
                ... if spec.default is dataclasses.MISSING else spec.default,
                description=spec.metadata["help"],
                json_schema_extra=_CHOICES.get(spec.name) or _bounds(spec) or None,
            ),
        )
        for spec in dataclasses.fields(TrainJob)
    }
    fields["page"] = (
        str | None,
        Field(None, description="the asking page's id (8 to 64 letters, digits, - or _): its next "
              "training replaces this one", json_schema_extra=PAGE_SCHEMA),
    )  # fmt: skip
    example = {"data": "digits", "model": "convnet", "epochs": 4}
    config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [example]})
    return create_model("TrainBody", __config__=config, **fields)


TrainBody = _train_body()


def answer(description: str) -> dict:
    return {"model": ErrorDetail, "description": description}


EVENTS = {
    "content": {"text/event-stream": {}},
    "description": "one `data: {json}` event per epoch, then done",
}


def trainings_of(request: Request) -> Trainings:
    return request.app.state.trainings


@router.get("", summary="What can be trained here, and the trainings under way")
def overview(request: Request) -> dict:
    """Built-in data sets and models to choose from, the limits, the loaded runs' ids, every
    training under way in the served folders (started here or with ``convlens train``), and
    ``stopped``: the runs dir's trainings that ended before their schedule did, each with the
    epoch it resumes from (``POST /api/train/{id}/resume``)."""
    from convlens.data import list_datasets
    from convlens.models import list_families

    trainings, store = trainings_of(request), get_store(request)
    under_way = {t.run_id: t.summary() for t in trainings.trainings.values() if t.running}
    stopped = []
    for run_id, folder in store.folders().items():
        if run_id in under_way:
            continue
        if run_id not in trainings.trainings and training_alive(folder):
            under_way[run_id] = {"id": run_id, "status": "running", "external": True}
        elif store.runs_dir is not None and (epoch := interrupted_at(folder)) is not None:
            stopped.append(_stopped(run_id, folder, epoch))
    return {
        "runs_dir": str(store.runs_dir) if store.runs_dir is not None else None,
        "datasets": [row for row in list_datasets() if row["available"]],
        "models": list_families(),
        "max_epochs": MAX_EPOCHS,
        "at_once": trainings.at_once,
        "runs": list(store.runs),
        "trainings": list(under_way.values()),
        "stopped": stopped,
    }


def _stopped(run_id: str, folder: FilePath, epoch: int) -> dict:
    """A training that ended before its schedule did: the epoch it resumes from, the epochs
    planned, how it ended, and its folder and data (for the equivalent ``convlens train``)."""
    from convlens.train.follow import folder_outcome

    outcome = folder_outcome(folder)
    try:
        data = json.loads((folder / "last.json").read_text())["dataset"]["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        data = None
    return {
        "id": run_id,
        "epoch": epoch,
        "epochs": planned_epochs(folder),
        **outcome.to_json(),
        "folder": str(folder),
        "data": data,
    }


@router.post(
    "",
    status_code=202,
    summary="Start a training in a new run folder",
    responses={
        **POST_ERRORS,
        202: {"description": "started: its id, and where its events stream"},
        409: answer("the explorer was started without a runs dir"),
        429: answer("as many trainings run as the explorer allows at once"),
    },
)
async def start(request: Request, body: TrainBody) -> JSONResponse:  # type: ignore[valid-type]
    """A training job (``convlens.train.jobs``) into ``RUNS_DIR/<id>``; a page's second training
    stops its first (which stays resumable). A bad value is a 400 naming its field."""
    page = page_id(body.page) if body.page is not None else None
    if isinstance(body.seed, int) and body.seed > MAX_PAGE_SEED:
        raise ConvlensError(
            f"seed must be a whole number 0..{MAX_PAGE_SEED}, got {body.seed}", parameter="seed"
        )
    job = TrainJob(**body.model_dump(exclude={"page"}))
    training = await run_in_threadpool(trainings_of(request).start, job, page)
    return JSONResponse(
        {"id": training.run_id, "events": f"/api/train/{training.run_id}/events"}, status_code=202
    )


class ResumeBody(BaseModel):
    """The body of ``POST /api/train/{id}/resume``: only the asking page (the settings, the
    schedule and the data are the run's own, read from its ``last.json``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    page: str | None = Field(
        None,
        description="the asking page's id (8 to 64 letters, digits, - or _): its next training "
        "replaces this one",
        json_schema_extra=PAGE_SCHEMA,
    )


@router.post(
    "/{run_id}/resume",
    status_code=202,
    summary="Resume a stopped training in its own run folder from its last saved epoch",
    responses={
        **POST_ERRORS,
        202: {"description": "resumed: its id (the same), and where its events stream"},
        409: answer("the run has finished, is training, saved no epoch, or there is no runs dir"),
        429: answer("as many trainings run as the explorer allows at once"),
    },
)
async def resume(request: Request, body: ResumeBody | None = None, run_id: str = RUN_ID) -> JSONResponse:
    """A training job (``convlens.train.jobs.resume``) that continues ``RUNS_DIR/<id>`` from its
    ``last.*``, as ``convlens train --out RUNS_DIR/<id> --resume`` does: the same schedule, seed
    and data, bit-exact; its events replay the epochs so far, then continue. A page's running
    training stops first, as with ``POST /api/train``."""
    page = page_id(body.page) if body is not None and body.page is not None else None
    training = await run_in_threadpool(trainings_of(request).resume, run_id, page)
    return JSONResponse(
        {"id": training.run_id, "events": f"/api/train/{training.run_id}/events"}, status_code=202
    )


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: EVENTS},
    summary="Server-sent events: one per epoch, then done",
)
async def events(request: Request, run_id: str = RUN_ID) -> StreamingResponse:
    """Each epoch as ``data: {"id", "epoch", "train_loss", "test_accuracy", ..., "epochs",
    "snapshot"}``, the epochs already done first; the last event is ``{"id", "done": true,
    "status": "finished" | "stopped" | "failed", "resumable", "message", "run"}`` (``run``: the
    id in GET /api/runs once it is loaded). Works for any run the explorer follows."""
    store, trainings = get_store(request), trainings_of(request)
    folder = await run_in_threadpool(store.folder, run_id)  # an unknown id is a 404; may load a run
    training = trainings.get(run_id)
    follower = Follower(folder, training.job if training is not None else None)
    stream = epoch_events(run_id, follower, store, trainings.closing.is_set, request.is_disconnected)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def epoch_events(
    run_id: str,
    follower: Follower,
    store: RunStore,
    stopping: Callable[[], bool],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The follower's events as server-sent events, until it ends, the client goes away or the
    server stops. Each look at the folder runs on a worker thread: a large ``metrics.jsonl`` or
    loading the finished model must not stall the event loop (every request)."""
    quiet = 0.0
    while True:
        for event in await asyncio.to_thread(follower.poll):
            if isinstance(event, Restart):  # the folder is trained again from its first epoch
                yield sse({"id": run_id, "restart": True})
            elif isinstance(event, EpochEvent):
                yield sse({"id": run_id, **event.to_json()})
                quiet = 0.0
            else:
                await asyncio.to_thread(store.refresh, True)  # a finished run joins the runs first
                run = run_id if run_id in store.runs else None
                yield sse(
                    {
                        "id": run_id,
                        "done": True,
                        "epochs_done": event.epochs_done,
                        **event.outcome.to_json(),
                        "run": run,
                    }
                )
                return
        if stopping() or await disconnected():
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
        if quiet >= KEEP_ALIVE_S:
            yield ": still training\n\n"
            quiet = 0.0


@router.delete(
    "/{run_id}",
    summary="Stop a training started here; its last saved epoch stays resumable",
    responses={**POST_ERRORS, 409: answer("the training was not started from this explorer")},
)
def stop(request: Request, run_id: str = RUN_ID) -> dict:
    """SIGINT to the child, as Ctrl-C: it stops between two batches and ``last.*`` stays
    resumable (``POST /api/train/{id}/resume``, or ``convlens train --out RUNS_DIR/<id>
    --resume``). Stopping a training that has
    ended answers how it ended."""
    store, trainings = get_store(request), trainings_of(request)
    training: Training | None = trainings.get(run_id)
    if training is None:
        store.folder(run_id)  # 404 for an id the explorer does not know
        raise HTTPException(409, f"run {run_id!r} was not started from this explorer; stop it where it runs")
    trainings.stop(training)
    return training.summary()


@router.get("/{run_id}/snapshots", summary="Which epochs have snapshots, and the probe image")
def snapshot_index(request: Request, run_id: str = RUN_ID) -> dict:
    """The stage the snapshots come from, the kernels' and feature maps' shapes, the epochs
    saved (0: the initialization) and the probe image (a packed (C, H, W) tensor in [0, 1])."""
    from convlens.train.snapshots import read_index, read_probe

    folder = _snapshots_folder(request, run_id)
    index = _or_404(read_index, folder)
    probe = _or_404(read_probe, folder)
    return {**index, "id": run_id, "probe": {**index["probe"], "input": packed(probe)}}


@router.get("/{run_id}/snapshots/{epoch}", summary="The kernels and probe feature maps after one epoch")
def snapshot(
    request: Request,
    epoch: int = Path(
        ...,
        ge=0,
        le=MAX_EPOCHS,
        description="an epoch with a snapshot (0: the initialization; GET .../snapshots)",
    ),
    run_id: str = RUN_ID,
) -> dict:
    """``kernels`` (C_out, C_in, kH, kW) of the first convolution and its ``feature_maps``
    (C_out, H, W) of the probe image, as saved at the end of ``epoch``, each with the colour
    limits the page draws it with (``kernel_limits``, ``feature_map_limits``: signed, around 0)."""
    from convlens.train.snapshots import read_index, read_snapshot
    from convlens.views.maps import map_limits

    folder = _snapshots_folder(request, run_id)
    stage = _or_404(read_index, folder)["stage"]
    saved = read_snapshot(folder, epoch)  # an epoch not saved: 400 listing the saved ones
    return {
        "id": run_id,
        "epoch": epoch,
        "stage": stage,
        "kernels": packed(saved["kernels"]),
        "kernel_limits": map_limits(saved["kernels"], signed=True),
        "feature_maps": packed(saved["feature_maps"]),
        "feature_map_limits": map_limits(saved["feature_maps"], signed=True),
    }


def _snapshots_folder(request: Request, run_id: str) -> FilePath:
    return get_store(request).folder(run_id)


def _or_404(read, folder: FilePath):
    try:
        return read(folder)
    except ConvlensError as exc:
        raise HTTPException(404, str(exc)) from None
