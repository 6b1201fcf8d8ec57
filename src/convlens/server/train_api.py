"""The Train view's API: start a training, follow it epoch by epoch, stop it, and scrub any run's
per-epoch snapshots (first-layer kernels and a probe image's feature maps, ``train.snapshots``).

Run ids are the server's: a training gets a new folder of the runs dir named by ``RunStore``;
the client only ever names an id the server listed, never a path.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from convlens.errors import ConvlensError
from convlens.server.deps import ERRORS, POST_ERRORS, RUN_ID, ErrorDetail, get_store
from convlens.server.encode import packed
from convlens.server.follow import epoch_events, folder_outcome, training_alive
from convlens.server.training import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_LR,
    NoRunsDir,
    TooManyTrainings,
    Training,
    Trainings,
    TrainRequest,
)

router = APIRouter(prefix="/api/train", responses=ERRORS)

TRAIN_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "description": "a built-in data set, e.g. digits"},
                    "model": {"type": "string", "default": "convnet", "description": "a registered model"},
                    "epochs": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_EPOCHS,
                        "description": "default: the recipe's choice for the data set",
                    },
                    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LR},
                    "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                    "seed": {"type": "integer", "minimum": 0, "default": 0},
                    "page": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9_-]{1,64}$",
                        "description": "the asking page's id: its next training replaces this one",
                    },
                },
            },
            "example": {"data": "digits", "model": "convnet", "epochs": 4},
        }
    },
}


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
    """Built-in data sets and models to choose from, the limits, the loaded runs' ids, and every
    training under way in the served folders (started here or with ``convlens train``)."""
    from convlens.data import list_datasets
    from convlens.models import list_models

    trainings, store = trainings_of(request), get_store(request)
    under_way = {t.run_id: t.summary() for t in trainings.trainings.values() if t.running}
    for run_id, folder in store.folders().items():
        if run_id not in under_way and run_id not in trainings.trainings and training_alive(folder):
            under_way[run_id] = {"id": run_id, "status": "running", "external": True}
    return {
        "runs_dir": str(store.runs_dir) if store.runs_dir is not None else None,
        "datasets": [row for row in list_datasets() if row["available"]],
        "models": list_models(),
        "max_epochs": MAX_EPOCHS,
        "at_once": trainings.at_once,
        "runs": list(store.runs),
        "trainings": list(under_way.values()),
    }


@router.post(
    "",
    status_code=202,
    summary="Start a training in a new run folder",
    openapi_extra={"requestBody": TRAIN_BODY},
    responses={
        **POST_ERRORS,
        202: {"description": "started: its id, and where its events stream"},
        409: answer("the explorer was started without a runs dir"),
        429: answer("as many trainings run as the explorer allows at once"),
    },
)
async def start(request: Request) -> JSONResponse:
    """``convlens train`` in a child process, into ``RUNS_DIR/<id>``; a page's second training
    stops its first (which stays resumable)."""
    wanted = TrainRequest.from_json(await request.body())  # a bad value: 400 with one line
    try:
        training = await run_in_threadpool(trainings_of(request).start, wanted)
    except TooManyTrainings as exc:
        raise HTTPException(429, str(exc)) from None
    except NoRunsDir as exc:
        raise HTTPException(409, str(exc)) from None
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
    from convlens.train.snapshots import read_index

    store, trainings = get_store(request), trainings_of(request)
    folder = await run_in_threadpool(store.folder, run_id)  # an unknown id is a 404; may load a run
    training = trainings.get(run_id)

    def running() -> bool:
        return training.running if training is not None else training_alive(folder)

    def outcome() -> dict:
        ended = training.outcome() if training is not None else folder_outcome(folder)
        store.refresh(force=True)
        return {**ended, "run": run_id if run_id in store.runs else None}

    def snapshot_epochs() -> list[int]:
        try:
            return read_index(folder)["epochs"]
        except ConvlensError:
            return []

    stream = epoch_events(
        run_id, folder, running, outcome, snapshot_epochs, trainings.closing.is_set, request.is_disconnected
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.delete(
    "/{run_id}",
    summary="Stop a training started here; its last saved epoch stays resumable",
    responses={**POST_ERRORS, 409: answer("the training was not started from this explorer")},
)
def stop(request: Request, run_id: str = RUN_ID) -> dict:
    """SIGINT to the child, as Ctrl-C: it stops between two batches and ``last.*`` stays
    resumable (``convlens train --out RUNS_DIR/<id> --resume``). Stopping a training that has
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
def snapshot(request: Request, epoch: int, run_id: str = RUN_ID) -> dict:
    """``kernels`` (C_out, C_in, kH, kW) of the first convolution and its ``feature_maps``
    (C_out, H, W) of the probe image, as saved at the end of ``epoch``."""
    from convlens.train.snapshots import read_index, read_snapshot

    folder = _snapshots_folder(request, run_id)
    stage = _or_404(read_index, folder)["stage"]
    saved = read_snapshot(folder, epoch)  # an epoch not saved: 400 listing the saved ones
    return {
        "id": run_id,
        "epoch": epoch,
        "stage": stage,
        "kernels": packed(saved["kernels"]),
        "feature_maps": packed(saved["feature_maps"]),
    }


def _snapshots_folder(request: Request, run_id: str) -> Path:
    return get_store(request).folder(run_id)


def _or_404(read, folder: Path):
    try:
        return read(folder)
    except ConvlensError as exc:
        raise HTTPException(404, str(exc)) from None
