"""FastAPI dependencies shared by the endpoints: the run named in the path, and the image form."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import File, Form, Path, Request, UploadFile

from convlens.server.runs import LoadedRun, RunStore
from convlens.server.uploads import MAX_UPLOAD_BYTES, ModelInput, model_input

RUN_ID = Path(description="run id from GET /api/runs (the run folder's name)")


def get_store(request: Request) -> RunStore:
    return request.app.state.runs


def get_run(request: Request, run_id: str = RUN_ID) -> LoadedRun:
    """The run named in the URL; an unknown id is a 404 naming the loaded ones."""
    return get_store(request).get(run_id)


@dataclass
class ImageRequest:
    run: LoadedRun
    image: ModelInput


def image_request(
    request: Request,
    run_id: str = RUN_ID,
    image: UploadFile | None = File(
        None,
        description="an image file (PNG, JPEG, GIF, BMP, TIFF, WebP; at most 5 MB), e.g. the drawing "
        "canvas; converted to the model's input like `convlens predict` does",
    ),
    test_index: int | None = Form(None, description="or: the index of one of the run's test images"),
    invert: bool = Form(False, description="use 1 − pixels: a dark-on-light image for a light-on-dark model"),
) -> ImageRequest:
    """The run and its input image, from a multipart form with ``image`` or ``test_index`` (and ``invert``)."""
    run = get_run(request, run_id)
    data = name = None
    if image is not None:
        data = image.file.read(MAX_UPLOAD_BYTES + 1)  # one byte more than allowed tells "too big"
        name = image.filename
    return ImageRequest(run, model_input(run, data, name, test_index, invert))
