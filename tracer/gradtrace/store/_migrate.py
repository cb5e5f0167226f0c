"""Alembic plumbing: where the migrations are, current vs head, upgrade.

The migrations ship as the package ``gradtrace_migrations`` (the repository's
``migrations/`` folder); the Alembic config is built in code so neither the
CLI nor the server needs an ``alembic.ini`` in the working directory.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

logger = logging.getLogger("gradtrace.store.migrate")


def migrations_dir() -> Path:
    """The directory holding Alembic's ``env.py`` and ``versions/``."""
    spec = importlib.util.find_spec("gradtrace_migrations")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if (Path(loc) / "env.py").is_file():
                return Path(loc)
    # A source checkout run with PYTHONPATH=tracer: the folder beside tracer/.
    here = Path(__file__).resolve().parents[3] / "migrations"
    if (here / "env.py").is_file():
        return here
    raise FileNotFoundError("gradtrace_migrations not found; reinstall gradtrace")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` for our migrations, optionally bound to ``connection``."""
    from alembic.config import Config

    d = migrations_dir()
    cfg = Config(str(d / "alembic.ini")) if (d / "alembic.ini").is_file() else Config()
    cfg.set_main_option("script_location", str(d))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest migration this gradtrace ships."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade_connection(conn: Connection, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on ``conn`` (inside its transaction)."""
    from alembic import command

    command.upgrade(alembic_config(connection=conn), revision)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database behind ``engine``; returns (revision before, revision after)."""
    # A write transaction (BEGIN IMMEDIATE on SQLite): two processes opening a new
    # file migrate it once, the second waits and then finds it at head.
    with engine.connect() as conn, conn.execution_options(gradtrace_write=True).begin():
        before = current_revision(conn)
        upgrade_connection(conn, revision)
        after = current_revision(conn)
    if before != after:
        logger.info("upgraded %s from %s to %s", engine.url.render_as_string(), before, after)
    return before, after


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Undo migrations down to ``revision`` ("base" = empty); returns (before, after)."""
    from alembic import command

    with engine.connect() as conn, conn.execution_options(gradtrace_write=True).begin():
        before = current_revision(conn)
        command.downgrade(alembic_config(connection=conn), revision)
        after = current_revision(conn)
    return before, after
