"""The JSON API's interactive documentation at ``/docs``, served offline.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an inline script;
the explorer's Content-Security-Policy (nothing from other origins, no inline scripts) blocks
both, so that page stayed blank. Here the Swagger UI files come from the ``swagger-ui-bundle-v2``
package and a script of our own in ``static/`` starts it, so ``/docs`` works with no network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

DOCS_PAGE = Path(__file__).parent / "static" / "api-docs.html"
ASSETS = "/docs-assets"  # Swagger UI's own files, as the package ships them


def install_api_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (the page) and ``/docs-assets/*`` (Swagger UI); the app's schema is ``/openapi.json``."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(DOCS_PAGE, headers={"Cache-Control": "no-cache"})
