"""FastAPI dependencies shared by the endpoints: the run named in the path, and the image form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, File, Form, Path, Request, UploadFile
from pydantic import BaseModel, BeforeValidator, Strict

from convlens.errors import ConvlensError
from convlens.server.runs import LoadedRun, RunStore
from convlens.server.uploads import MAX_UPLOAD_BYTES, ModelInput, model_input


def _integral(value: object) -> object:
    """JSON Schema counts 3.0 as the integer 3, and so does a whole-number field here."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Numbers in JSON bodies as the schema says them: ``true`` or ``"3"`` is no number (pydantic's lax
# mode would take them as 1.0 and 3), an integer is a float too, and 3.0 is a whole number.
Number = Annotated[float, Strict()]
WholeNumber = Annotated[int, BeforeValidator(_integral), Strict()]


class ErrorDetail(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationDetail(BaseModel):
    detail: str
    errors: list[ValidationProblem]


def _answer(description: str, model: type[BaseModel] = ErrorDetail) -> dict:
    return {"model": model, "description": description}


# What the endpoints answer besides 200, for the OpenAPI schema (every one is {"detail": "..."})
ERRORS = {
    400: _answer("a bad value: the detail names it and its valid range"),
    404: _answer("no run with this id"),
    421: _answer("the Host header does not name this server"),
    422: _answer("a parameter of the wrong type or out of its bounds", ValidationDetail),
}
POST_ERRORS = {
    **ERRORS,
    403: _answer("the request comes from another site's page (Origin)"),
    413: _answer("the body is over the limit (5 MB uploads, 1 MB JSON)"),
}
UPLOAD_ERRORS = {**POST_ERRORS, 415: _answer("the upload is not an image convlens reads")}

MAX_TEST_INDEX = 100_000_000  # a sanity bound; the run's own count is checked when the image is read
RUN_ID = Path(description="run id from GET /api/runs (the run folder's name)")


def state_image_forms(schema: dict) -> None:
    """Add to the OpenAPI ``schema`` what FastAPI cannot say of an image form: exactly one of
    ``image`` and ``test_index`` (``model_input`` refuses neither or both with a 400), so the
    form itself is required (FastAPI marks a body of optional fields optional)."""
    forms = set()
    for name, body in schema.get("components", {}).get("schemas", {}).items():
        if {"image", "test_index"} <= set(body.get("properties", {})):
            body["oneOf"] = [{"required": ["image"]}, {"required": ["test_index"]}]
            forms.add(f"#/components/schemas/{name}")
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            contents = (body or {}).get("content", {}).values()
            if any(content.get("schema", {}).get("$ref") in forms for content in contents):
                body["required"] = True


def get_store(request: Request) -> RunStore:
    return request.app.state.runs


def refuse_segmentation(run: LoadedRun, instead: str) -> None:
    """A whole-image endpoint asked about a run that answers a class per pixel: one line, ending with
    ``instead`` (what to ask for, or why not)."""
    if run.run.task == "segmentation":
        raise ConvlensError(f"run {run.run_id!r} is a segmentation model (a class per pixel){instead}")


def get_run(request: Request, run_id: str = RUN_ID) -> LoadedRun:
    """The run named in the URL; an unknown id is a 404 naming the loaded ones."""
    return get_store(request).get(run_id)


def _form_boolean(value: object) -> object:
    """A form's ``true`` or ``false`` (what the page sends); pydantic would also read 1, "on" or
    "yes", which the schema's boolean does not allow."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


FormBoolean = Annotated[bool, BeforeValidator(_form_boolean)]


# The image forms' fields that are numbers or booleans (deps, explain): text fields may be empty
NUMBER_FIELDS = frozenset(
    {"test_index", "invert", "channel", "row", "col", "target", "eps", "steps", "radius"}
)
# text fields whose schema is an enum: "" is not one of its values either
CHOICE_FIELDS = frozenset({"effect", "method"})


async def no_empty_fields(request: Request) -> None:
    """Refuse a number, boolean or choice form field sent empty. FastAPI reads ``name=`` as the field left
    out (its default), so ``invert=`` or ``eps=`` would be taken although the schema's boolean or
    number is no "" (a text field, e.g. ``stage=``, may be empty: its default). The page leaves
    out what it does not set. The form is parsed once: FastAPI keeps it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return
    for name, value in (await request.form()).multi_items():
        if name in NUMBER_FIELDS | CHOICE_FIELDS and isinstance(value, str) and value == "":
            raise ConvlensError(f"{name}: sent empty; leave it out to use its default", parameter=name)


@dataclass
class ImageRequest:
    run: LoadedRun
    image: ModelInput
    test_index: int | None = None  # the test image's index (its true mask, for segmentation)


def image_request(
    request: Request,
    run_id: str = RUN_ID,
    image: UploadFile = File(  # not "| None": a form cannot send null, and the schema must not offer it
        None,
        description="an image file (PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM; at most 5 MB), e.g. the "
        "drawing canvas; converted to the model's input by the same pipeline as `convlens predict` "
        "(Run.input: aspect-ratio check, resize, shift check)",
    ),
    test_index: int = Form(
        None,
        ge=0,
        le=MAX_TEST_INDEX,
        description="or: the index of one of the run's test images (below its count, GET .../test-images)",
    ),
    invert: FormBoolean = Form(
        False, description="use 1 − pixels: a dark-on-light image for a light-on-dark model (true or false)"
    ),
    _: None = Depends(no_empty_fields),
) -> ImageRequest:
    """The run and its input image, from a multipart form with ``image`` or ``test_index`` (and ``invert``)."""
    run = get_run(request, run_id)
    data = name = None
    if image is not None:
        data = image.file.read(MAX_UPLOAD_BYTES + 1)  # one byte more than allowed tells "too big"
        name = image.filename
    return ImageRequest(run, model_input(run, data, name, test_index, invert), test_index)
