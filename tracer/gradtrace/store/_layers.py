"""Per-layer sums of each step (the ``layer_steps`` table), derived at ingest.

The run page plots the gradient norm, the update-to-weight ratio and the state
change of every layer over steps. Computing them from ``var_steps`` means a
``GROUP BY (step, layer)`` over steps x variables rows on every page view
(2-3 s for 10k steps x 50 variables); the sums are cheap to form while a batch
is written, so they are stored once: one row per step holding, per sum, a
float64 array over the run's layers (narrow rows, one per step, instead of one
per step and layer, keep the added ingest work small).

The grouping of variables into layers is a function of the run's inventory
(:func:`variable_groups`). The inventory is re-sent with every batch and may
change (a later revision, or steps that arrived before it): when the grouping
changes, the run's rows are recomputed from ``var_steps``/``state_steps``
(:func:`rebuild`) by the same function the ingest uses (:func:`layer_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, insert, select

from gradtrace.store import models as m

_LS = m.LayerStep.__table__
_V = m.VarStep.__table__
_ST = m.StateStep.__table__

#: The per-layer sums, in the column order of ``layer_steps`` after (run_id, step).
SUMS = ("grad_sq", "update_sq", "weight_sq", "state_sq")
#: Columns of a var_steps row :func:`layer_rows` reads, and of a state_steps row.
VAR_INPUT = ("step", "v", "grad", "norm", "update_norm", "weight_norm")
STATE_INPUT = ("step", "v", "delta_norm", "rng")
_REBUILD_CHUNK = 2000  # steps per rebuild read (bounds memory on long runs)


@dataclass(frozen=True)
class Groups:
    """Which layer each variable belongs to: ``of[v]`` is an index into ``labels``."""

    of: dict[int, int] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)


def variable_groups(variables: Iterable[tuple[int, str, str | None, int | None]], layer_names: dict[int, str]) -> Groups:
    """Group variables ``(idx, name, layer, layer_index)`` by layer, in inventory order.

    The layer comes from the inventory (``layer_index`` / ``layer``) and, when
    the tracer could not name it, from the variable's path
    (``sequential/dense/kernel`` -> ``sequential/dense``). A root-model prefix
    every label shares is dropped from the labels (``sequential/dense`` -> ``dense``).
    """
    group_of_name: dict[str, int] = {}
    of: dict[int, int] = {}
    for idx, name, layer, li in sorted(variables, key=lambda r: r[0]):
        if li is not None:
            label = layer_names.get(int(li)) or layer or f"layer {li}"
        elif layer:
            label = layer
        else:
            label = name.rsplit("/", 1)[0] if "/" in name else name
        of[int(idx)] = group_of_name.setdefault(label, len(group_of_name))
    labels = list(group_of_name)
    heads = {lab.split("/", 1)[0] for lab in labels}
    if len(heads) == 1 and all("/" in lab for lab in labels):
        labels = [lab.split("/", 1)[1] for lab in labels]
    return Groups(of=of, labels=labels)


def groups(conn: Connection, run_key: int) -> Groups:
    """The layer grouping of run ``run_key``'s stored inventory."""
    vt, lt = m.Variable.__table__, m.Layer.__table__
    names = {int(i): n for i, n in conn.execute(select(lt.c.idx, lt.c.name).where(lt.c.run_id == run_key))}
    rows = conn.execute(
        select(vt.c.idx, vt.c.name, vt.c.layer, vt.c.layer_index).where(vt.c.run_id == run_key)
    ).all()
    return variable_groups([tuple(r) for r in rows], names)  # type: ignore[misc]


def _floats(rows: Sequence[Sequence[Any]], j: int | None) -> np.ndarray:
    # None -> NaN and SQLite's 'NaN' text -> NaN in one C-level conversion;
    # j None: the rows do not hold the column (all NULL)
    if j is None:
        return np.full(len(rows), np.nan)
    return np.array([r[j] for r in rows], dtype=np.float64)


def _sums(
    pos: np.ndarray, g: np.ndarray, value: np.ndarray, ok: np.ndarray, n: int, nl: int
) -> np.ndarray:
    """(n, nl) sums of ``value**2`` over the rows where ``ok``; NaN where none contributed."""
    sel = ok & (g >= 0)
    idx = pos[sel] * nl + g[sel]
    with np.errstate(over="ignore"):
        sq = value[sel] * value[sel]
    total = np.bincount(idx, weights=sq, minlength=n * nl).astype(np.float64)  # int64 when idx is empty
    count = np.bincount(idx, minlength=n * nl)
    total[count == 0] = np.nan
    return total.reshape(n, nl)


def _group_index(of: dict[int, int], v: np.ndarray) -> np.ndarray:
    if not of or len(v) == 0:
        return np.full(len(v), -1, dtype=np.int64)
    table = np.full(max(max(of), int(v.max())) + 1, -1, dtype=np.int64)
    table[list(of)] = list(of.values())
    return table[v]


