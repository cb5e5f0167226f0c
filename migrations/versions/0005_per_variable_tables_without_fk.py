"""``var_steps`` and ``state_steps`` without a foreign key to ``runs``.

On PostgreSQL the key is checked by a trigger for every inserted row: for a batch
of 200 steps x 50 variables that check took 35% of the COPY (measured), more than
the two indexes. Both tables are written only by the store's ingest, inside the
transaction that inserted or locked the run row, and are deleted with the run
(``_query.delete_run``), so the key checked nothing those paths do not already
guarantee. ``steps``, ``layer_steps`` and the other tables keep theirs.

SQLite cannot drop a constraint in place: the two tables are rebuilt (rows,
WITHOUT ROWID and indexes kept), once, when the file is upgraded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("var_steps", "state_steps")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, table_kwargs={"sqlite_with_rowid": False}) as batch_op:
            batch_op.drop_constraint(op.f(f"fk_{table}_run_id_runs"), type_="foreignkey")


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, table_kwargs={"sqlite_with_rowid": False}) as batch_op:
            batch_op.create_foreign_key(op.f(f"fk_{table}_run_id_runs"), "runs", ["run_id"], ["id"])
