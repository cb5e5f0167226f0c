"""Compare two runs, or check one: the comparator's report as JSON.

``GET /api/v1/compare?a=RUN&b=RUN[&project=P]`` returns the same document as
``gradtrace compare A B --json``; ``GET /api/v1/runs/{run_id}/check`` the one of
``gradtrace check RUN --json``. The comparator reads with SQL in a worker
thread (it never imports TensorFlow).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from gradtrace.compare import catalogue, check_run, compare_runs
from gradtrace.compare.reader import read_run
from starlette.concurrency import run_in_threadpool

from gradtrace_server.api.deps import ReadAccess, StoreDep
from gradtrace_server.api.routes_runs import resolve

router = APIRouter(prefix="/api/v1", tags=["compare"])

RunQuery = Annotated[str, Query(min_length=1, max_length=64, description="run uid, unique uid prefix or run name")]


def _project(project: str | None, access: Any) -> str | None:
    if project is not None:
        if not project.strip() or len(project) > 200:
            raise HTTPException(422, "query.project: must be 1 to 200 characters")
        access.require_project(project)
        return project
    return access.project


@router.get("/compare", summary="Why do two runs differ?")
async def compare_endpoint(store: StoreDep, access: ReadAccess, a: RunQuery, b: RunQuery,
                           project: Annotated[str | None, Query(max_length=200)] = None) -> Any:
    """Verdict, first divergent step, aligned steps, ranked findings, skipped checks, noise."""
    proj = _project(project, access)
    scoped = type(access)(project=proj, scope=access.scope) if proj != access.project else access
    ra = _resolve(store, a, scoped, "a")
    rb = _resolve(store, b, scoped, "b")

    def work() -> dict[str, Any]:
        return compare_runs(read_run(store, ra.id), read_run(store, rb.id)).to_dict()

    return await run_in_threadpool(work)


@router.get("/runs/{run_id}/check", summary="Single-run findings")
async def check_endpoint(store: StoreDep, access: ReadAccess,
                         run_id: Annotated[str, Path(min_length=1, max_length=64)]) -> Any:
    """The same engine's findings about one run alone (e.g. a non-scalar loss)."""
    run = resolve(store, run_id, access)
    return await run_in_threadpool(lambda: check_run(read_run(store, run.id)).to_dict())


@router.get("/compare/catalogue", summary="The finding kinds")
async def catalogue_endpoint() -> Any:
    """Every finding kind: severity, whether it needs aligned runs, trigger and fix."""
    return catalogue()


def _resolve(store: Any, ref: str, access: Any, field: str) -> Any:
    try:
        return resolve(store, ref, access)
    except HTTPException as exc:
        detail = str(exc.detail).replace("run_id:", f"query.{field}:", 1)
        raise HTTPException(exc.status_code, detail) from None
