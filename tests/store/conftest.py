"""Store fixtures: real SQLite files and a PostgreSQL database created for this session.

The PostgreSQL database (``gradtrace_store_<random>``) is created on first use
and dropped at the end of the session; nothing else on the server is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from gradtrace.store import Store, open_store
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("GRADTRACE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class PgDatabases:
    """Creates uniquely named databases on the test server and drops exactly those."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self) -> str:
        name = "gradtrace_store_" + uuid.uuid4().hex[:10]
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        with self.admin.connect() as c:
            for name in self.created:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    try:
        with dbs.admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # the Makefile starts it; say so instead of failing obscurely
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} not reachable ({exc}); run `make postgres`")
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_databases: PgDatabases) -> str:
    """One migrated PostgreSQL database shared by the session (tests use unique run ids)."""
    url = pg_databases.create()
    s = open_store(url, check_schema=False)
    s.upgrade()
    s.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "store.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def uid() -> Callable[[str], str]:
    """Unique run/batch ids, so tests sharing the PostgreSQL database never collide."""
    tag = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{tag}"
