"""Values the store returns and the errors it raises (JSON-able pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class RunNotFound(StoreError, LookupError):
    """No run matches the reference; ``suggestions`` holds close run names/ids."""

    def __init__(self, ref: str, suggestions: list[str] | None = None) -> None:
        self.ref = ref
        self.suggestions = suggestions or []
        msg = f"no run {ref!r}"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions)
        super().__init__(msg)


class AmbiguousRun(StoreError, LookupError):
    """A run reference matches runs in several projects (or several uids)."""

    def __init__(self, ref: str, candidates: list[str], what: str = "projects") -> None:
        self.ref = ref
        self.candidates = candidates
        super().__init__(
            f"run {ref!r} is ambiguous; it matches {what}: {', '.join(candidates)}"
            + ("; pass --project" if what == "projects" else "; give more of the id")
        )


class SchemaOutOfDate(StoreError):
    """The database is not at the schema this gradtrace needs."""

    def __init__(self, url: str, current: str | None, head: str) -> None:
        self.url = url
        self.current = current
        self.head = head
        super().__init__(
            f"the database schema is at revision {current or '(empty)'}, this gradtrace needs "
            f"{head}. Run: gradtrace db upgrade --db {url}"
        )


class InvalidInput(StoreError, ValueError):
    """Input the store refuses; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class IngestResult(BaseModel):
    """What :meth:`Store.ingest` did: ``stored`` is False for a batch seen before."""

    stored: bool
    run_id: str
    steps: int


class ProjectSummary(BaseModel):
    name: str
    runs: int
    last_run_at: datetime | None = None


class RunSummary(BaseModel):
    """One run, as listed (``id`` is the run's uid, the tracer's ``run_id``)."""

    id: str
    name: str
    project: str
    status: str
    started_at: datetime
    ended_at: datetime | None = None
    duration_s: float | None = None
    num_steps: int
    keras_flavour: str | None = None
    execution_mode: str | None = None
    partial: bool = False


class RunDetail(BaseModel):
    """A run with its metadata (the RunInfo fields) and inventories."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    summary: RunSummary
    meta: dict[str, Any]
    variables: list[dict[str, Any]]
    layers: list[dict[str, Any]]


class Page(BaseModel, Generic[T]):
    """One page of a listing; ``total`` counts every match."""

    items: list[T]
    total: int
    limit: int
    offset: int


class TokenInfo(BaseModel):
    """An API token as stored (never the plaintext)."""

    id: int
    project: str
    scope: str
    name: str | None = None
    created_at: datetime
