"""One run: detail, step records (streamed, paged), series, delete."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from gradtrace.store import AmbiguousRun, InvalidInput, RunNotFound, RunSummary
from starlette.concurrency import run_in_threadpool

from gradtrace_server._json import ArrayJSONResponse, array_json, dumps
from gradtrace_server.api.deps import Access, ReadAccess, StoreDep, WriteAccess
from gradtrace_server.api.models import (
    DeletedOut,
    ErrorOut,
    RunDetailOut,
    SeriesFieldsOut,
    SeriesManyOut,
    SeriesOut,
    StepsPage,
)

router = APIRouter(prefix="/api/v1", tags=["runs"])

RunRef = Annotated[
    str,
    Path(min_length=1, max_length=64, description="the run's uid, a unique prefix of it, or its name (latest run of that name)"),
]

_NOT_FOUND = {404: {"model": ErrorOut, "description": "No such run (or not in your token's project)"}}
_STEPS_PER_CHUNK = 200


def resolve(store: Any, ref: str, access: Access) -> RunSummary:
    """The run ``ref`` names, within the caller's project; 404 naming ``run_id`` otherwise."""
    try:
        run: RunSummary = store.resolve(ref, project=access.project)
    except RunNotFound as exc:
        raise HTTPException(404, f"run_id: {exc}") from None
    except AmbiguousRun as exc:
        raise HTTPException(409, f"run_id: {exc}") from None
    if not access.may_see(run.project):
        # Same answer as a missing run: a token never learns another project's run ids.
        raise HTTPException(404, f"run_id: no run {ref!r}")
    return run


def _int_list(raw: str | None, field: str) -> list[int] | None:
    if raw is None or raw.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part.isdigit():
            raise HTTPException(422, f"query.{field}: {part!r} is not a variable index (expected e.g. 0,3,5 or all)")
        out.append(int(part))
    if len(out) > 10_000:
        raise HTTPException(422, f"query.{field}: at most 10000 indices")
    return out


def _name_list(raw: str | None, field: str) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    names = [p.strip() for p in raw.split(",") if p.strip()]
    for name in names:
        if len(name) > 64 or not name.replace("_", "").isalnum():
            raise HTTPException(422, f"query.{field}: {name[:64]!r} is not a field name")
    return names


