"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from gradtrace_server._json import GradtraceJSONResponse
from gradtrace_server.api.deps import SettingsDep, bearer, check_access
from gradtrace_server.api.models import HealthOut, ReadyOut

logger = logging.getLogger("gradtrace.server.ops")

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness (no token)")
def healthz() -> Any:
    """200 while the process serves requests; says nothing about the database."""
    return {"status": "ok"}


def _check_database(store: Any) -> tuple[bool, str | None, str | None]:
    current, head = store.schema_revision()
    if current != head:
        return False, current, f"schema at {current or '(empty)'}, needs {head}: run gradtrace db upgrade --db URL"
    return True, current, None


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness (no token): database reachable and schema current",
    responses={503: {"model": ReadyOut}},
)
async def readyz(request: Request) -> Any:
    """200 when the database answers and is at the schema this server needs, else 503."""
    store = getattr(request.app.state, "store", None)
    if store is None:
        return GradtraceJSONResponse({"status": "starting", "database": "not open"}, status_code=503)
    try:
        ok, current, detail = await run_in_threadpool(_check_database, store)
    except Exception as exc:
        logger.warning("readiness check: database unreachable: %s", exc)
        return GradtraceJSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    body = {"status": "ready" if ok else "unavailable", "database": "ok", "schema": current, "detail": detail}
    return GradtraceJSONResponse(body, status_code=200 if ok else 503)


async def _metrics_guard(request: Request, settings: SettingsDep) -> None:
    if settings.metrics_public or not settings.auth_required:
        return
    # Any valid token may scrape: metrics are not per project.
    credentials = await bearer(request)
    await run_in_threadpool(check_access, request, settings, credentials)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request, _: Annotated[None, Depends(_metrics_guard)]) -> Response:
    """Ingested steps and batches, batch latency, HTTP requests by route and status
    (a token of any project when tokens are required, unless ``metrics_public``)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

