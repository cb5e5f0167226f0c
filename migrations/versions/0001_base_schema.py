"""Base schema: projects, runs, inventories, steps, var_steps, state_steps, tensors, batches, tokens.

The base revision. Column types are spelled as plain SQLAlchemy types (the
store's TypeDecorators change no DDL), so this file never changes with the models.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("num_steps", sa.Integer(), nullable=False),
        sa.Column("keras_flavour", sa.String(length=16), nullable=True),
        sa.Column("execution_mode", sa.String(length=32), nullable=True),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_runs_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("uid", name=op.f("uq_runs_uid")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_name"), ["name"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_tokens_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("hash", name=op.f("uq_tokens_hash")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_project_id"), ["project_id"], unique=False)

    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_batches_run_id_runs")),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_run_id"), ["run_id"], unique=False)

    op.create_table(
        "layers",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("class_name", sa.String(length=200), nullable=False),
        sa.Column("training_dependent", sa.Boolean(), nullable=False),
        sa.Column("struct_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_layers_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "idx", name=op.f("pk_layers")),
    )
    op.create_table(
        "state_steps",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("v", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("delta_norm", sa.Double(), nullable=True),
        sa.Column("rng", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_state_steps_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "step", "v", name=op.f("pk_state_steps")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "steps",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("wall_time", sa.Double(), nullable=True),
        sa.Column("mode", sa.String(length=32), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("target_shape", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("loss_scale", sa.Double(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=True),
        sa.Column("reg_loss", sa.Double(), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("lr", sa.Double(), nullable=True),
        sa.Column("iterations", sa.BigInteger(), nullable=True),
        sa.Column("x_fp", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("y_fp", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("y_pred_shape", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("loss_info", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("broadcasts", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("modes", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("grad_norm", sa.Double(), nullable=True),
        sa.Column("n_grad", sa.Integer(), nullable=True),
        sa.Column("n_applied", sa.Integer(), nullable=True),
        sa.Column("n_changed", sa.Integer(), nullable=True),
        sa.Column("nonfinite", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_steps_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "step", name=op.f("pk_steps")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tensors",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("v", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_tensors_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "step", "v", "kind", name=op.f("pk_tensors")),
    )
    op.create_table(
        "var_steps",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("v", sa.Integer(), nullable=False),
        sa.Column("grad", sa.Boolean(), nullable=False),
        sa.Column("norm", sa.Double(), nullable=True),
        sa.Column("mean", sa.Double(), nullable=True),
        sa.Column("min", sa.Double(), nullable=True),
        sa.Column("max", sa.Double(), nullable=True),
        sa.Column("nonfinite", sa.BigInteger(), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=True),
        sa.Column("update_norm", sa.Double(), nullable=True),
        sa.Column("weight_norm", sa.Double(), nullable=True),
        sa.Column("sketch", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_var_steps_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "v", "step", name=op.f("pk_var_steps")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("var_steps", schema=None) as batch_op:
        batch_op.create_index("ix_var_steps_steps", ["run_id", "step", "v"], unique=False)

    op.create_table(
        "variables",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("dtype", sa.String(length=32), nullable=False),
        sa.Column("trainable", sa.Boolean(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=True),
        sa.Column("layer_class", sa.String(length=200), nullable=True),
        sa.Column("layer_index", sa.Integer(), nullable=True),
        sa.Column("struct_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_variables_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "idx", name=op.f("pk_variables")),
    )


def downgrade() -> None:
    op.drop_table("variables")
    with op.batch_alter_table("var_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_var_steps_steps")

    op.drop_table("var_steps")
    op.drop_table("tensors")
    op.drop_table("steps")
    op.drop_table("state_steps")
    op.drop_table("layers")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_run_id"))

    op.drop_table("batches")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_project_id"))

    op.drop_table("tokens")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_name"))

    op.drop_table("runs")
    op.drop_table("projects")
