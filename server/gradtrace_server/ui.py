"""The web UI: three static pages that call the REST API from the browser.

Pages (deep links that can be pasted into an issue):

- ``/`` - project picker and the runs table (sort, filter, pick two to compare)
- ``/runs/{run_id}`` - one run: metadata, configuration and plots over steps
- ``/compare?a=RUN&b=RUN`` - the comparator's verdict and findings, overlaid curves
  and a layers x steps heat map of gradient ratio / cosine

The pages hold no data, so they are served without a token; every API call the
page makes carries ``Authorization: Bearer <token>`` from a login field kept in
``localStorage`` (loopback embedded mode needs none). Static files, including the
vendored plotting library (uPlot, MIT, ``static/vendor/``), are served by this
router under ``/static/`` so the UI works offline and without a separate mount.

Usage::

    from fastapi import FastAPI
    from gradtrace_server import ui

    app = FastAPI()
    app.include_router(ui.router)
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

logger = logging.getLogger("gradtrace.server.ui")

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Directory of the UI's static files (html, js, css, ``vendor/``)."""

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    # Pages are tiny and change with the package; no-cache keeps a deployed
    # upgrade from mixing an old page with a new API.
    return FileResponse(
        STATIC_DIR / name,
        media_type=_MEDIA_TYPES[".html"],
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/")
def runs_page() -> FileResponse:
    """The runs table."""
    return _page("index.html")


@router.get("/runs/{run_id}")
def run_page(run_id: str) -> FileResponse:
    """One run's metadata and plots (the page reads ``run_id`` from its URL)."""
    return _page("run.html")


@router.get("/compare")
def compare_page() -> FileResponse:
    """The comparison of two runs (``?a=RUN&b=RUN``)."""
    return _page("compare.html")


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/static/{path:path}")
def static_file(path: str) -> FileResponse:
    """A file under ``static/``; anything outside it or unknown is a 404."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise HTTPException(status_code=404, detail=f"no static file {path!r}")
    media_type = _MEDIA_TYPES.get(target.suffix, "application/octet-stream")
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": "no-cache"})


__all__ = ["STATIC_DIR", "router"]
