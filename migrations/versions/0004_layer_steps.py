"""Per-layer sums of each step (``layer_steps``), read by the run page's plots.

Creates the table and fills it for the runs already stored, from ``var_steps``
and ``state_steps`` (``gradtrace.store._layers.rebuild_all``, the same code that
rebuilds a run when its inventory changes; it only reads tables that exist at
this revision and writes the columns created here).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "layer_steps",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("grad_sq", sa.LargeBinary(), nullable=True),
        sa.Column("update_sq", sa.LargeBinary(), nullable=True),
        sa.Column("weight_sq", sa.LargeBinary(), nullable=True),
        sa.Column("state_sq", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_layer_steps_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "step", name=op.f("pk_layer_steps")),
        sqlite_with_rowid=False,
    )
    if not op.get_context().as_sql:
        from gradtrace.store import _layers

        n = _layers.rebuild_all(op.get_bind())
        logging.getLogger("gradtrace.store.migrate").info("layer_steps filled for %d runs", n)


def downgrade() -> None:
    op.drop_table("layer_steps")
