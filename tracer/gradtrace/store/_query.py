"""The read side: projects, runs, one run's steps (streamed) and series, delete.

Functions take a SQLAlchemy ``Connection`` (or the ``Engine`` for streaming, which
opens a short connection per chunk so no connection is held between chunks).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, select

from gradtrace.store import models as m
from gradtrace.store._types import (
    AmbiguousRun,
    InvalidInput,
    Page,
    ProjectSummary,
    RunDetail,
    RunNotFound,
    RunSummary,
    StoreError,
)

_R = m.Run.__table__
_P = m.Project.__table__
_S = m.Step.__table__
_V = m.VarStep.__table__
_ST = m.StateStep.__table__

#: Step-level fields ``steps(fields=...)`` accepts (besides "step").
STEP_FIELDS: tuple[str, ...] = tuple(c.name for c in _S.columns if c.name not in ("run_id", "step"))
#: Per-variable fields (rows of ``vars``).
VAR_FIELDS: tuple[str, ...] = tuple(c.name for c in _V.columns if c.name not in ("run_id", "step", "v"))
#: Per non-trainable variable fields (rows of ``state``).
STATE_FIELDS: tuple[str, ...] = ("changed", "delta_norm", "rng")
_JSON_STEP_FIELDS = {"target_shape", "x_fp", "y_fp", "y_pred_shape", "loss_info", "broadcasts", "modes", "frozen"}
_NONFINITE_TEXT = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

MAX_LIMIT = 1000
# Rows of var_steps read per chunk when streaming steps (bounds memory).
STREAM_ROWS = 20_000


def _summary_select() -> Any:
    return select(
        _R.c.uid,
        _R.c.name,
        _P.c.name.label("project"),
        _R.c.status,
        _R.c.started_at,
        _R.c.ended_at,
        _R.c.num_steps,
        _R.c.keras_flavour,
        _R.c.execution_mode,
        _R.c.partial,
    ).join(_P, _P.c.id == _R.c.project_id)


def _summary(row: Any) -> RunSummary:
    duration = None
    if row.ended_at is not None and row.started_at is not None:
        duration = (row.ended_at - row.started_at).total_seconds()
    return RunSummary(
        id=row.uid,
        name=row.name,
        project=row.project,
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration_s=duration,
        num_steps=row.num_steps,
        keras_flavour=row.keras_flavour,
        execution_mode=row.execution_mode,
        partial=bool(row.partial),
    )


def batch_exists(conn: Connection, batch_id: str) -> bool:
    bt = m.IngestedBatch.__table__
    return conn.execute(select(bt.c.batch_id).where(bt.c.batch_id == batch_id)).first() is not None


def run_key(conn: Connection, uid: str) -> int:
    """The integer key of run ``uid`` (raises :class:`RunNotFound`)."""
    key = conn.execute(select(_R.c.id).where(_R.c.uid == uid)).scalar()
    if key is None:
        raise RunNotFound(uid)
    return int(key)


def projects(conn: Connection) -> list[ProjectSummary]:
    q = (
        select(_P.c.name, func.count(_R.c.id), func.max(_R.c.started_at))
        .select_from(_P)
        .outerjoin(_R, _R.c.project_id == _P.c.id)
        .group_by(_P.c.id, _P.c.name)
        .order_by(_P.c.name)
    )
    out = []
    for name, n, last in conn.execute(q):
        if isinstance(last, str):  # SQLite's MAX() bypasses the column type
            last = datetime.fromisoformat(last)
        if last is not None and last.tzinfo is None:
            last = m._as_utc(last)
        out.append(ProjectSummary(name=name, runs=n, last_run_at=last))
    return out


def runs(
    conn: Connection,
    project: str | None = None,
    *,
    name: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[RunSummary]:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidInput("offset", "must be >= 0")
    if status is not None and status not in ("running", "finished", "failed"):
        raise InvalidInput("status", "must be one of running, finished, failed")
    conds = []
    if project is not None:
        conds.append(_P.c.name == project)
    if name is not None:
        conds.append(_R.c.name == name)
    if status is not None:
        conds.append(_R.c.status == status)
    if since is not None:
        conds.append(_R.c.started_at >= since)
    if until is not None:
        conds.append(_R.c.started_at < until)
    total = conn.execute(
        select(func.count()).select_from(_R.join(_P, _P.c.id == _R.c.project_id)).where(*conds)
    ).scalar_one()
    rows = conn.execute(
        _summary_select()
        .where(*conds)
        .order_by(_R.c.started_at.desc(), _R.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return Page[RunSummary](items=[_summary(r) for r in rows], total=total, limit=limit, offset=offset)


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def resolve(conn: Connection, ref: str, project: str | None = None) -> RunSummary:
    """uid, then run name (latest run of that name), then unique uid prefix."""
    proj = [_P.c.name == project] if project is not None else []
    row = conn.execute(_summary_select().where(_R.c.uid == ref, *proj)).first()
    if row is not None:
        return _summary(row)
    named = conn.execute(
        _summary_select().where(_R.c.name == ref, *proj).order_by(_R.c.started_at.desc(), _R.c.id.desc())
    ).all()
    if named:
        found = sorted({r.project for r in named})
        if len(found) > 1:
            raise AmbiguousRun(ref, found)
        return _summary(named[0])
    if len(ref) >= 4:
        prefixed = conn.execute(
            _summary_select()
            .where(_R.c.uid.like(_escape_like(ref) + "%", escape="\\"), *proj)
            .limit(11)
        ).all()
        if len(prefixed) == 1:
            return _summary(prefixed[0])
        if prefixed:
            raise AmbiguousRun(ref, [r.uid for r in prefixed][:10], what="runs")
    names = conn.execute(
        select(_R.c.name).join(_P, _P.c.id == _R.c.project_id).where(*proj)
        .group_by(_R.c.name).order_by(func.max(_R.c.id).desc()).limit(2000)
    ).scalars().all()
    close = difflib.get_close_matches(ref, names, n=5, cutoff=0.5)
    close += [n for n in names if ref.lower() in n.lower() and n not in close][: 5 - len(close)]
    raise RunNotFound(ref if project is None else f"{ref} (project {project})", close)


def variable_count(conn: Connection, uid: str) -> int:
    """How many variables run ``uid`` has: its inventory, or the highest index it recorded + 1."""
    key = run_key(conn, uid)
    vt = m.Variable.__table__
    counts = [conn.execute(select(func.count()).select_from(vt).where(vt.c.run_id == key)).scalar_one()]
    for table in (_V, _ST):  # MAX over the (run_id, v, ...) key: an index lookup
        top = conn.execute(select(func.max(table.c.v)).where(table.c.run_id == key)).scalar()
        if top is not None:
            counts.append(int(top) + 1)
    return int(max(counts))


def run_detail(conn: Connection, uid: str) -> RunDetail:
    row = conn.execute(_summary_select().add_columns(_R.c.id, _R.c.meta).where(_R.c.uid == uid)).first()
    if row is None:
        raise RunNotFound(uid)
    vt, lt = m.Variable.__table__, m.Layer.__table__
    variables = [
        {
            "index": r.idx,
            "name": r.name,
            "path": r.path,
            "shape": r.shape,
            "dtype": r.dtype,
            "trainable": r.trainable,
            "layer": r.layer,
            "layer_class": r.layer_class,
            "layer_index": r.layer_index,
            "struct_key": r.struct_key,
        }
        for r in conn.execute(select(vt).where(vt.c.run_id == row.id).order_by(vt.c.idx))
    ]
    layers = [
        {
            "index": r.idx,
            "name": r.name,
            "class_name": r.class_name,
            "training_dependent": r.training_dependent,
            "struct_key": r.struct_key,
        }
        for r in conn.execute(select(lt).where(lt.c.run_id == row.id).order_by(lt.c.idx))
    ]
    return RunDetail(summary=_summary(row), meta=dict(row.meta or {}), variables=variables, layers=layers)


def delete_run(conn: Connection, uid: str) -> None:
    key = run_key(conn, uid)
    for model in (m.VarStep, m.StateStep, m.LayerStep, m.Tensor, m.Step, m.Variable, m.Layer, m.IngestedBatch):
        t = model.__table__
        conn.execute(delete(t).where(t.c.run_id == key))
    conn.execute(delete(_R).where(_R.c.id == key))


def _check_range(start: int, stop: int | None) -> None:
    if start < 0:
        raise InvalidInput("start", "must be >= 0")
    if stop is not None and stop < start:
        raise InvalidInput("stop", f"must be >= start ({start})")


def _unjson_floats(values: Any) -> Any:
    if isinstance(values, list):
        return [_NONFINITE_TEXT.get(x, x) if isinstance(x, str) else x for x in values]
    return values


def _decode_step_json(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("x_fp", "y_fp"):
        return _unjson_floats(value)
    if name == "loss_info":
        return {
            k: (_NONFINITE_TEXT.get(x, x) if k.startswith("per_sample_") and isinstance(x, str) else x)
            for k, x in value.items()
        }
    return value


def _sketch_list(b: bytes | None) -> list[float] | None:
    return None if b is None else np.frombuffer(b, dtype="<f4").tolist()


def iter_steps(
    engine: Engine,
    uid: str,
    start: int = 0,
    stop: int | None = None,
    vars: list[int] | None = None,
    fields: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Validate now, then stream step dicts chunk by chunk (see ``Store.steps``)."""
    _check_range(start, stop)
    if vars is not None and any((not isinstance(v, int)) or v < 0 for v in vars):
        raise InvalidInput("vars", "variable indices must be integers >= 0")
    if fields is None:
        step_fields, var_fields, want_state = list(STEP_FIELDS), list(VAR_FIELDS), True
    else:
        known = set(STEP_FIELDS) | set(VAR_FIELDS) | {"state", "step", "vars"}
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise InvalidInput(
                "fields", f"unknown {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
            )
        step_fields = [f for f in STEP_FIELDS if f in fields]
        var_fields = [f for f in VAR_FIELDS if f in fields]
        if "vars" in fields and not var_fields:
            var_fields = list(VAR_FIELDS)
        want_state = "state" in fields
    with engine.connect() as conn:
        key = run_key(conn, uid)
        nvars = len(vars) if vars is not None else conn.execute(
            select(func.count()).select_from(m.Variable.__table__)
            .where(m.Variable.__table__.c.run_id == key)
        ).scalar_one()
    chunk = max(1, min(1000, STREAM_ROWS // max(1, nvars)))
    return _stream(engine, key, start, stop, vars, step_fields, var_fields, want_state, chunk)


def _stream(
    engine: Engine,
    key: int,
    start: int,
    stop: int | None,
    vars: list[int] | None,
    step_fields: list[str],
    var_fields: list[str],
    want_state: bool,
    chunk: int,
) -> Iterator[dict[str, Any]]:
    cur = start
    seek_vs: list[int] | None = None
    if var_fields and vars is None and engine.dialect.name == "sqlite":
        # SQLite: one seek per variable in the (run_id, v, step) primary key beats
        # walking the step index and looking every row up.
        with engine.connect() as conn:
            seek_vs = list(conn.execute(select(_V.c.v).where(_V.c.run_id == key).distinct()).scalars())
    vcols = [_V.c.step, _V.c.v] + [_V.c[f] for f in var_fields]
    scols = [_ST.c.step, _ST.c.v] + [_ST.c[f] for f in STATE_FIELDS]
    while True:
        with engine.connect() as conn:
            conds = [_S.c.run_id == key, _S.c.step >= cur]
            if stop is not None:
                conds.append(_S.c.step < stop)
            srows = conn.execute(
                select(_S.c.step, *[_S.c[f] for f in step_fields]).where(*conds).order_by(_S.c.step).limit(chunk)
            ).all()
            if not srows:
                return
            lo, hi = srows[0].step, srows[-1].step
            by_step: dict[int, list[dict[str, Any]]] = {}
            if var_fields:
                vconds = [_V.c.run_id == key, _V.c.step >= lo, _V.c.step <= hi]
                if vars is not None:
                    vconds.append(_V.c.v.in_(vars))
                elif seek_vs is not None:
                    vconds.append(_V.c.v.in_(seek_vs))
                for r in conn.execute(select(*vcols).where(*vconds).order_by(_V.c.step, _V.c.v)):
                    d = {"v": r.v}
                    for f in var_fields:
                        d[f] = _sketch_list(r.sketch) if f == "sketch" else getattr(r, f)
                    by_step.setdefault(r.step, []).append(d)
            state_by_step: dict[int, list[dict[str, Any]]] = {}
            if want_state:
                sconds = [_ST.c.run_id == key, _ST.c.step >= lo, _ST.c.step <= hi]
                if vars is not None:
                    sconds.append(_ST.c.v.in_(vars))
                for r in conn.execute(select(*scols).where(*sconds).order_by(_ST.c.step, _ST.c.v)):
                    state_by_step.setdefault(r.step, []).append(
                        {"v": r.v, "changed": r.changed, "delta_norm": r.delta_norm, "rng": r.rng}
                    )
        for r in srows:
            out: dict[str, Any] = {"step": r.step}
            for f in step_fields:
                val = getattr(r, f)
                out[f] = _decode_step_json(f, val) if f in _JSON_STEP_FIELDS else val
            if var_fields:
                out["vars"] = by_step.get(r.step, [])
            if want_state:
                out["state"] = state_by_step.get(r.step, [])
            yield out
        cur = hi + 1


_SERIES_STEP = {
    "wall_time", "loss", "loss_scale", "skipped", "reg_loss", "batch_size", "lr", "iterations",
    "grad_norm", "n_grad", "n_applied", "n_changed", "nonfinite",
}
_BOOL_FIELDS = {"skipped", "grad", "applied", "changed", "rng"}
_INT_FIELDS = {"batch_size", "iterations", "n_grad", "n_applied", "n_changed", "nonfinite"}


def _series_column(field: str, v: int | None) -> Any:
    if v is None:
        if field in _SERIES_STEP:
            return _S, _S.c[field]
        if field in VAR_FIELDS or field in STATE_FIELDS:
            raise InvalidInput("v", f"{field!r} is a per-variable field: give the variable index v")
    else:
        if v < 0:
            raise InvalidInput("v", "must be >= 0")
        if field in VAR_FIELDS:
            return _V, _V.c[field]
        if field in STATE_FIELDS:
            return _ST, _ST.c[field]
    known = sorted(_SERIES_STEP | set(VAR_FIELDS) | set(STATE_FIELDS))
    raise InvalidInput("field", f"{field!r} has no series; known: {', '.join(known)}")


def _to_array(field: str, values: list[Any]) -> np.ndarray:
    if field == "sketch":
        if not values:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(b, dtype="<f4") for b in values])
    if field in _BOOL_FIELDS:
        return np.array(values, dtype=bool)
    if field in _INT_FIELDS:
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def series(
    conn: Connection, uid: str, field: str, v: int | None = None, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    _check_range(start, stop)
    table, col = _series_column(field, v)
    key = run_key(conn, uid)
    conds = [table.c.run_id == key, table.c.step >= start, col.is_not(None)]
    if stop is not None:
        conds.append(table.c.step < stop)
    if v is not None:
        conds.append(table.c.v == v)
    if v is not None:
        per_var = series_many(conn, uid, field, [v], start, stop)
        if v in per_var:
            return per_var[v]  # type: ignore[no-any-return]
        return np.zeros(0, dtype=np.int64), _to_array(field, [])
    rows = conn.execute(select(table.c.step, col).where(*conds).order_by(table.c.step)).all()
    steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return steps, _to_array(field, [r[1] for r in rows])


def _column(field: str, col: Any) -> tuple[np.ndarray, Any]:
    """(present mask, full-length values) of one fetched column; NULL entries are absent."""
    if field == "sketch":
        return np.fromiter((x is not None for x in col), dtype=bool, count=len(col)), col
    # One C-level conversion: NULL and SQLite's 'NaN' text both become NaN ...
    arr = np.array(col, dtype=np.float64)
    present = np.ones(len(col), dtype=bool)
    # ... and only the (usually few) NaN positions are looked at to tell them apart.
    for i in np.flatnonzero(np.isnan(arr)).tolist():
        present[i] = col[i] is not None
    return present, arr


def _select_values(field: str, full: Any, idx: np.ndarray) -> np.ndarray:
    if field == "sketch":
        return _to_array(field, [full[j] for j in idx.tolist()])
    values = full[idx]
    if field in _BOOL_FIELDS:
        return values.astype(bool)  # type: ignore[no-any-return]
    if field in _INT_FIELDS:
        return values.astype(np.int64)  # type: ignore[no-any-return]
    return values  # type: ignore[no-any-return]


def _fetch_raw(
    conn: Connection,
    table: str,
    key: int,
    start: int,
    stop: int | None,
    vs: list[int] | None,
    names: list[str],
) -> list[tuple[Any, ...]]:
    """Rows (v, step, *names) through the DBAPI cursor, in (v, step) order.

    Reading a whole run is 10^5..10^6 rows; building SQLAlchemy ``Row`` objects
    and decoding per value cost more than the database read, so this path takes
    plain tuples and leaves decoding to numpy. Column names come from our own
    field lists and ``vs`` are ints, so nothing user-typed is spliced into SQL.
    """
    cols = ", ".join(f'"{n}"' for n in names)
    sql = f"SELECT v, step, {cols} FROM {table} WHERE run_id = :key AND step >= :start"
    params: dict[str, Any] = {"key": key, "start": start}
    if stop is not None:
        sql += " AND step < :stop"
        params["stop"] = stop
    if vs is not None:
        sql += " AND v IN (" + ", ".join(str(int(v)) for v in vs) + ")" if vs else " AND 1 = 0"
    sql += " ORDER BY v, step"
    if conn.dialect.name == "postgresql":  # psycopg; sqlite3 takes :name as written
        for name in params:
            sql = sql.replace(f":{name}", f"%({name})s")
    elif conn.dialect.name != "sqlite":  # pragma: no cover - the store supports these two
        raise StoreError(f"unsupported database {conn.dialect.name}")
    conn.execute(select(1))  # begin the connection's transaction (consistent snapshot)
    raw = conn.connection.driver_connection
    # psycopg: binary results parse about 2x faster than text for float columns.
    cur = raw.cursor(binary=True) if conn.dialect.name == "postgresql" else raw.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return cur.fetchall()  # type: ignore[no-any-return]
    finally:
        cur.close()


def series_many(
    conn: Connection,
    uid: str,
    fields: str | list[str],
    vs: list[int] | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Any:
    """Per-variable series of one field ({v: (steps, values)}) or of several
    fields ({field: {v: (steps, values)}}), read in one pass over the run's rows
    in primary-key order (a sequential read), NULLs left out per field."""
    _check_range(start, stop)
    names = [fields] if isinstance(fields, str) else list(fields)
    if not names:
        raise InvalidInput("fields", "give at least one field")
    if len(set(names)) != len(names):
        raise InvalidInput("fields", "a field is listed twice")
    tables = set()
    for f in names:
        try:
            tables.add(_series_column(f, 0)[0])
        except InvalidInput as exc:
            if isinstance(fields, str):
                raise
            raise InvalidInput("fields", f"{f!r} is not a per-variable field; known: "
                               f"{', '.join(sorted(set(VAR_FIELDS) | set(STATE_FIELDS)))}") from exc
    if len(tables) > 1:
        raise InvalidInput("fields", "mix of variable and state fields; read them separately")
    table = tables.pop()
    key = run_key(conn, uid)
    rows = _fetch_raw(conn, table.name, key, start, stop, vs, names)
    result: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {f: {} for f in names}
    if rows:
        # One C-level copy into a 2-D object array; its columns convert to float64
        # directly (None -> NaN, SQLite's 'NaN' text -> NaN). Faster than zip(*rows).
        table_ = np.empty((len(rows), 2 + len(names)), dtype=object)
        table_[:] = rows
        columns = [table_[:, j] for j in range(table_.shape[1])]
        vcol = columns[0].astype(np.int64)
        steps = columns[1].astype(np.int64)
        for i, f in enumerate(names):
            keep, full = _column(f, columns[2 + i])
            vv, ss = vcol[keep], steps[keep]
            values = _select_values(f, full, np.flatnonzero(keep))
            cuts = np.flatnonzero(np.diff(vv)) + 1
            bounds = [0, *cuts.tolist(), len(vv)]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if b > a:
                    result[f][int(vv[a])] = (ss[a:b], values[a:b])
    return result[names[0]] if isinstance(fields, str) else result


def tensor(conn: Connection, uid: str, step: int, v: int, kind: str) -> np.ndarray | None:
    """The full tensor recorded at (step, v, kind), or None."""
    t = m.Tensor.__table__
    key = run_key(conn, uid)
    row = conn.execute(
        select(t.c.shape, t.c.data).where(t.c.run_id == key, t.c.step == step, t.c.v == v, t.c.kind == kind)
    ).first()
    if row is None:
        return None
    return np.frombuffer(row.data, dtype="<f4").reshape(row.shape)


def tensor_index(conn: Connection, uid: str) -> list[tuple[int, int, str]]:
    """(step, v, kind) of every full tensor recorded for the run."""
    t = m.Tensor.__table__
    key = run_key(conn, uid)
    rows = conn.execute(select(t.c.step, t.c.v, t.c.kind).where(t.c.run_id == key).order_by(t.c.step, t.c.v, t.c.kind))
    return [(r.step, r.v, r.kind) for r in rows]
