"""The FastAPI application factory.

Nothing is built at import time: ``create_app(settings)`` makes the app, and its
lifespan opens the store (a SQLite file is created and migrated on open; any
other database must already be at the current schema, else the app refuses to
start with the command to run).

Example::

    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

    app = create_app(Settings(db="sqlite:///runs.db"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gradtrace_server import errors
from gradtrace_server._json import GradtraceJSONResponse
from gradtrace_server._middleware import RequestMiddleware
from gradtrace_server.config import Settings, get_settings
from gradtrace_server.metrics import Metrics

logger = logging.getLogger("gradtrace.server")

API_DESCRIPTION = """\
REST API of the gradtrace team server: the tracer's ingest endpoint and queries
over the stored runs.

**Non-finite numbers.** JSON has no NaN or infinity, and gradients do explode:
every float in a request or a response may be the string `"NaN"`, `"Infinity"`
or `"-Infinity"`. They are data, stored and returned faithfully; `null` means
"not recorded".

**Auth.** When the server listens on a non-loopback address (or runs with
`--require-auth`) every request except `/healthz`, `/readyz`, `/docs` and
`/openapi.json` needs `Authorization: Bearer <token>`. A token belongs to one
project and has `read` or `write` scope (`gradtrace token create --project P
--scope write`); it neither reads nor writes another project's runs.

**Errors.** Every error body is `{"detail": ..., "message": "<field>: <what is
wrong>"}`; the message names the offending field (`body.steps[3].loss`,
`query.stop`, `run_id`, `Authorization`, ...).

**Paging.** Run listings page with `limit`/`offset` (`total` counts all
matches); step records with `start`/`stop`/`limit` and `next_start`.
"""


def _optional_router(module: str) -> Any:
    # Routers other parts of the project provide; the API works without them.
    if importlib.util.find_spec(module) is None:
        return None
    return importlib.import_module(module).router


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi
    from gradtrace.schema import Batch

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    # The ingest body is read by hand (size limits, gzip); publish its model here.
    batch = Batch.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, sub in batch.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components["Batch"] = batch
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving the REST API (and the UI and comparison routes when installed)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gradtrace.store import open_store

        # SchemaOutOfDate propagates: uvicorn refuses to start, with the command to run.
        store = await run_in_threadpool(open_store, settings.db)
        app.state.store = store
        logger.info(
            "serving %s (tokens %s)",
            store.engine.url.render_as_string(hide_password=True),
            "required" if settings.auth_required else "not required",
        )
        try:
            yield
        finally:
            app.state.store = None
            store.close()

    from gradtrace import __version__

    app = FastAPI(
        title="gradtrace",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=GradtraceJSONResponse,
        openapi_tags=[
            {"name": "ingest", "description": "The tracer's batches"},
            {"name": "projects", "description": "Projects and their runs"},
            {"name": "runs", "description": "One run: metadata, steps, series"},
            {"name": "operations", "description": "Health, readiness, metrics"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.store = None
    errors.install(app)

    from gradtrace_server.api import routes_ingest, routes_ops, routes_projects, routes_runs

    app.include_router(routes_ops.router)
    app.include_router(routes_ingest.router)
    app.include_router(routes_projects.router)
    app.include_router(routes_runs.router)
    for module in ("gradtrace_server.api.routes_compare", "gradtrace_server.api.routes_plots", "gradtrace_server.ui"):
        router = _optional_router(module)
        if router is not None:
            app.include_router(router)

    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        access_log=settings.access_log,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
