"""Tables of the gradtrace store: one schema for SQLite and PostgreSQL.

The two big tables (``var_steps``, ``state_steps``) carry a surrogate integer run
key so their rows stay narrow. ``var_steps`` has two read paths, each served by
an index: "one variable's series" (the primary key ``(run_id, v, step)``, which
also orders SQLite's storage) and "one run, a range of steps"
(``ix_var_steps_steps`` on ``(run_id, step, v)``).

Floats go through :class:`FloatND`: PostgreSQL ``double precision`` holds NaN
and +-Inf natively, SQLite turns a bound NaN into NULL, so there NaN is stored
as the text ``'NaN'`` in the REAL column and decoded on read. NULL always means
"not recorded".
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_NAN_TEXT = "NaN"


def _encode_nan(value: Any) -> Any:
    if value is not None and value != value:  # NaN is the only value unequal to itself
        return _NAN_TEXT
    return value


def _decode_nan(value: Any) -> Any:
    if isinstance(value, str):
        return float(value)  # 'NaN' (and any numeric text a foreign writer left)
    return value


class FloatND(TypeDecorator[float]):
    """A double that keeps NaN and +-Inf on every backend (NULL stays "not recorded")."""

    impl = Double
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return _encode_nan
        return None

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "sqlite":
            return _decode_nan
        return None


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)


# Nullable JSON columns: Python None is SQL NULL ("not recorded"), not the JSON 'null'.
JSONN = JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base; the naming convention keeps constraint names stable across backends."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Run(Base):
    __tablename__ = "runs"
    # Listing a project's runs newest first (added by migration 0002).
    __table_args__ = (Index("ix_runs_project_started", "project_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revision: Mapped[int] = mapped_column(Integer, default=0)
    num_steps: Mapped[int] = mapped_column(Integer, default=0)
    keras_flavour: Mapped[str | None] = mapped_column(String(16))
    execution_mode: Mapped[str | None] = mapped_column(String(32))
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    # The RunInfo minus variables/layers, JSON-safe (non-finite floats as strings).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)


class Variable(Base):
    __tablename__ = "variables"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    shape: Mapped[list[int | None]] = mapped_column(JSON)
    dtype: Mapped[str] = mapped_column(String(32))
    trainable: Mapped[bool] = mapped_column(Boolean)
    layer: Mapped[str | None] = mapped_column(Text)
    layer_class: Mapped[str | None] = mapped_column(String(200))
    layer_index: Mapped[int | None] = mapped_column(Integer)
    struct_key: Mapped[str | None] = mapped_column(Text)


class Layer(Base):
    __tablename__ = "layers"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    class_name: Mapped[str] = mapped_column(String(200))
    training_dependent: Mapped[bool] = mapped_column(Boolean)
    struct_key: Mapped[str | None] = mapped_column(Text)


class Step(Base):
    """One optimizer step. The last five columns are derived at ingest from the
    step's variables so that listings never scan ``var_steps``."""

    __tablename__ = "steps"
    # SQLite: store rows in primary-key order, so a range of steps is one sequential read.
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    wall_time: Mapped[float | None] = mapped_column(FloatND())
    mode: Mapped[str | None] = mapped_column(String(32))
    loss: Mapped[float | None] = mapped_column(FloatND())
    target_shape: Mapped[Any] = mapped_column(JSONN, nullable=True)
    loss_scale: Mapped[float | None] = mapped_column(FloatND())
    skipped: Mapped[bool | None] = mapped_column(Boolean)
    reg_loss: Mapped[float | None] = mapped_column(FloatND())
    batch_size: Mapped[int | None] = mapped_column(Integer)
    lr: Mapped[float | None] = mapped_column(FloatND())
    iterations: Mapped[int | None] = mapped_column(BigInteger)
    x_fp: Mapped[Any] = mapped_column(JSONN, nullable=True)
    y_fp: Mapped[Any] = mapped_column(JSONN, nullable=True)
    y_pred_shape: Mapped[Any] = mapped_column(JSONN, nullable=True)
    loss_info: Mapped[Any] = mapped_column(JSONN, nullable=True)
    broadcasts: Mapped[Any] = mapped_column(JSONN, nullable=True)
    modes: Mapped[Any] = mapped_column(JSONN, nullable=True)
    # Names of the training-dependent layers that ran frozen (added by migration 0003;
    # NULL for steps stored before it, a list, possibly empty, after).
    frozen: Mapped[Any] = mapped_column(JSONN, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(FloatND())  # sqrt(sum of squared norms)
    n_grad: Mapped[int | None] = mapped_column(Integer)
    n_applied: Mapped[int | None] = mapped_column(Integer)
    n_changed: Mapped[int | None] = mapped_column(Integer)
    nonfinite: Mapped[int | None] = mapped_column(BigInteger)


class VarStep(Base):
    """One variable at one step. ``run_id`` is not a foreign key (migration 0005), nor is
    it in ``state_steps``: PostgreSQL checked it with a trigger per row, a third of the
    bulk insert, and the store's ingest (the only writer, inside the transaction that
    holds the run row) and ``delete_run`` already keep it pointing at a run."""

    __tablename__ = "var_steps"
    # SQLite stores a WITHOUT ROWID table in primary-key order. Clustering by
    # variable makes "one variable's series" a contiguous read (measured 12x faster
    # than through a secondary index) while "a range of steps" goes through
    # ix_var_steps_steps, or per-variable seeks of the primary key (about as fast).
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "v", "step"),
        Index("ix_var_steps_steps", "run_id", "step", "v"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # runs.id, unchecked
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    v: Mapped[int] = mapped_column(Integer, primary_key=True)
    grad: Mapped[bool] = mapped_column(Boolean)
    norm: Mapped[float | None] = mapped_column(FloatND())
    mean: Mapped[float | None] = mapped_column(FloatND())
    min: Mapped[float | None] = mapped_column(FloatND())
    max: Mapped[float | None] = mapped_column(FloatND())
    nonfinite: Mapped[int | None] = mapped_column(BigInteger)
    applied: Mapped[bool | None] = mapped_column(Boolean)
    update_norm: Mapped[float | None] = mapped_column(FloatND())
    weight_norm: Mapped[float | None] = mapped_column(FloatND())
    sketch: Mapped[bytes | None] = mapped_column(LargeBinary)  # little-endian float32


class LayerStep(Base):
    """Per-layer sums of one step, derived at ingest (migration 0004), so that the run
    page's per-layer plots read one short row per step instead of grouping ``var_steps``.

    Each value column is a little-endian float64 array indexed by layer (the groups
    of :func:`gradtrace.store._layers.variable_groups`, in inventory order). A sum
    is over the layer's variables whose values are finite; NaN marks a layer to
    which no variable contributed (sums of finite squares are never NaN), NULL a
    step where no layer had any. Rebuilt when the run's inventory regroups.
    """

    __tablename__ = "layer_steps"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    grad_sq: Mapped[bytes | None] = mapped_column(LargeBinary)  # sum |g_v|^2 (the gradient reached the optimizer)
    update_sq: Mapped[bytes | None] = mapped_column(LargeBinary)  # sum |dw_v|^2 where |w_v| is finite too
    weight_sq: Mapped[bytes | None] = mapped_column(LargeBinary)  # sum |w_v|^2, the same variables
    state_sq: Mapped[bytes | None] = mapped_column(LargeBinary)  # sum |delta|^2 of non-RNG state


class StateStep(Base):
    __tablename__ = "state_steps"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # runs.id, unchecked
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    v: Mapped[int] = mapped_column(Integer, primary_key=True)
    changed: Mapped[bool] = mapped_column(Boolean)
    delta_norm: Mapped[float | None] = mapped_column(FloatND())
    rng: Mapped[bool] = mapped_column(Boolean)


class Tensor(Base):
    __tablename__ = "tensors"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    v: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    shape: Mapped[list[int]] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32, C order


class IngestedBatch(Base):
    """Idempotency ledger: a batch id is stored once (its primary key decides races)."""

    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    n_steps: Mapped[int] = mapped_column(Integer)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

