"""Alembic environment for gradtrace.

The connection is normally injected by gradtrace (``config.attributes["connection"]``,
as MLflow's ``mlflow/store/db_migrations/env.py`` does), so migrations run inside the
caller's transaction; otherwise the URL comes from ``-x url=...``, the ini's
``sqlalchemy.url`` or ``$GRADTRACE_URL``. SQLite gets ``render_as_batch=True``
(ALTER TABLE is limited there: Alembic copies the table instead).
"""

from __future__ import annotations

from alembic import context
from gradtrace.store import make_engine
from gradtrace.store.models import Base
from sqlalchemy import Connection

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url is not None and url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
