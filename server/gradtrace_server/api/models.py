"""Response models of the REST API (what ``/docs`` shows).

Floats that may be non-finite are typed ``float | str``: JSON has no NaN, so
they travel as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

from typing import Any

from gradtrace.store import ProjectSummary, RunSummary
from pydantic import BaseModel, ConfigDict, Field

Num = float | str | None


class _Out(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")


class ErrorOut(_Out):
    """Every error: ``message`` is one line naming the field; ``detail`` may list every problem."""

    detail: str | list[dict[str, Any]]
    message: str


class IngestOut(_Out):
    """``stored`` is false for a batch id seen before (acknowledged, not stored twice)."""

    stored: bool
    run_id: str
    steps: int


class ProjectOut(ProjectSummary, _Out):
    """A project and how many runs it holds (the store's ``ProjectSummary``)."""


class ProjectsOut(_Out):
    items: list[ProjectOut]


class RunOut(RunSummary, _Out):
    """One run as listed; ``id`` is the run's uid (the tracer's ``run_id``); the store's ``RunSummary``."""


class RunsPage(_Out):
    """One page: ``total`` counts every match; ask for the next with ``offset=offset+limit``."""

    items: list[RunOut]
    total: int
    limit: int
    offset: int


class RunDetailOut(_Out):
    """A run: its summary, the RunInfo metadata, the variable inventory and the layers."""

    summary: RunOut
    meta: dict[str, Any]
    variables: list[dict[str, Any]]
    layers: list[dict[str, Any]]


class StepsPage(_Out):
    """Step records ``start <= step < stop`` in order, at most ``limit`` of them.

    ``next_start`` is the ``start`` of the next page, or null after the last.
    Each item is a step record (``step``, the chosen step fields, and ``vars``:
    one object per chosen variable with ``v`` and the chosen variable fields).
    The body is streamed.
    """

    run_id: str
    start: int
    stop: int | None
    limit: int
    steps: list[dict[str, Any]]
    next_start: int | None


class SeriesOut(_Out):
    """``values[i]`` is the field at ``steps[i]``; ``v`` is null for a step field like ``loss``."""

    run_id: str
    field: str
    v: int | None
    steps: list[int]
    values: list[Num]


class SeriesManyOut(_Out):
    """One field for several variables: ``values[k][i]`` is variable ``vars[k]`` at ``steps[i]``
    (null where that variable has no record at that step)."""

    run_id: str
    field: str
    vars: list[int]
    steps: list[int]
    values: list[list[Num]]


class SeriesFieldsOut(_Out):
    """Several per-variable fields for several variables, read in one pass:
    ``values[field][k][i]`` is ``field`` of variable ``vars[k]`` at ``steps[i]``
    (null where that variable has no value of that field at that step)."""

    run_id: str
    fields: list[str]
    vars: list[int]
    steps: list[int]
    values: dict[str, list[list[Num | list[Num]]]]


class DeletedOut(_Out):
    deleted: str = Field(description="the uid of the deleted run")


class HealthOut(_Out):
    status: str


class ReadyOut(_Out):
    status: str
    database: str
    schema_: str | None = Field(default=None, alias="schema")
    detail: str | None = None
