"""Read a run from the store as :class:`RunData`, with SQL, only the columns the detectors use.

Per-step columns of the ``steps`` table are read whole (a few floats per step);
the big ``var_steps`` table is summarised per variable by the database
(``GROUP BY v``) and read row by row only for the first ``HEAD`` steps and, on
demand, for the window where two runs depart; a later step's loss details are read one
step at a time on demand (where a run changes its loss). JSON facts (training modes,
shapes, broadcasts) are read as distinct values. A 10k-step run with 50
variables never becomes Python lists of 500k rows.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, Text, and_, case, cast, func, select, text

from gradtrace.compare.data import FP_LEN, HEAD, VAR_ROW_COLS, VSUM_KEYS, RunData, loss_details

if TYPE_CHECKING:
    from gradtrace.store import Store

logger = logging.getLogger("gradtrace.compare.reader")
_NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_VAR_COLS = VAR_ROW_COLS  # RunData's names; the table's columns: _COLUMN
_COLUMN = {"gmin": "min", "gmax": "max"}


def _tables() -> tuple[Any, Any, Any, Any]:
    from gradtrace.store import models as m

    return m.Run.__table__, m.Step.__table__, m.VarStep.__table__, m.StateStep.__table__


def _num(x: Any) -> float:
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return _NONFINITE.get(x, float("nan"))
    return float(x)


def _floats(rows: list[Any], width: int) -> np.ndarray:
    """Rows of numbers / None / NaN-text / booleans as a float matrix (None -> NaN)."""
    if not rows:
        return np.zeros((0, width))
    obj = np.array(rows, dtype=object).reshape(len(rows), width)
    obj[np.equal(obj, None)] = np.nan
    try:
        return np.array(obj, dtype=np.float64)
    except (TypeError, ValueError):
        return np.vectorize(_num, otypes=[np.float64])(obj)


def _fps(texts: list[str | None]) -> np.ndarray:
    out = np.full((len(texts), FP_LEN), np.nan)
    if not texts:
        return out
    if all(texts) and "N" not in "".join(texts[:1]):
        # Fast path: every row a flat list of numbers with the same length.
        flat = ",".join(t.strip()[1:-1] for t in texts if t)  # type: ignore[union-attr]
        try:
            vals = np.array(flat.split(","), dtype=np.float64)
            width = vals.size // len(texts)
            if width * len(texts) == vals.size and 0 < width <= FP_LEN:
                out[:, :width] = vals.reshape(len(texts), width)
                return out
        except ValueError:
            pass
    parsed = json.loads("[" + ",".join(t if t else "null" for t in texts) + "]")
    try:
        dense = np.array(parsed, dtype=np.float64)
        if dense.ndim == 2 and dense.shape[1] <= FP_LEN:
            out[:, : dense.shape[1]] = dense
            return out
    except (TypeError, ValueError):
        pass
    for i, row in enumerate(parsed):
        if row:
            vals = [_num(v) for v in row[:FP_LEN]]
            out[i, : len(vals)] = vals
    return out


_FACTS = ("modes", "mode", "target_shape", "y_pred_shape", "broadcasts", "frozen")


def _distinct_facts(conn: Connection, S: Any, key: int) -> dict[str, list[tuple[Any, int, int]]]:
    """Distinct values of the per-step JSON facts, each with its first step and count (one query)."""
    cols = [cast(S.c[c], Text) if c != "mode" else S.c.mode for c in _FACTS]
    rows = conn.execute(
        select(*cols, func.min(S.c.step), func.count()).where(S.c.run_id == key).group_by(*cols)
    ).all()
    out: dict[str, dict[Any, list[Any]]] = {c: {} for c in _FACTS}
    for r in rows:
        first, n = int(r[-2]), int(r[-1])
        for c, raw in zip(_FACTS, r[:-2], strict=False):
            slot = out[c].get(raw)
            if slot is None:
                val = raw if c == "mode" else (json.loads(raw) if raw not in (None, "null") else None)
                out[c][raw] = [val, first, n]
            else:
                slot[1] = min(slot[1], first)
                slot[2] += n
    return {c: sorted(((v, f, n) for v, f, n in d.values()), key=lambda x: x[1]) for c, d in out.items()}


_PROBE_STEPS = 16  # candidate steps read in full to find which variables lack a gradient/update


def _var_summary(conn: Connection, V: Any, key: int, var_index: list[int], step: np.ndarray,
                 n_grad: np.ndarray, n_applied: np.ndarray, nonfinite: np.ndarray,
                 skipped: np.ndarray, seen: set[int]) -> dict[str, np.ndarray]:
    """Per-variable facts over all steps without scanning ``var_steps`` whole.

    The steps table carries per-step counts (variables with a gradient, updated,
    non-finite entries). Only steps whose counts show a gap are looked at: a few
    of them (first, last, evenly spaced) are read in full to learn *which*
    variables are involved, then each such variable's series is aggregated
    through the ``(run_id, v, step)`` index.
    """
    nv = len(var_index)
    out = {k: np.full(nv, np.nan) for k in VSUM_KEYS}
    S = float(step.size)
    out["n_rows"][:] = S
    out["n_grad"][:] = S
    out["n_nograd"][:] = 0.0
    upd = (np.nan_to_num(n_applied, nan=0.0) > 0) & ~(np.nan_to_num(skipped, nan=0.0) > 0)
    out["n_applied"][:] = float(upd.sum())
    gap_grad = np.nan_to_num(n_grad, nan=nv) < nv
    gap_app = upd & (np.nan_to_num(n_applied, nan=nv) < np.nan_to_num(n_grad, nan=nv))
    bad_nf = np.nan_to_num(nonfinite, nan=0.0) > 0
    suspects: set[int] = set(var_index) - seen  # in the inventory, not in the first steps
    for mask, cond in ((gap_grad, V.c.grad.is_(False)),
                       (gap_app, and_(V.c.grad.is_(True), V.c.applied.is_(False))),
                       (bad_nf, V.c.nonfinite > 0)):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        probe = np.unique(idx[np.linspace(0, idx.size - 1, min(idx.size, _PROBE_STEPS)).astype(int)])
        suspects.update(int(v) for v in conn.execute(
            select(V.c.v).distinct().where(V.c.run_id == key, V.c.step.in_(step[probe].tolist()), cond)).scalars())
    pos = {v: j for j, v in enumerate(var_index)}
    upd_steps = set(step[upd].tolist())
    one = lambda cond: func.sum(case((cond, 1), else_=0))  # noqa: E731
    for v in sorted(suspects):
        if v not in pos:
            continue
        j = pos[v]
        r = conn.execute(select(
            func.count(), one(V.c.grad.is_(True)), one(V.c.grad.is_(False)),
            func.min(case((V.c.grad.is_(False), V.c.step))), one(V.c.applied.is_(True)),
            func.min(case((V.c.nonfinite > 0, V.c.step))),
        ).where(V.c.run_id == key, V.c.v == v)).one()
        out["n_rows"][j], out["n_grad"][j], out["n_nograd"][j] = _num(r[0]), _num(r[1]), _num(r[2])
        out["first_nograd"][j], out["n_applied"][j], out["first_nonfinite"][j] = _num(r[3]), _num(r[4]), _num(r[5])
        left = [(int(s_), _num(n_)) for s_, n_ in conn.execute(select(V.c.step, V.c.norm).where(
            V.c.run_id == key, V.c.v == v, V.c.grad.is_(True), V.c.applied.is_(False)).order_by(V.c.step))
            if int(s_) in upd_steps]
        first = left[0][0] if left else None
        # an exactly zero gradient (a bias that cancels) moves nothing: no evidence on its own
        nonzero = next((s_ for s_, n_ in left if n_ != 0.0), None)
        out["first_notapplied"][j] = float("nan") if first is None else float(first)
        out["first_notapplied_nonzero"][j] = float("nan") if nonzero is None else float(nonzero)
    return out


def _reindex(got: dict[str, np.ndarray], var_index: list[int]) -> dict[str, np.ndarray]:
    old = {int(v): j for j, v in enumerate(got["var_index"])}
    out = {"steps": got["steps"], "var_index": np.array(var_index, dtype=np.int64)}
    for c in _VAR_COLS:
        m = np.full((got["steps"].size, len(var_index)), np.nan)
        for j, v in enumerate(var_index):
            if v in old:
                m[:, j] = got[c][:, old[v]]
        out[c] = m
    return out


def _var_rows(conn: Connection, V: Any, key: int, var_index: list[int] | None, lo: int, hi: int) -> dict[str, np.ndarray]:
    rows = conn.execute(
        select(V.c.step, V.c.v, *[V.c[_COLUMN.get(c, c)] for c in _VAR_COLS])
        .where(V.c.run_id == key, V.c.step >= lo, V.c.step < hi).order_by(V.c.step, V.c.v)
    ).all()
    if var_index is None:
        var_index = sorted({int(r[1]) for r in rows})
    arr = _floats(rows, 2 + len(_VAR_COLS))
    steps = np.unique(arr[:, 0]).astype(np.int64)
    vidx = np.array(var_index, dtype=np.int64)
    mats = {c: np.full((len(steps), len(var_index)), np.nan) for c in _VAR_COLS}
    if arr.size and vidx.size:
        i = np.searchsorted(steps, arr[:, 0].astype(np.int64))
        order = np.argsort(vidx)
        jj = np.searchsorted(vidx[order], arr[:, 1].astype(np.int64))
        jj = np.clip(jj, 0, vidx.size - 1)
        ok = vidx[order][jj] == arr[:, 1]
        j = order[jj]
        for k, c in enumerate(_VAR_COLS):
            mats[c][i[ok], j[ok]] = arr[ok, 2 + k]
    return {"steps": np.array(steps, dtype=np.int64), "var_index": np.array(var_index, dtype=np.int64), **mats}


def read_run(store: Store, ref: str, project: str | None = None) -> RunData:
    """Resolve ``ref`` (uid, uid prefix or run name) and read it for the comparator."""
    summary = store.resolve(ref, project)
    detail = store.run_detail(summary.id)
    R, S, V, ST = _tables()
    engine = store.engine
    with engine.connect() as conn:
        key = int(conn.execute(select(R.c.id).where(R.c.uid == summary.id)).scalar_one())
        # Plain SQL text: no per-value result processing for the one query that is as long
        # as the run (the store's NaN encoding is decoded below, in bulk).
        rows = conn.execute(text(
            f"SELECT step, loss, reg_loss, lr, loss_scale, batch_size, iterations, skipped, grad_norm, "
            f"nonfinite, n_applied, n_grad, CAST(x_fp AS TEXT), CAST(y_fp AS TEXT), "
            # NULL (not NaN) grad_norm: the step carries no per-variable statistics (cadence)
            f"CASE WHEN grad_norm IS NULL THEN 0 ELSE 1 END FROM {S.name} "
            f"WHERE run_id = :key ORDER BY step"), {"key": key}).all()
        num = _floats([r[:12] for r in rows], 12)
        loss_known = np.array([r[1] is not None for r in rows], dtype=bool)  # NULL: no loss, NaN text: NaN
        x_fp = _fps([r[12] for r in rows])
        y_fp = _fps([r[13] for r in rows])
        stats = np.array([bool(r[14]) for r in rows], dtype=bool)
        head = _var_rows(conn, V, key, None, 0, HEAD)
        seen = set(head["var_index"].tolist())
        var_index = sorted(set(head["var_index"].tolist()) | {
            int(v["index"]) for v in detail.variables if v.get("trainable", True)})
        head = _reindex(head, var_index)
        vsum = _var_summary(conn, V, key, var_index, num[:, 0].astype(np.int64), num[:, 11], num[:, 10],
                            num[:, 9], num[:, 7], seen)
        first_step = int(num[0, 0]) if len(rows) else 0
        sk_rows = conn.execute(
            select(V.c.v, V.c.sketch).where(V.c.run_id == key, V.c.step == first_step)).all()
        state = conn.execute(
            select(ST.c.v, func.sum(case((ST.c.changed.is_(True), 1), else_=0)),
                   func.max(case((ST.c.rng.is_(True), 1), else_=0)))
            .where(ST.c.run_id == key).group_by(ST.c.v).order_by(ST.c.v)).all()
        first = int(rows[0][0]) if rows else 0
        deltas = conn.execute(
            select(ST.c.step, ST.c.v, ST.c.delta_norm)
            .where(ST.c.run_id == key, ST.c.step < first + HEAD, ST.c.delta_norm.is_not(None))).all()
        facts = _distinct_facts(conn, S, key)
        modes, exec_modes = facts["modes"], facts["mode"]
        target_shapes, y_pred_shapes, broadcasts = facts["target_shape"], facts["y_pred_shape"], facts["broadcasts"]
        loss_info = {int(s): loss_details(json.loads(t)) for s, t in conn.execute(
            select(S.c.step, cast(S.c.loss_info, Text))
            .where(S.c.run_id == key, S.c.step < HEAD, S.c.loss_info.is_not(None))) if t and t != "null"}

    vpos = {v: j for j, v in enumerate(var_index)}
    dim = max((len(b) // 4 for _, b in sk_rows if b), default=0)
    sketch = np.full((1, len(var_index), dim), np.nan, dtype=np.float32)
    for v, b in sk_rows:
        if b and int(v) in vpos:
            arr = np.frombuffer(b, dtype="<f4")
            sketch[0, vpos[int(v)], : arr.size] = arr

    def loader(lo: int, hi: int) -> dict[str, np.ndarray]:
        with engine.connect() as c:
            return _var_rows(c, V, key, var_index, lo, hi)

    @functools.lru_cache(maxsize=64)  # the last step's details are asked for by several checks
    def loss_info_at(step: int) -> dict[str, Any] | None:
        with engine.connect() as c:
            t = c.execute(select(cast(S.c.loss_info, Text)).where(S.c.run_id == key, S.c.step == step)).scalar()
        return loss_details(json.loads(t)) if t and t != "null" else None

    spos = {int(r[0]): j for j, r in enumerate(state)}
    srow = {int(r[0]): i for i, r in enumerate(rows[:HEAD])}
    state_delta = np.full((len(rows), len(state)), np.nan)
    for st_step, v, d in deltas:
        if int(st_step) in srow and int(v) in spos:
            state_delta[srow[int(st_step)], spos[int(v)]] = _num(d)
    meta = dict(detail.meta or {})
    meta.setdefault("name", summary.name)
    meta.setdefault("project", summary.project)
    meta.setdefault("status", summary.status)
    col = {name: num[:, i] for i, name in enumerate(
        ("step", "loss", "reg_loss", "lr", "loss_scale", "batch_size", "iterations", "skipped",
         "grad_norm", "nonfinite", "n_applied"))}
    return RunData(
        uid=summary.id, name=summary.name, meta=meta,
        variables=list(detail.variables), layers=list(detail.layers),
        step=col["step"].astype(np.int64), loss=col["loss"], reg_loss=col["reg_loss"], lr=col["lr"],
        loss_scale=col["loss_scale"], batch_size=col["batch_size"], iterations=col["iterations"],
        skipped=col["skipped"], x_fp=x_fp, y_fp=y_fp, grad_norm=col["grad_norm"],
        nonfinite_step=col["nonfinite"], n_applied=col["n_applied"], n_grad=num[:, 11].copy(),
        var_index=np.array(var_index, dtype=np.int64), var_rows=head["steps"],
        grad=head["grad"], norm=head["norm"], nonfinite=head["nonfinite"], applied=head["applied"],
        update_norm=head["update_norm"], gmin=head["gmin"], gmax=head["gmax"],
        sketch_steps=np.array([first_step] if sk_rows else [], dtype=np.int64), sketch=sketch, vsum=vsum,
        state_index=np.array([int(r[0]) for r in state], dtype=np.int64),
        state_changed=np.array([float(r[1] or 0) for r in state]),
        rng=np.array([bool(r[2]) for r in state], dtype=bool),
        modes=[(m or {}, f, n) for m, f, n in modes], exec_modes=exec_modes, target_shapes=target_shapes,
        frozen=[(z or [], f, n) for z, f, n in facts["frozen"]],
        y_pred_shapes=y_pred_shapes, broadcasts=[(b or [], f, n) for b, f, n in broadcasts],
        loss_info=loss_info, loader=loader, loss_info_at=loss_info_at, stats=stats, loss_known=loss_known, state_delta=state_delta,
    )