def layer_rows(
    run_key: int,
    var_rows: Sequence[Sequence[Any]],
    state_rows: Sequence[Sequence[Any]],
    grouping: Groups,
    var_at: Sequence[int | None] = (0, 1, 2, 3, 4, 5),
    state_at: Sequence[int] = (0, 1, 2, 3),
) -> list[dict[str, Any]]:
    """``layer_steps`` rows of the steps these rows belong to.

    ``var_rows`` hold ``(step, v, grad, norm, update_norm, weight_norm)`` at the
    positions ``var_at`` (None for a float column the rows leave out: all NULL), ``state_rows`` ``(step, v, delta_norm, rng)`` at
    ``state_at`` (floats as stored: None, a number, or SQLite's 'NaN' text). Per step and layer: ``sum |g_v|^2`` over
    the variables whose gradient reached the optimizer with a finite norm,
    ``sum |dw_v|^2`` and ``sum |w_v|^2`` over those with both finite, and
    ``sum |delta|^2`` over finite non-RNG state changes.
    """
    nl = len(grouping.labels)
    if nl == 0 or (not var_rows and not state_rows):
        return []
    vs, vv, vg, vn, vu, vw = var_at
    ss, sv, sd, sr = state_at
    steps = np.unique(np.array([r[vs] for r in var_rows] + [r[ss] for r in state_rows], dtype=np.int64))
    n = len(steps)
    out = {k: np.full((n, nl), np.nan) for k in SUMS}
    if var_rows:
        pos = np.searchsorted(steps, np.array([r[vs] for r in var_rows], dtype=np.int64))
        g = _group_index(grouping.of, np.array([r[vv] for r in var_rows], dtype=np.int64))
        grad = np.array([bool(r[vg]) for r in var_rows], dtype=bool)
        norm, upd, w = _floats(var_rows, vn), _floats(var_rows, vu), _floats(var_rows, vw)
        out["grad_sq"] = _sums(pos, g, norm, grad & np.isfinite(norm), n, nl)
        both = np.isfinite(upd) & np.isfinite(w)
        out["update_sq"] = _sums(pos, g, upd, both, n, nl)
        out["weight_sq"] = _sums(pos, g, w, both, n, nl)
    if state_rows:
        pos = np.searchsorted(steps, np.array([r[ss] for r in state_rows], dtype=np.int64))
        g = _group_index(grouping.of, np.array([r[sv] for r in state_rows], dtype=np.int64))
        delta = _floats(state_rows, sd)
        rng = np.array([bool(r[sr]) for r in state_rows], dtype=bool)
        out["state_sq"] = _sums(pos, g, delta, ~rng & np.isfinite(delta), n, nl)
    present = {k: ~np.isnan(a).all(axis=1) for k, a in out.items()}
    rows = []
    for i, step in enumerate(steps.tolist()):
        if not any(present[k][i] for k in SUMS):
            continue  # nothing measured at this step (only a variable without a gradient)
        row: dict[str, Any] = {"run_id": run_key, "step": step}
        for k in SUMS:
            row[k] = out[k][i].astype("<f8").tobytes() if present[k][i] else None
        rows.append(row)
    return rows


def decode(blob: bytes | None, nl: int) -> np.ndarray:
    """One stored array, as float64 of length ``nl`` (NaN where absent or for a NULL)."""
    out = np.full(nl, np.nan)
    if blob:
        a = np.frombuffer(blob, dtype="<f8")
        out[: min(nl, len(a))] = a[:nl]
    return out


def rebuild(conn: Connection, run_key: int, grouping: Groups | None = None) -> None:
    """Recompute run ``run_key``'s ``layer_steps`` from ``var_steps`` and ``state_steps``."""
    grouping = grouping or groups(conn, run_key)
    conn.execute(delete(_LS).where(_LS.c.run_id == run_key))
    if not grouping.labels:
        return
    bounds = conn.execute(
        select(m.Step.__table__.c.step).where(m.Step.__table__.c.run_id == run_key).order_by(m.Step.__table__.c.step)
    ).scalars().all()
    vcols = [_V.c[c] for c in VAR_INPUT]
    scols = [_ST.c[c] for c in STATE_INPUT]
    for i in range(0, len(bounds), _REBUILD_CHUNK):
        lo, hi = bounds[i], bounds[min(i + _REBUILD_CHUNK, len(bounds)) - 1]
        var_rows = conn.execute(select(*vcols).where(_V.c.run_id == run_key, _V.c.step.between(lo, hi))).all()
        state_rows = conn.execute(select(*scols).where(_ST.c.run_id == run_key, _ST.c.step.between(lo, hi))).all()
        rows = layer_rows(run_key, var_rows, state_rows, grouping)
        if rows:
            conn.execute(insert(_LS), rows)


def rebuild_all(conn: Connection) -> int:
    """Rebuild ``layer_steps`` of every run; returns how many runs."""
    keys = [int(k) for k in conn.execute(select(m.Run.__table__.c.id)).scalars()]
    for key in keys:
        rebuild(conn, key)
    return len(keys)


__all__ = ["SUMS", "Groups", "decode", "groups", "layer_rows", "rebuild", "rebuild_all", "variable_groups"]
