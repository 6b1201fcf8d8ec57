"""The explorer: a local web page (FastAPI JSON API + static HTML/JS) for the user's own trained CNNs."""

from convlens.server.app import create_app

__all__ = ["create_app"]
