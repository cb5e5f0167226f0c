"""Batch -> rows, in one transaction, idempotent by ``batch_id``.

Policies (documented in the store's README section):

- A batch id seen before is acknowledged (``stored=False``) and nothing is
  written; concurrent resends are decided by the ``batches`` primary key.
- The run's metadata keeps the copy with the highest ``revision`` (equal
  revisions: the later arrival wins); a late old batch never downgrades it.
  A run never changes project: a batch claiming another project is refused.
- A step number already stored for the run by another batch is replaced by the
  new batch (last write wins), with its variables, state and tensors.
- Rows never go through ORM objects: the per-step tables as encoded tuples straight
  on the driver (SQLite ``executemany``; PostgreSQL ``COPY``, binary for the tables of
  numbers), the others with Core ``insert()`` + a list of dicts.
- A batch's steps arrive as records (schema version 1, or the tracer's own objects) or
  as columns (version 2); both give the same rows.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from itertools import repeat
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Double,
    Integer,
    LargeBinary,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from gradtrace import schema
from gradtrace.store import _layers
from gradtrace.store import models as m
from gradtrace.store._types import IngestResult, InvalidInput

logger = logging.getLogger("gradtrace.store.ingest")

_DELETE_CHUNK = 500


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``"NaN"``/``"Infinity"``/``"-Infinity"``
    (PostgreSQL's JSON refuses bare NaN; the strings match the wire format)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if obj != obj:
            return "NaN"
        return "Infinity" if obj > 0 else "-Infinity"
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_text(obj: Any) -> str | None:
    """``obj`` as the JSON text a JSON column stores (``None`` stays SQL NULL).

    A list of finite floats (a step's data fingerprints, two per step) is joined
    directly, as the encoder would write it; else the C encoder; only data that
    holds NaN/Inf takes the :func:`json_safe` walk.
    """
    if obj is None:
        return None
    if type(obj) is list and all(type(x) is float and _isfinite(x) for x in obj):
        return "[" + ",".join(map(float.__repr__, obj)) + "]"
    try:
        return _JSON.encode(obj)
    except ValueError:
        return _JSON.encode(json_safe(obj))


_isfinite = math.isfinite


# One encoder: json.dumps with non-default arguments builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _sketch_bytes(sketch: list[float] | None) -> bytes | None:
    if sketch is None:
        return None
    return np.asarray(sketch, dtype="<f4").tobytes()


def _validate(batch: schema.Batch) -> None:
    """Refuse what the tables cannot hold, naming the field, before writing anything."""
    seen: set[int] = set()
    for i, rec in enumerate(batch.steps):
        # The schema bounds these; records built without validation (model_construct)
        # are checked here, as PostgreSQL's binary COPY would wrap an int4 around.
        if not 0 <= rec.step <= schema.MAX_STEP:
            raise InvalidInput(f"steps[{i}].step", f"must be in 0..{schema.MAX_STEP}")
        if rec.step in seen:
            raise InvalidInput(f"steps[{i}].step", f"step {rec.step} appears twice in the batch")
        seen.add(rec.step)
        if rec.vars:  # a light step lists few or no variables
            _unique_vars(f"steps[{i}].vars", rec.vars)
        if rec.state:
            _unique_vars(f"steps[{i}].state", rec.state)
    keys: set[tuple[int, int, str]] = set()
    for i, t in enumerate(batch.tensors):
        key = (t.step, t.v, t.kind)
        if key in keys:
            raise InvalidInput(f"tensors[{i}]", f"tensor {key} appears twice")
        keys.add(key)
        if any(d < 0 for d in t.shape):
            raise InvalidInput(f"tensors[{i}].shape", "dimensions must be >= 0")
    for i, var in enumerate(batch.run.variables):
        if var.index != i:
            raise InvalidInput(f"run.variables[{i}].index", f"expected {i} (inventory order)")
    for i, layer in enumerate(batch.run.layers):
        if layer.index != i:
            raise InvalidInput(f"run.layers[{i}].index", f"expected {i} (inventory order)")


def _unique_vars(field: str, records: Any) -> None:
    """Refuse a variable listed twice in one step's records (list or column form)."""
    if isinstance(records, (schema.VarColumns, schema.StateColumns)):
        vs: list[int] = records.v
        at = f"{field}.v[{{}}]"
    else:
        vs = [r.v for r in records]
        at = f"{field}[{{}}].v"
    if not vs or (len(set(vs)) == len(vs) and min(vs) >= 0 and max(vs) < schema.MAX_VARS):
        return
    seen: set[int] = set()
    for j, v in enumerate(vs):
        if not 0 <= v < schema.MAX_VARS:
            raise InvalidInput(at.format(j), f"must be in 0..{schema.MAX_VARS - 1}")
        if v in seen:
            raise InvalidInput(at.format(j), f"variable {v} appears twice")
        seen.add(v)


def _tensor_bytes(i: int, t: schema.TensorRecord) -> bytes:
    try:
        data = base64.b64decode(t.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"tensors[{i}].data", f"not base64: {exc}") from None
    expected = 4 * math.prod(t.shape)
    if len(data) != expected:
        raise InvalidInput(
            f"tensors[{i}].data", f"{len(data)} bytes, shape {t.shape} needs {expected}"
        )
    return data


def _run_meta(info: schema.RunInfo) -> dict[str, Any]:
    meta: dict[str, Any] = json_safe(info.model_dump(mode="json", exclude={"variables", "layers"}))
    return meta


def _run_columns(info: schema.RunInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "status": info.status,
        "started_at": info.started_at,
        "ended_at": info.ended_at,
        "revision": info.revision,
        "keras_flavour": info.keras_flavour,
        "execution_mode": info.execution_mode,
        "partial": info.partial,
        "meta": _run_meta(info),
    }


def _insert_ignore(conn: Connection, table: Any, values: dict[str, Any], key: str) -> None:
    """INSERT ... ON CONFLICT (key) DO NOTHING on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=[key]))


def project_id(conn: Connection, name: str, create: bool = True) -> int | None:
    """The id of project ``name`` (created when missing and ``create``)."""
    p = m.Project.__table__
    pid = conn.execute(select(p.c.id).where(p.c.name == name)).scalar()
    if pid is None and create:
        _insert_ignore(conn, p, {"name": name, "created_at": datetime.now(timezone.utc)}, "name")
        pid = conn.execute(select(p.c.id).where(p.c.name == name)).scalar_one()
    return pid


def _upsert_run(conn: Connection, info: schema.RunInfo) -> tuple[int, _layers.Groups]:
    """Insert or update the run; returns its key and its layer grouping (after this batch's
    inventory). A grouping changed by the new inventory rebuilds the run's ``layer_steps``."""
    r = m.Run.__table__
    row = conn.execute(
        select(r.c.id, r.c.revision, r.c.project_id).where(r.c.uid == info.run_id)
    ).first()
    pid = project_id(conn, info.project)
    if row is None:
        _insert_ignore(
            conn, r, {"uid": info.run_id, "project_id": pid, "num_steps": 0, **_run_columns(info)}, "uid"
        )
        row = conn.execute(
            select(r.c.id, r.c.revision, r.c.project_id).where(r.c.uid == info.run_id)
        ).one()
        fresh = True
    else:
        fresh = False
    run_key, revision, run_project = row
    if run_project != pid:
        raise InvalidInput("run.project", f"run {info.run_id!r} belongs to another project")
    if not fresh and info.revision >= revision:
        conn.execute(update(r).where(r.c.id == run_key).values(**_run_columns(info)))
    if (fresh or info.revision >= revision) and (info.variables or info.layers):
        # The inventory is re-sent with every batch and mostly unchanged: compare it with
        # the stored one and rewrite only what differs (each table is replaced whole).
        old_vars, old_layers = ([], []) if fresh else _stored_inventory(conn, run_key)
        new_vars = [_variable_row(v) for v in info.variables] if info.variables else old_vars
        new_layers = [_layer_row(layer) for layer in info.layers] if info.layers else old_layers
        _replace_inventory(conn, run_key, new_vars if new_vars != old_vars else None,
                           new_layers if new_layers != old_layers else None)
        grouping = _grouping(new_vars, new_layers)
        if not fresh and _grouping(old_vars, old_layers).of != grouping.of:
            logger.info("run %d: inventory regroups its variables; rebuilding layer_steps", run_key)
            _layers.rebuild(conn, run_key, grouping)
    else:
        grouping = _layers.groups(conn, run_key)
    return int(run_key), grouping


# Inventory rows as stored, in column order (the comparison with a re-sent inventory).
_VARIABLE_COLS = ("idx", "name", "path", "shape", "dtype", "trainable", "layer", "layer_class",
                  "layer_index", "struct_key")
_LAYER_INV_COLS = ("idx", "name", "class_name", "training_dependent", "struct_key")


def _variable_row(v: schema.VariableInfo) -> tuple[Any, ...]:
    return (v.index, v.name, v.path, list(v.shape), v.dtype, v.trainable, v.layer, v.layer_class,
            v.layer_index, v.struct_key)


def _layer_row(layer: schema.LayerInfo) -> tuple[Any, ...]:
    return (layer.index, layer.name, layer.class_name, layer.training_dependent, layer.struct_key)


def _stored_inventory(conn: Connection, run_key: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    vt, lt = m.Variable.__table__, m.Layer.__table__
    variables = conn.execute(
        select(*(vt.c[c] for c in _VARIABLE_COLS)).where(vt.c.run_id == run_key).order_by(vt.c.idx)
    ).all()
    layers = conn.execute(
        select(*(lt.c[c] for c in _LAYER_INV_COLS)).where(lt.c.run_id == run_key).order_by(lt.c.idx)
    ).all()
    return [tuple(r) for r in variables], [tuple(r) for r in layers]


def _grouping(variables: list[tuple[Any, ...]], layers: list[tuple[Any, ...]]) -> _layers.Groups:
    """:func:`_layers.groups` of an inventory held as rows (the same function of it)."""
    names = {int(r[0]): r[1] for r in layers}
    return _layers.variable_groups([(r[0], r[1], r[6], r[8]) for r in variables], names)


def _replace_inventory(
    conn: Connection, run_key: int,
    variables: list[tuple[Any, ...]] | None, layers: list[tuple[Any, ...]] | None,
) -> None:
    """Replace the run's variables and/or layers (None: keep that table's rows)."""
    for table, cols, rows in ((m.Variable.__table__, _VARIABLE_COLS, variables),
                              (m.Layer.__table__, _LAYER_INV_COLS, layers)):
        if rows is None:
            continue
        conn.execute(delete(table).where(table.c.run_id == run_key))
        if rows:
            conn.execute(insert(table), [{"run_id": run_key, **dict(zip(cols, r, strict=True))} for r in rows])


def _chunks(seq: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _drop_steps(conn: Connection, run_key: int, steps: list[int]) -> int:
    """Delete already stored rows of these steps (last write wins); returns how many steps."""
    if not steps:
        return 0
    st = m.Step.__table__
    lo, hi = min(steps), max(steps)
    existing = set(
        conn.execute(
            select(st.c.step).where(st.c.run_id == run_key, st.c.step >= lo, st.c.step <= hi)
        ).scalars()
    )
    overlap = sorted(existing.intersection(steps))
    if overlap:
        logger.info("run %d: replacing %d already stored steps", run_key, len(overlap))
        for chunk in _chunks(overlap, _DELETE_CHUNK):
            for table in (m.VarStep.__table__, m.StateStep.__table__, m.LayerStep.__table__, m.Tensor.__table__, st):
                conn.execute(delete(table).where(table.c.run_id == run_key, table.c.step.in_(chunk)))
    return len(overlap)


_VAR_COLS = ("run_id", "step", "v", "grad", "norm", "mean", "min", "max", "nonfinite", "applied",
             "update_norm", "weight_norm", "sketch")
_STATE_COLS = ("run_id", "step", "v", "changed", "delta_norm", "rng")
_LAYER_COLS = ("run_id", "step", *_layers.SUMS)
_STEP_COLS = ("run_id", "step", "wall_time", "mode", "loss", "target_shape", "loss_scale", "skipped",
              "reg_loss", "batch_size", "lr", "iterations", "x_fp", "y_fp", "y_pred_shape", "loss_info",
              "broadcasts", "modes", "frozen", "grad_norm", "n_grad", "n_applied", "n_changed", "nonfinite")
# Always written: the key and the NOT NULL column; the others only when some step has them.
_VAR_ALWAYS = ("run_id", "step", "v", "grad")
_FLOAT_VAR_COLS = frozenset(("norm", "mean", "min", "max", "update_norm", "weight_norm"))
_LAYER_STATE_AT = tuple(_STATE_COLS.index(c) for c in _layers.STATE_INPUT)


def _var_cols_of(records: list[schema.StepRecord]) -> tuple[str, ...]:
    """The var_steps columns a batch writes: every column when a step sends its variables
    as records (list form); else the columns that some step sent. The others are NULL
    either way (no default), and not binding them makes SQLite's insert ~35% cheaper."""
    present: set[str] = set()
    for rec in records:
        vs = rec.vars
        if isinstance(vs, schema.VarColumns):
            if vs.v:
                present.update(k for k, col in vs.__dict__.items() if col is not None)
        elif vs:
            return _VAR_COLS
    return tuple(c for c in _VAR_COLS if c in _VAR_ALWAYS or c in present)


def _layer_var_at(cols: tuple[str, ...]) -> tuple[int | None, ...]:
    """Where _layers.layer_rows finds its inputs in rows of ``cols`` (None: all NULL)."""
    return tuple(cols.index(c) if c in cols else None for c in _layers.VAR_INPUT)


def _nan_text(x: float | None) -> float | str | None:
    # models.FloatND's SQLite encoding, inlined for the bulk path
    return "NaN" if x is not None and x != x else x


def _same(x: float | None) -> float | str | None:
    return x


def _loss_info_text(li: schema.LossInfo) -> str:
    return li.model_dump_json()  # non-finite floats as the wire's strings, like json_safe


def _broadcasts_text(bs: list[schema.Broadcast]) -> str | None:
    return json_text([b.model_dump(mode="json") for b in bs] or None)


def _modes_text(modes: dict[str, bool | None]) -> str | None:
    return json_text(modes or None)


def _step_rows(
    run_key: int, records: list[schema.StepRecord], sqlite: bool, var_cols: tuple[str, ...] = _VAR_COLS
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows of steps, var_steps and state_steps: tuples in ``_STEP_COLS``, ``var_cols``
    (:func:`_var_cols_of`) and ``_STATE_COLS`` order, floats and JSON already encoded
    for the backend (the bulk path skips SQLAlchemy's per-row processing: measured 2x
    cheaper per step)."""
    enc = _nan_text if sqlite else _same
    steps: list[tuple[Any, ...]] = []
    js = json_text
    # The tracer's records of one layout share their fixed fields (modes, shapes, the
    # loss description): each distinct object is encoded once per batch. Keyed by id:
    # the records hold those objects for as long as this function runs.
    memo: dict[tuple[Any, int], str | None] = {}

    def shared(obj: Any, encode: Any) -> str | None:
        key = (encode, id(obj))
        if key in memo:
            return memo[key]
        text = memo[key] = encode(obj)
        return text

    var_rows: list[tuple[Any, ...]] = []
    state_rows: list[tuple[Any, ...]] = []
    # Consecutive records mostly hold the very same objects: their texts are reused as a whole.
    seen: tuple[Any, ...] = (object(),) * 5
    texts: tuple[str | None, ...] = ()
    for rec in records:
        s = rec.step
        ts, yp, bc, md, fr = rec.target_shape, rec.y_pred_shape, rec.broadcasts, rec.modes, rec.frozen
        if ts is not seen[0] or yp is not seen[1] or bc is not seen[2] or md is not seen[3] or fr is not seen[4]:
            seen = (ts, yp, bc, md, fr)
            texts = (shared(ts, js), shared(yp, js), shared(bc, _broadcasts_text), shared(md, _modes_text),
                     shared(fr, js))
        if isinstance(rec.vars, schema.VarColumns):
            derived = _var_column_rows(run_key, s, rec.vars, var_cols, var_rows, sqlite)
        else:
            derived = _var_record_rows(run_key, s, rec.vars, var_rows, enc)
        if isinstance(rec.state, schema.StateColumns):
            n_changed = _state_column_rows(run_key, s, rec.state, state_rows, sqlite)
        else:
            n_changed = 0
            for st in rec.state:
                state_rows.append((run_key, s, st.v, st.changed, enc(st.delta_norm), st.rng))
                if st.changed and not st.rng:
                    n_changed += 1
        grad_norm, n_grad, n_applied, nonfinite = derived
        li = rec.loss_info
        steps.append((
            run_key, s, enc(rec.wall_time), rec.mode, enc(rec.loss), texts[0],
            enc(rec.loss_scale), rec.skipped, enc(rec.reg_loss), rec.batch_size, enc(rec.lr),
            rec.iterations, js(rec.x_fp), js(rec.y_fp), texts[1],
            shared(li, _loss_info_text) if li is not None else None,
            texts[2], texts[3], texts[4],
            enc(grad_norm),
            rec.n_grad if rec.n_grad is not None else n_grad,
            n_applied,
            n_changed if rec.state else None,
            nonfinite,
        ))
    return steps, var_rows, state_rows


_Derived = tuple[float | None, int | None, int | None, int | None]


def _var_record_rows(
    run_key: int, s: int, records: list[schema.VarStep], var_rows: list[tuple[Any, ...]], enc: Any
) -> _Derived:
    """Append the var_steps rows of one step's records; returns the step's derived
    (grad_norm, n_grad, n_applied, nonfinite)."""
    sq = 0.0
    have_norm = False
    n_grad = n_applied = 0
    nonfinite = 0
    for var in records:
            var_rows.append(
                (
                    run_key, s, var.v, var.grad, enc(var.norm), enc(var.mean), enc(var.min),
                    enc(var.max), var.nonfinite, var.applied, enc(var.update_norm),
                    enc(var.weight_norm), _sketch_bytes(var.sketch),
                )
            )
            if var.grad:
                n_grad += 1
            if var.applied:
                n_applied += 1
            if var.norm is not None:
                have_norm = True
                sq += var.norm * var.norm
            if var.nonfinite:
                nonfinite += var.nonfinite
    return (
        math.sqrt(sq) if have_norm else None,
        n_grad if records else None,
        # steps between two full ones carry no per-variable numbers: not 0 applied, unknown
        n_applied if any(v.applied is not None for v in records) else None,
        nonfinite if any(v.nonfinite is not None for v in records) else None,
    )


def _float_column(col: list[float | None] | None, n: int, sqlite: bool) -> Any:
    """A float column as stored: all NULL when absent; on SQLite NaN as 'NaN'."""
    if col is None:
        return repeat(None, n)
    if sqlite:
        # numpy reads None as NaN too: a real NaN shows as more NaNs than Nones
        if int(np.count_nonzero(np.isnan(np.array(col, dtype=np.float64)))) > col.count(None):
            return [_nan_text(x) for x in col]
    return col


def _var_column_rows(
    run_key: int, s: int, cols: schema.VarColumns, names: tuple[str, ...],
    var_rows: list[tuple[Any, ...]], sqlite: bool,
) -> _Derived:
    """:func:`_var_record_rows` for the column form: rows of the columns ``names``,
    zipped from the lists."""
    n = len(cols.v)
    if n == 0:
        return None, None, None, None
    grad, norm, applied, nonfinite = cols.grad, cols.norm, cols.applied, cols.nonfinite
    parts: list[Any] = [repeat(run_key, n), repeat(s, n), cols.v, repeat(True, n) if grad is None else grad]
    for name in names[4:]:
        col = cols.__dict__[name]
        if name in _FLOAT_VAR_COLS:
            parts.append(_float_column(col, n, sqlite))
        elif col is None:
            parts.append(repeat(None, n))
        elif name == "sketch":
            parts.append(map(_sketch_bytes, col))
        else:
            parts.append(col)
    # the repeats are endless, the lists all have n entries (validated)
    var_rows.extend(zip(*parts, strict=False))
    grad_norm = None
    if norm is not None and norm.count(None) < n:
        sq = 0.0
        for x in norm:  # the same sum, in the same order, as the record form
            if x is not None:
                sq += x * x
        grad_norm = math.sqrt(sq)
    return (
        grad_norm,
        n if grad is None else grad.count(True),
        applied.count(True) if applied is not None and applied.count(None) < n else None,
        sum(x for x in nonfinite if x) if nonfinite is not None and nonfinite.count(None) < n else None,
    )


def _state_column_rows(
    run_key: int, s: int, cols: schema.StateColumns, state_rows: list[tuple[Any, ...]], sqlite: bool
) -> int:
    """The state_steps rows of one step's columns; returns its count of non-RNG changes."""
    n = len(cols.v)
    rng = cols.rng
    state_rows.extend(zip(
        repeat(run_key, n), repeat(s, n), cols.v, cols.changed,
        _float_column(cols.delta_norm, n, sqlite), repeat(False, n) if rng is None else rng,
        strict=False,
    ))
    if rng is None:
        return cols.changed.count(True)
    return sum(1 for c, r in zip(cols.changed, rng, strict=True) if c and not r)


# PostgreSQL type of each SQLAlchemy column type of the tables copied in binary form
# (binary COPY needs the exact type: an int4 column refuses int8 data).
_PG_BINARY = {Integer: "int4", BigInteger: "int8", Boolean: "bool", Double: "float8", LargeBinary: "bytea"}
_BINARY_TABLES = (m.VarStep.__tablename__, m.StateStep.__tablename__, m.LayerStep.__tablename__)


@functools.cache
def _binary_types(table: str, cols: tuple[str, ...]) -> list[str] | None:
    """The binary COPY types of ``cols`` of ``table``, or None to copy it as text."""
    if table not in _BINARY_TABLES:
        return None
    columns = m.Base.metadata.tables[table].c
    out = []
    for c in cols:
        t = columns[c].type
        impl = getattr(t, "impl", t)  # FloatND -> Double
        out.append(_PG_BINARY[type(impl) if not isinstance(impl, type) else impl])
    return out


def _bulk_tuples(conn: Connection, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """executemany straight on the driver: for the two big tables SQLAlchemy's
    per-row parameter processing cost more than the database's own insert work
    (measured with bench/bench_store.py); values arrive already encoded."""
    if not rows:
        return
    names = ", ".join(f'"{c}"' for c in cols)
    if conn.dialect.name == "postgresql":
        # COPY: PostgreSQL's bulk path, inside the batch's transaction like any insert.
        # The all-scalar tables go in binary: no float formatting here, no float parsing
        # in the server (measured 2x cheaper for var_steps); NaN/Inf travel as IEEE bits.
        types = _binary_types(table, cols)
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if types is None:
                with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
        finally:
            cur.close()
        return
    mark = "?"
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join([mark] * len(cols))})"
    conn.exec_driver_sql(sql, rows)


def _bulk(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(table), rows)


def ingest(conn: Connection, batch: schema.Batch) -> IngestResult:
    """Write ``batch`` on ``conn``, which must be inside a transaction the caller owns.

    Raises :class:`IntegrityError` from the ``batches`` insert when another
    writer stored the same batch id first (the caller rolls back and reports
    ``stored=False``); :class:`InvalidInput` names a field the store refuses.
    """
    _validate(batch)
    tensor_data = [_tensor_bytes(i, t) for i, t in enumerate(batch.tensors)]
    bt = m.IngestedBatch.__table__
    if conn.execute(select(bt.c.batch_id).where(bt.c.batch_id == batch.batch_id)).first():
        return IngestResult(stored=False, run_id=batch.run.run_id, steps=0)

    run_key, grouping = _upsert_run(conn, batch.run)
    # The ledger row first: a concurrent resend of this batch fails here, before bulk work.
    conn.execute(
        insert(bt).values(
            batch_id=batch.batch_id,
            run_id=run_key,
            received_at=datetime.now(timezone.utc),
            n_steps=len(batch.steps),
        )
    )
    step_numbers = [rec.step for rec in batch.steps]
    replaced = _drop_steps(conn, run_key, step_numbers)
    in_batch = set(step_numbers)
    tensor_keys = [(t.step, t.v, t.kind) for t in batch.tensors if t.step not in in_batch]
    tt = m.Tensor.__table__
    for step, v, kind in tensor_keys:  # tensors of steps stored by an earlier batch
        conn.execute(
            delete(tt).where(tt.c.run_id == run_key, tt.c.step == step, tt.c.v == v, tt.c.kind == kind)
        )
    sqlite = conn.dialect.name == "sqlite"
    var_cols = _var_cols_of(batch.steps)
    steps, var_rows, state_rows = _step_rows(run_key, batch.steps, sqlite, var_cols)
    layer_rows = _layers.layer_rows(run_key, var_rows, state_rows, grouping, _layer_var_at(var_cols), _LAYER_STATE_AT)
    _bulk_tuples(conn, m.Step.__tablename__, _STEP_COLS, steps)
    _bulk_tuples(conn, m.VarStep.__tablename__, var_cols, var_rows)
    _bulk_tuples(conn, m.StateStep.__tablename__, _STATE_COLS, state_rows)
    _bulk_tuples(conn, m.LayerStep.__tablename__, _LAYER_COLS, [tuple(r[c] for c in _LAYER_COLS) for r in layer_rows])
    _bulk(
        conn,
        tt,
        [
            {"run_id": run_key, "step": t.step, "v": t.v, "kind": t.kind, "shape": t.shape, "data": d}
            for t, d in zip(batch.tensors, tensor_data, strict=True)
        ],
    )
    added = len(step_numbers) - replaced
    if added:
        r = m.Run.__table__
        conn.execute(update(r).where(r.c.id == run_key).values(num_steps=r.c.num_steps + added))
    return IngestResult(stored=True, run_id=batch.run.run_id, steps=len(step_numbers))


__all__ = ["IntegrityError", "ingest", "json_safe", "project_id"]
