"""Projects and the runs of a project."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from gradtrace.schema import MAX_NAME

from gradtrace_server.api.deps import ReadAccess, StoreDep
from gradtrace_server.api.models import ErrorOut, ProjectsOut, RunsPage

router = APIRouter(prefix="/api/v1", tags=["projects"])

ProjectName = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="project name")]


@router.get("/projects", response_model=ProjectsOut, summary="Projects you can read")
def list_projects(store: StoreDep, access: ReadAccess) -> Any:
    """Every project with its number of runs and latest run start; a token sees only its own."""
    items = [p for p in store.projects() if access.may_see(p.name)]
    return {"items": items}


@router.get(
    "/projects/{project}/runs",
    response_model=RunsPage,
    summary="Runs of a project, newest first",
    responses={403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def list_runs(
    project: ProjectName,
    store: StoreDep,
    access: ReadAccess,
    name: Annotated[str | None, Query(max_length=MAX_NAME, description="exact run name")] = None,
    status: Annotated[Literal["running", "finished", "failed"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="started at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="started before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """Runs of ``project`` matching the filters, paginated with ``limit``/``offset``."""
    access.require_project(project)
    if since is not None and until is not None and until <= since:
        raise HTTPException(422, f"query.until: must be later than since ({since.isoformat()})")
    page = store.runs(project, name=name, status=status, since=since, until=until, limit=limit, offset=offset)
    return page
