"""Fixtures of the server tests: a real uvicorn on a free loopback port, real SQLite
files, and a PostgreSQL database created for this test session (dropped at the end)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import ServerThread, free_port  # noqa: F401 - re-exported to the tests

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("GRADTRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _admin_connect() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True)


def create_pg_database(prefix: str = "gt_server") -> str:
    """A fresh empty database; returns its URL. Drop it with :func:`drop_pg_database`."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this session, upgraded to the head schema."""
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running (make postgres)")
    url = create_pg_database()
    try:
        from gradtrace.store import open_store

        store = open_store(url, check_schema=False)
        store.upgrade()
        store.close()
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def fresh_pg() -> Iterator[Callable[[], str]]:
    """Factory of extra empty PostgreSQL databases, each dropped after the test."""
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running (make postgres)")
    made: list[str] = []

    def make() -> str:
        made.append(create_pg_database("gt_server_tmp"))
        return made[-1]

    yield make
    for url in made:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store behind the server: a new SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like ``db_url``, shared by the tests of one module (fewer server starts)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('srv') / 'server.db'}"
    return str(request.getfixturevalue("pg_url"))


def _server_starter() -> Iterator[Callable[..., ServerThread]]:
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

    running: list[ServerThread] = []

    def start(db: str, **settings: Any) -> ServerThread:
        settings.setdefault("access_log", False)
        srv = ServerThread(create_app(Settings(db=db, **settings))).start()
        running.append(srv)
        return srv

    yield start
    for srv in running:
        srv.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """``start_server(db_url, **settings)`` -> a running uvicorn thread; stopped at teardown."""
    yield from _server_starter()


@pytest.fixture(scope="module")
def start_module_server() -> Iterator[Callable[..., ServerThread]]:
    """``start_server`` whose servers live until the end of the test module."""
    yield from _server_starter()


@pytest.fixture
def server(db_url: str, start_server: Callable[..., ServerThread]) -> ServerThread:
    """A loopback server without tokens over ``db_url``."""
    return start_server(db_url)


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def uid(prefix: str = "r") -> str:
    """A run/batch id unique across tests (the PostgreSQL database is shared by the session)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def gradtrace_cmd() -> list[str]:
    """The ``gradtrace`` command of this venv."""
    exe = Path(sys.executable).with_name("gradtrace")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gradtrace"]


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
