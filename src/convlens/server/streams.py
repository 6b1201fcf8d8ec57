"""What the explorer's long-running work shares (trainings, the learning playground): the page
id that owns each, the server-sent event encoding, and the answer when too many run at once."""

from __future__ import annotations

import json
import re

from fastapi import HTTPException
from starlette.convertors import Convertor, register_url_convertor

from convlens.errors import ConvlensError

# static/api.js makes PAGE_ID a random UUID (36 characters) or 24 random letters and digits
PAGE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
# the same rule in the OpenAPI schema (stated there, enforced by ``page_id`` with its one-line 400)
PAGE_SCHEMA = {"pattern": f"^{PAGE_ID.pattern}$", "minLength": 8, "maxLength": 64}
PAGE_HELP = "the page's own random id: 8 to 64 letters, digits, - or _"


class _PageConvertor(Convertor):
    """``{page:page}`` in a route's path matches page ids only: ``/api/playground2d/start`` is
    then no page's URL, so ``DELETE`` there is a 405 (``Allow: POST``), not a 400 about a page,
    and a path that names no page is a 404 like any unknown URL."""

    regex = PAGE_ID.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("page", _PageConvertor())


class TooManyTrainings(HTTPException):
    """As many trainings (or playground streams) run as the server allows at once: 429."""

    def __init__(self, detail: str) -> None:
        super().__init__(429, detail)


def page_id(page: str) -> str:
    """``page`` if it is a page's id; else a ConvlensError naming it (answered with 400)."""
    if not isinstance(page, str) or not PAGE_ID.fullmatch(page):
        raise ConvlensError("page: expected the page's id, 8 to 64 letters, digits, - or _", parameter="page")
    return page


def sse(value: dict, kind: str | None = None) -> str:
    """One server-sent event: ``data: {json}``, after ``event: kind`` when it has a kind."""
    head = f"event: {kind}\n" if kind else ""
    return f"{head}data: {json.dumps(value)}\n\n"
