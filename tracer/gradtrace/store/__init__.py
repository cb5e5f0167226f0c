"""The gradtrace store: SQLAlchemy 2 over SQLite (embedded) or PostgreSQL (team server).

Example::

    >>> from gradtrace.store import open_store
    >>> store = open_store("sqlite:///:memory:")      # or "runs.db", "postgresql://..."
    >>> from gradtrace.schema import Batch, RunInfo, StepRecord
    >>> store.ingest(Batch(batch_id="b1", run=RunInfo(run_id="r1", name="demo"),
    ...                    steps=[StepRecord(step=0, loss=0.5)])).stored
    True
    >>> [r.name for r in store.runs().items]
    ['demo']
    >>> store.close()

``open_store(None)`` uses ``$GRADTRACE_URL``, else ``sqlite:///./gradtrace.db``.
A SQLite file is created and migrated on open; any other database must be at
the Alembic head already (``gradtrace db upgrade --db URL``), else
:class:`SchemaOutOfDate`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from gradtrace import schema
from gradtrace.store import _ingest, _migrate, _query, _tokens
from gradtrace.store._types import (
    AmbiguousRun,
    IngestResult,
    InvalidInput,
    Page,
    ProjectSummary,
    RunDetail,
    RunNotFound,
    RunSummary,
    SchemaOutOfDate,
    StoreError,
    TokenInfo,
)

logger = logging.getLogger("gradtrace.store")

ENV_URL = "GRADTRACE_URL"
DEFAULT_URL = "sqlite:///./gradtrace.db"
# Milliseconds a SQLite connection waits for the other writer (tracer thread vs CLI).
SQLITE_BUSY_TIMEOUT_MS = 30_000

Token = TokenInfo


def normalize_url(url: str | None) -> str:
    """Turn what a user typed into a SQLAlchemy URL.

    ``None`` -> ``$GRADTRACE_URL`` -> ``sqlite:///./gradtrace.db``; a bare path
    becomes a SQLite URL; ``postgres(ql)://`` selects the psycopg 3 driver.
    """
    if url is None or not url.strip():
        url = os.environ.get(ENV_URL) or DEFAULT_URL
    url = url.strip()
    if url.startswith(("http://", "https://")):
        raise InvalidInput("url", f"{url!r} is a gradtrace server, not a database; pass a database URL")
    if "://" not in url:
        return "sqlite:///" + str(Path(url).expanduser().resolve())
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _json_dumps(obj: Any) -> str:
    return _ingest.json_text(obj) or "null"


def make_engine(url: str | None = None) -> Engine:
    """A SQLAlchemy engine for ``url`` with gradtrace's connection settings.

    SQLite: WAL journal, ``busy_timeout``, foreign keys on, and transactions
    emitted by us (``BEGIN``, or ``BEGIN IMMEDIATE`` for writers) instead of by
    the sqlite3 module, so a reader never blocks on an upgrade to a write lock.
    """
    u = make_url(normalize_url(url))
    if u.get_backend_name() != "sqlite":
        return create_engine(u, json_serializer=_json_dumps, pool_pre_ping=True)
    memory = u.database in (None, "", ":memory:")
    if not memory:
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    kw: dict[str, Any] = {"json_serializer": _json_dumps}
    if memory:
        kw.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        kw["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = create_engine(u, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL is safe against application crashes (not power loss) and
            # avoids an fsync per transaction for the tracer's frequent small batches.
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("gradtrace_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Store:
    """Read and write gradtrace records in one database. Thread-safe (one engine, pooled)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(gradtrace_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- schema -------------------------------------------------------------
    def schema_revision(self) -> tuple[str | None, str]:
        """(the database's revision, the head this gradtrace ships)."""
        with self._read() as conn:
            return _migrate.current_revision(conn), _migrate.head_revision()

    def verify_schema(self) -> None:
        """Raise :class:`SchemaOutOfDate` unless the database is at the head revision."""
        current, head = self.schema_revision()
        if current != head:
            raise SchemaOutOfDate(self.url, current, head)

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Run the migrations; returns (revision before, revision after)."""
        return _migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> tuple[str | None, str | None]:
        """Undo migrations down to ``revision`` ("base" empties the schema)."""
        return _migrate.downgrade(self.engine, revision)

    # -- write --------------------------------------------------------------
    def ingest(self, batch: schema.Batch | dict[str, Any]) -> IngestResult:
        """Store one batch in one transaction: whole or not at all.

        A batch id seen before returns ``stored=False`` and writes nothing (also
        when two copies race). Raises :class:`InvalidInput` naming the field for
        what the store refuses.
        """
        if not isinstance(batch, schema.Batch):
            try:
                batch = schema.Batch.model_validate(batch)
            except Exception as exc:  # pydantic.ValidationError; its text names the fields
                raise InvalidInput("batch", str(exc)) from None
        try:
            with self._write() as conn:
                return _ingest.ingest(conn, batch)
        except IntegrityError as exc:
            with self._read() as conn:
                if _query.batch_exists(conn, batch.batch_id):
                    return IngestResult(stored=False, run_id=batch.run.run_id, steps=0)
            raise StoreError(f"batch {batch.batch_id!r} conflicts with stored data: {exc.orig}") from exc

    def delete_run(self, uid: str) -> None:
        """Delete a run and everything recorded for it."""
        with self._write() as conn:
            _query.delete_run(conn, uid)

    def create_token(self, project: str, scope: str, name: str | None = None) -> str:
        """Create an API token for ``project`` with ``scope`` "read" or "write".

        Returns the plaintext, which is not stored (only its hash): show it once.
        """
        with self._write() as conn:
            return _tokens.create_token(conn, project, scope, name)

    def check_token(self, plain: str) -> TokenInfo | None:
        """The token whose plaintext is ``plain``, or None."""
        with self._read() as conn:
            return _tokens.check_token(conn, plain)

    def list_tokens(self, project: str | None = None) -> list[TokenInfo]:
        """Tokens (never their plaintext), optionally of one project."""
        with self._read() as conn:
            return _tokens.list_tokens(conn, project)

    def revoke_token(self, token_id: int) -> bool:
        """Delete a token; False if there was none with that id."""
        with self._write() as conn:
            return _tokens.revoke_token(conn, token_id)

    # -- read ---------------------------------------------------------------
    def projects(self) -> list[ProjectSummary]:
        """Every project with its run count and latest start time."""
        with self._read() as conn:
            return _query.projects(conn)

    def runs(
        self,
        project: str | None = None,
        *,
        name: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[RunSummary]:
        """Runs, newest first, filtered by project / name / status / start time."""
        with self._read() as conn:
            return _query.runs(
                conn, project, name=name, status=status, since=since, until=until,
                limit=limit, offset=offset,
            )

    def resolve(self, ref: str, project: str | None = None) -> RunSummary:
        """A run by uid, unique uid prefix, or name (the latest run of that name).

        Raises :class:`RunNotFound` (with close names) or :class:`AmbiguousRun`.
        """
        with self._read() as conn:
            return _query.resolve(conn, ref, project)

    def run_detail(self, uid: str) -> RunDetail:
        """A run's summary, metadata, variable inventory and layers."""
        with self._read() as conn:
            return _query.run_detail(conn, uid)

    def variable_count(self, uid: str) -> int:
        """Number of variables of run ``uid``: valid variable indices are ``0 .. n-1``."""
        with self._read() as conn:
            return _query.variable_count(conn, uid)

    def steps(
        self,
        uid: str,
        start: int = 0,
        stop: int | None = None,
        vars: list[int] | None = None,
        fields: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream step records ``start <= step < stop`` as dicts, in step order.

        Reads in chunks of steps, so memory stays flat for any run length.
        ``vars`` restricts the variables, ``fields`` the columns (see
        :data:`STEP_FIELDS`, :data:`VAR_FIELDS`, ``"state"``).
        """
        return _query.iter_steps(self.engine, uid, start, stop, vars, fields)

    def series(
        self, uid: str, field: str, v: int | None = None, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one step field, or of one variable's field when ``v`` is given.

        Steps where the value was not recorded (NULL) are left out; NaN/Inf are kept.
        """
        with self._read() as conn:
            return _query.series(conn, uid, field, v, start, stop)

    def series_many(
        self,
        uid: str,
        fields: str | list[str],
        vs: list[int] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> Any:
        """Many variables' series in one sequential pass over the run.

        ``fields`` a name -> ``{v: (steps, values)}``; a list of names ->
        ``{field: {v: (steps, values)}}``. NULLs are left out per field, NaN/Inf kept.
        The fast way to read a whole run (the comparator's path).
        """
        with self._read() as conn:
            return _query.series_many(conn, uid, fields, vs, start, stop)

    def tensor(self, uid: str, step: int, v: int, kind: str = "grad") -> np.ndarray | None:
        """A full tensor (``full_tensors_every``) as float32, or None if not recorded."""
        with self._read() as conn:
            return _query.tensor(conn, uid, step, v, kind)

    def tensor_index(self, uid: str) -> list[tuple[int, int, str]]:
        """(step, v, kind) of every full tensor recorded for the run."""
        with self._read() as conn:
            return _query.tensor_index(conn, uid)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(url: str | None = None, *, check_schema: bool = True) -> Store:
    """Open the store at ``url`` (see :func:`normalize_url`).

    A SQLite database is created and migrated to the head revision (embedded
    mode). Any other database is checked: not at head -> :class:`SchemaOutOfDate`
    naming the command to run. ``check_schema=False`` skips both (for
    ``gradtrace db``).
    """
    engine = make_engine(url)
    store = Store(engine)
    if not check_schema:
        return store
    try:
        if engine.dialect.name == "sqlite":
            with store._read() as conn:
                current = _migrate.current_revision(conn)
            if current != _migrate.head_revision():
                _check_known(store, current)
                store.upgrade()
        else:
            _check_known(store, store.schema_revision()[0])
            store.verify_schema()
    except Exception:
        engine.dispose()
        raise
    return store


def _check_known(store: Store, current: str | None) -> None:
    if current is None:
        return
    try:
        known = _migrate.script_directory().get_revision(current) is not None
    except Exception:  # alembic.util.CommandError / ResolutionError for an unknown id
        known = False
    if not known:
        raise StoreError(f"{store.url} is at revision {current}, written by a newer gradtrace; upgrade gradtrace")


STEP_FIELDS = _query.STEP_FIELDS
VAR_FIELDS = _query.VAR_FIELDS

__all__ = [
    "AmbiguousRun",
    "DEFAULT_URL",
    "ENV_URL",
    "IngestResult",
    "InvalidInput",
    "Page",
    "ProjectSummary",
    "RunDetail",
    "RunNotFound",
    "RunSummary",
    "STEP_FIELDS",
    "SchemaOutOfDate",
    "Store",
    "StoreError",
    "Token",
    "TokenInfo",
    "VAR_FIELDS",
    "make_engine",
    "normalize_url",
    "open_store",
]