def _take(it: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return list(itertools.islice(it, n))


def check_vars(store: Any, run: RunSummary, wanted: list[int] | None, field: str) -> None:
    """404 naming ``field`` and the valid range when a variable index is not one of the run's."""
    if not wanted:
        return
    n = store.variable_count(run.id)
    bad = [v for v in wanted if v >= n]
    if bad:
        have = f"variables 0..{n - 1}" if n else "no per-variable records"
        raise HTTPException(
            404, f"query.{field}: run {run.name!r} ({run.id}) has {have}; no variable {bad[0]}"
        )


def _check_range(start: int, stop: int | None) -> None:
    if stop is not None and stop <= start:
        raise HTTPException(422, f"query.stop: must be greater than start ({start}), got {stop}")


def _invalid(exc: InvalidInput) -> HTTPException:
    return HTTPException(422, f"query.{exc.field}: {exc.message}")


@router.get("/runs/{run_id}", response_model=RunDetailOut, summary="One run", responses=_NOT_FOUND)
def run_detail(run_id: RunRef, store: StoreDep, access: ReadAccess) -> Any:
    """The run's summary, its metadata (the tracer's RunInfo), variable inventory and layers."""
    run = resolve(store, run_id, access)
    return store.run_detail(run.id)


@router.get(
    "/runs/{run_id}/steps",
    response_model=StepsPage,
    summary="Step records of a run (streamed, paged)",
    responses={**_NOT_FOUND, 422: {"model": ErrorOut}},
)
async def run_steps(
    run_id: RunRef,
    store: StoreDep,
    access: ReadAccess,
    start: Annotated[int, Query(ge=0, description="first step (inclusive)")] = 0,
    stop: Annotated[int | None, Query(ge=1, description="last step (exclusive)")] = None,
    vars: Annotated[str | None, Query(max_length=100_000, description="variable indices, e.g. `0,3`; default all")] = None,
    fields: Annotated[str | None, Query(max_length=2000, description="fields to return, e.g. `loss,norm`; default all")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many steps")] = 1000,
) -> Any:
    """Steps ``start <= step < stop``, at most ``limit``; continue from ``next_start``.

    The response is streamed from a database cursor: a 10k-step run is never
    held in memory. Non-finite floats are the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``.
    """
    _check_range(start, stop)
    var_list = _int_list(vars, "vars")
    field_list = _name_list(fields, "fields")
    run = await run_in_threadpool(resolve, store, run_id, access)

    def open_iter() -> tuple[Iterator[dict[str, Any]], list[dict[str, Any]]]:
        # The store checks the field names lazily; pull the first chunk here so
        # that a bad field is a 422 and not a broken stream.
        it = store.steps(run.id, start=start, stop=stop, vars=var_list, fields=field_list)
        try:
            first = list(itertools.islice(it, min(limit + 1, _STEPS_PER_CHUNK)))
        except BaseException:
            close = getattr(it, "close", None)
            if close:
                close()
            raise
        return it, first

    try:
        it, first = await run_in_threadpool(open_iter)
    except InvalidInput as exc:
        raise _invalid(exc) from None

    head = dumps({"run_id": run.id, "start": start, "stop": stop, "limit": limit})[:-1] + b',"steps":['

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        next_start: int | None = None
        pending = first
        try:
            yield head
            while pending:
                if sent + len(pending) > limit:
                    next_start = pending[limit - sent]["step"]
                    pending = pending[: limit - sent]
                if pending:
                    chunk = b",".join(dumps(rec) for rec in pending)
                    yield (b"," if sent else b"") + chunk
                    sent += len(pending)
                if next_start is not None or sent >= limit + 1:
                    break
                pending = await run_in_threadpool(_take, it, min(limit + 1 - sent, _STEPS_PER_CHUNK))
            yield b'],"next_start":' + dumps(next_start) + b"}"
        finally:
            close = getattr(it, "close", None)
            if close:
                await run_in_threadpool(close)

    return StreamingResponse(body(), media_type="application/json")


@router.get(
    "/runs/{run_id}/series",
    response_model=SeriesOut | SeriesManyOut | SeriesFieldsOut,
    summary="Fields over steps: one series, or many variables' series at once",
    responses={
        404: {"model": ErrorOut, "description": "No such run, or no variable `v` in it"},
        422: {"model": ErrorOut},
    },
)
def run_series(
    run_id: RunRef,
    store: StoreDep,
    access: ReadAccess,
    field: Annotated[str | None, Query(min_length=1, max_length=64, description="e.g. `loss`, `lr`, `norm`, `update_norm`")] = None,
    fields: Annotated[str | None, Query(max_length=2000, description="several per-variable fields, e.g. `norm,mean,min,max`: answers with `values[field][k][i]`")] = None,
    v: Annotated[int | None, Query(ge=0, description="variable index, for a per-variable field (404 naming the valid range if the run has no such variable)")] = None,
    vars: Annotated[str | None, Query(max_length=100_000, description="several variables (`0,3` or `all`): answers with `series`; an index the run does not have gets a row of nulls")] = None,
    start: Annotated[int, Query(ge=0)] = 0,
    stop: Annotated[int | None, Query(ge=1)] = None,
) -> Any:
    """A step field (``field=loss``) or one variable's field (``field=norm&v=3``) over steps.

    With ``vars=0,3`` or ``vars=all`` instead of ``v``, every listed
    variable's series in one response (``vars``, ``steps``, ``values[k][i]``).
    With ``fields=norm,mean,min,max`` instead of ``field`` (``vars`` defaults to
    all), several per-variable fields for the listed variables read in one
    pass: ``values[field][k][i]`` is ``field`` of variable ``vars[k]`` at
    ``steps[i]`` (null where not recorded); the fast way to read a whole run.
    """
    _check_range(start, stop)
    if v is not None and vars is not None:
        raise HTTPException(422, "query.vars: give either v or vars, not both")
    if (field is None) == (fields is None):
        raise HTTPException(422, "query.field: give either field (one series) or fields (several), not both or neither")
    field_list = _name_list(fields, "fields") if fields is not None else None
    if fields is not None and not field_list:
        raise HTTPException(422, "query.fields: give at least one field name")
    if field_list is not None and v is not None:
        raise HTTPException(422, "query.v: with fields, choose variables with vars (e.g. vars=3)")
    run = resolve(store, run_id, access)
    var_list = _int_list(vars, "vars")
    # One variable the run does not have is an error; a list is a selection (rows of nulls).
    check_vars(store, run, [v] if v is not None else None, "v")
    try:
        if field_list is not None:
            doc = _fields(store, run.id, field_list, var_list, start, stop)
        elif vars is None:
            assert field is not None
            steps, values = store.series(run.id, field, v=v, start=start, stop=stop)
            doc = {"run_id": run.id, "field": field, "v": v, "steps": array_json(steps), "values": array_json(values)}
        else:
            assert field is not None
            doc = _many(store, run.id, field, var_list, start, stop)
    except InvalidInput as exc:
        raise _invalid(exc) from None
    # Returned as a Response: FastAPI's per-item validation and jsonable_encoder cost
    # more than the query for long series; the shape is the documented response_model.
    return ArrayJSONResponse(doc)


def _grid(per_var: dict[int, Any], order: list[int], all_steps: Any) -> list[list[Any]]:
    """Rows ``values[k][i]``: variable ``order[k]`` at ``all_steps[i]``, None where absent."""
    import numpy as np

    values: list[Any] = []
    for v in order:
        steps, vals = per_var.get(v, (all_steps[:0], np.array([])))
        encoded = array_json(np.asarray(vals))
        if len(steps) == len(all_steps):  # the common case: every variable at every step
            values.append(encoded)
            continue
        row: list[Any] = [None] * len(all_steps)
        items = encoded.tolist() if isinstance(encoded, np.ndarray) else encoded
        for pos, val in zip(np.searchsorted(all_steps, steps).tolist(), items, strict=True):
            row[pos] = val
        values.append(row)
    return values


def _union_steps(per_field: list[dict[int, Any]]) -> Any:
    import numpy as np

    parts = [per_var[v][0] for per_var in per_field for v in per_var]
    if not parts:
        return np.array([], dtype=np.int64)
    if all(len(p) == len(parts[0]) for p in parts) and all(np.array_equal(p, parts[0]) for p in parts):
        return parts[0]  # every series on the same steps: skip the sort
    return np.unique(np.concatenate(parts))


def _many(store: Any, uid: str, field: str, wanted: list[int] | None, start: int, stop: int | None) -> dict[str, Any]:
    per_var = store.series_many(uid, field, wanted, start=start, stop=stop)
    order = sorted(per_var) if wanted is None else wanted
    all_steps = _union_steps([per_var])
    return {"run_id": uid, "field": field, "vars": order, "steps": array_json(all_steps), "values": _grid(per_var, order, all_steps)}


def _fields(
    store: Any, uid: str, fields: list[str], wanted: list[int] | None, start: int, stop: int | None
) -> dict[str, Any]:
    per_field = store.series_many(uid, fields, wanted, start=start, stop=stop)
    if wanted is None:
        order = sorted({v for f in fields for v in per_field[f]})
    else:
        order = wanted
    all_steps = _union_steps([per_field[f] for f in fields])
    return {
        "run_id": uid,
        "fields": fields,
        "vars": order,
        "steps": array_json(all_steps),
        "values": {f: _grid(per_field[f], order, all_steps) for f in fields},
    }


@router.delete(
    "/runs/{run_id}",
    response_model=DeletedOut,
    summary="Delete a run and all its records",
    responses={**_NOT_FOUND, 403: {"model": ErrorOut}},
)
def delete_run(run_id: RunRef, store: StoreDep, access: WriteAccess) -> Any:
    """Deletes the run (write scope of its project). Only a full uid deletes; a prefix or name is refused."""
    run = resolve(store, run_id, access)
    if run.id != run_id:
        raise HTTPException(422, f"run_id: deleting needs the full run id ({run.id!r}), not a prefix or name")
    store.delete_run(run.id)
    return {"deleted": run.id}
