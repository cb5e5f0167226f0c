"""Plot data for the web UI: aggregated and downsampled in SQL.

``GET /api/v1/runs/{run_id}/plots?max_points=2000``
    Everything the run page draws, over steps cut into at most ``max_points``
    buckets of equal width (``bucket_width`` steps each). Every series carries the
    bucket's ``min`` and ``max`` so a spike survives downsampling: loss, the
    gradient norm of each layer (L2 over its trainable variables), the
    update-to-weight ratio of each layer, the change of each layer's
    non-trainable state, the ``training`` mode each layer ran in (run-length
    segments) and the steps with non-finite values.

``GET /api/v1/plots/compare?a=RUN&b=RUN&max_points=1000&max_cols=160&by=variable``
    Two runs on one step axis (loss and global gradient norm of each), and a heat
    map (rows = variables or layers) of the gradient norm ratio ``|g_b| / |g_a|``
    and the cosine of the two gradients' sketches. Its columns cover the steps at
    which both runs measured per-variable statistics (every step, or every N-th at
    the default cadence), ``col_width`` measured steps each: ``cols`` and
    ``col_last`` are each column's first and last step. Variables are aligned by
    their structural index (``VariableInfo.index``) when their shapes agree.

The database does the work: buckets are ``GROUP BY`` over ``(step - first) / width``,
so a 10k-step run never travels to Python whole. The per-layer series read the
``layer_steps`` table (per-layer sums of squares formed at ingest), one narrow
row per (layer, step) instead of grouping ``var_steps``. Non-finite values are left out of
the lines (and reported as markers): SQLite keeps NaN as the text ``'NaN'``, so
the finite test is ``-inf < x < inf``, which is false for NaN on both backends.
The heat map reads sketches (float32 blobs) only at sampled steps: at most
``max_cols * SAMPLES_PER_COL`` steps per run.

NaN/Infinity in responses are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from gradtrace.store import AmbiguousRun, RunNotFound, Store
from gradtrace.store._layers import SUMS, Groups, decode
from gradtrace.store._layers import groups as layer_groups
from gradtrace.store.models import Layer, LayerStep, Run, Step, Variable, VarStep
from sqlalchemy import Double, Text, and_, cast, func, literal, not_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from starlette.responses import JSONResponse

from gradtrace_server._json import ArrayJSONResponse, GradtraceJSONResponse, jsonable
from gradtrace_server.api.deps import Access, ReadAccess, StoreDep

logger = logging.getLogger("gradtrace.server.plots")

router = APIRouter(prefix="/api/v1", tags=["plots"])

MAX_POINTS_LIMIT = 20_000
MAX_NONFINITE_LISTED = 200
SAMPLES_PER_COL = 3

_INF = literal(math.inf, Double())
_NEG_INF = literal(-math.inf, Double())


def _finite(col: Any) -> ColumnElement[bool]:
    # NULL, NaN (text 'NaN' on SQLite, NaN > +inf on PostgreSQL) and +-inf all fail this.
    return and_(col > _NEG_INF, col < _INF)


def _nonfinite(col: Any) -> ColumnElement[bool]:
    return and_(col.is_not(None), not_(_finite(col)))


@dataclass(frozen=True)
class _RunRef:
    key: int  # runs.id, the surrogate key of the big tables
    uid: str
    name: str
    project: str


def _resolve(store: Store, access: Access, ref: str, field: str) -> _RunRef:
    try:
        summary = store.resolve(ref, access.project)
    except RunNotFound as exc:
        raise HTTPException(404, f"{field}: {exc}") from None
    except AmbiguousRun as exc:
        raise HTTPException(400, f"{field}: {exc}") from None
    if not access.may_see(summary.project):
        raise HTTPException(404, f"{field}: no run {ref!r}")
    with store.engine.connect() as conn:
        key = conn.execute(select(Run.id).where(Run.uid == summary.id)).scalar_one()
    return _RunRef(key=key, uid=summary.id, name=summary.name, project=summary.project)


def _step_range(conn: Connection, key: int) -> tuple[int, int, int] | None:
    first, last, n = conn.execute(
        select(func.min(Step.step), func.max(Step.step), func.count()).where(Step.run_id == key)
    ).one()
    if n == 0:
        return None
    return int(first), int(last), int(n)


def _width(first: int, last: int, max_points: int) -> int:
    return max(1, math.ceil((last - first + 1) / max_points))


def _sqrt_list(values: list[float | None]) -> list[float | None]:
    return [None if v is None else math.sqrt(max(v, 0.0)) for v in values]


def _bucketed(
    rows: Iterable[Sequence[Any]], nb: int, *, sqrt: bool = False
) -> dict[Any, dict[str, list[float | None]]]:
    """Rows ``(series_key, bucket, min, max)`` -> ``{key: {"min": [...], "max": [...]}}``."""
    out: dict[Any, dict[str, list[float | None]]] = {}
    for key, b, lo, hi in rows:
        s = out.get(key)
        if s is None:
            s = out[key] = {"min": [None] * nb, "max": [None] * nb}
        b = int(b)
        if 0 <= b < nb:
            s["min"][b] = None if lo is None else float(lo)
            s["max"][b] = None if hi is None else float(hi)
    for s in out.values():
        if sqrt:
            s["min"], s["max"] = _sqrt_list(s["min"]), _sqrt_list(s["max"])
        s["min"], s["max"] = _short(s["min"]), _short(s["max"])
    return out


def _short(values: list[float | None]) -> list[float | None]:
    # Plots need no more than float32 precision; 9 digits round-trip a float32 and
    # keep a 10k-step response small.
    return [None if v is None else float(f"{v:.9g}") for v in values]


def _layer_names(conn: Connection, key: int) -> dict[int, str]:
    return {
        int(i): n
        for i, n in conn.execute(select(Layer.idx, Layer.name).where(Layer.run_id == key).order_by(Layer.idx))
    }


def _layer_groups(conn: Connection, key: int) -> Groups:
    """The run's variables grouped by layer, in inventory order (the grouping ``layer_steps`` is keyed by)."""
    return layer_groups(conn, key)


def _layer_series(
    conn: Connection, key: int, groups: Groups, first: int, width: int, nb: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-layer gradient norm, update-to-weight ratio and state change, min/max per bucket.

    Reads ``layer_steps`` (per step, arrays over layers of ``sum |g_v|^2``,
    ``sum |dw_v|^2``, ``sum |w_v|^2`` and ``sum |delta|^2``, formed at ingest) and
    plots ``sqrt(sum |g_v|^2)``, ``sqrt(sum |dw_v|^2 / sum |w_v|^2)`` and
    ``sqrt(sum |delta|^2)``: one row per step, bucketed in numpy.
    """
    nl = len(groups.labels)
    ls = LayerStep.__table__
    rows = conn.execute(
        select(ls.c.step, *[ls.c[k] for k in SUMS]).where(ls.c.run_id == key, ls.c.step >= first).order_by(ls.c.step)
    ).all()
    if not rows or not nl:
        return [], [], []
    steps = np.array([r[0] for r in rows], dtype=np.int64)
    grad, upd, weight, state = (_matrix([r[1 + i] for r in rows], nl) for i in range(len(SUMS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(weight > 0, upd / weight, np.nan)
    b = (steps - first) // width
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    cols = b[starts]
    keep = (cols >= 0) & (cols < nb)

    def series(values: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for reduce in (np.fmin, np.fmax):  # NaN-ignoring; NaN only where a bucket has nothing
            grid = np.full((nb, nl), np.nan)
            grid[cols[keep]] = reduce.reduceat(values, starts, axis=0)[keep]
            with np.errstate(invalid="ignore"):
                out.append(np.sqrt(np.maximum(grid, 0.0), where=~np.isnan(grid), out=grid).T)
        lo, hi = out
        lo, hi = _round9(lo), _round9(hi)
        return [
            {"layer": groups.labels[g], "min": _row_json(lo[g]), "max": _row_json(hi[g])}
            for g in range(nl)
            if not np.isnan(hi[g]).all()
        ]

    return series(grad), series(ratio), series(state)


def _matrix(blobs: list[bytes | None], nl: int) -> np.ndarray:
    """Stored per-step arrays as one (steps, layers) float64 matrix (NaN where absent)."""
    if all(b is not None and len(b) == 8 * nl for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype="<f8").reshape(len(blobs), nl)  # type: ignore[arg-type]
    return np.stack([decode(b, nl) for b in blobs])


def _round9(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to 9 significant digits (what ``_short`` does one value at a time)."""
    out = x.copy()
    ok = np.isfinite(x) & (x != 0)
    v = x[ok]
    k = 8 - np.floor(np.log10(np.abs(v))).astype(np.int64)
    # multiply/divide by an exact power of ten so the result is the double nearest the decimal
    pos = np.clip(k, 0, 22).astype(np.float64)
    neg = np.clip(-k, 0, 22).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.where(k >= 0, np.round(v * 10.0**pos) / 10.0**pos, np.round(v / 10.0**neg) * 10.0**neg)
    small = np.abs(k) > 22  # beyond exact powers of ten (|x| < 1e-14 or > 1e30): one at a time
    r[small] = [float(f"{y:.9g}") for y in v[small].tolist()]
    out[ok] = r
    return out


def _row_json(values: np.ndarray) -> np.ndarray | list[Any]:
    """A grid row for orjson: the array itself (NaN, "no data", is written as null) unless
    it holds an infinite value, which becomes "Infinity" in a list."""
    if not np.isinf(values).any():
        return np.ascontiguousarray(values)
    return [None if v != v else (v if math.isfinite(v) else ("Infinity" if v > 0 else "-Infinity"))
            for v in values.tolist()]


def _modes(conn: Connection, key: int, first: int, last: int, width: int) -> list[dict[str, Any]]:
    bucket = ((Step.step - first) // width).label("b")
    text = cast(Step.modes, Text).label("m")
    stmt = (
        select(bucket, text, func.count())
        .where(Step.run_id == key, Step.modes.is_not(None))
        .group_by(bucket, text)
        .order_by(bucket)
    )
    # bucket -> layer -> the set of values seen in it
    seen: dict[str, dict[int, set[Any]]] = defaultdict(lambda: defaultdict(set))
    for b, m, _n in conn.execute(stmt):
        try:
            modes = json.loads(m) if isinstance(m, str) else m
        except ValueError:
            continue
        if not isinstance(modes, dict):
            continue
        for layer, value in modes.items():
            seen[str(layer)][int(b)].add(value if value in (True, False, None) else str(value))
    order = _layer_names(conn, key)
    rank = {name: i for i, name in enumerate(order.values())}
    out = []
    for layer in sorted(seen, key=lambda n: (rank.get(n, len(rank)), n)):
        segments: list[list[Any]] = []
        for b in sorted(seen[layer]):
            vals = seen[layer][b]
            value: Any = next(iter(vals)) if len(vals) == 1 else "mixed"
            start = first + b * width
            end = min(last, start + width - 1)
            if segments and segments[-1][2] == value and segments[-1][1] == start - 1:
                segments[-1][1] = end
            else:
                segments.append([start, end, value])
        out.append({"layer": layer, "segments": segments})
    return out


def _nonfinite_steps(conn: Connection, key: int) -> tuple[list[dict[str, Any]], int]:
    cond = or_(Step.nonfinite > 0, _nonfinite(Step.loss), _nonfinite(Step.grad_norm))
    total = conn.execute(select(func.count()).where(Step.run_id == key, cond)).scalar_one()
    if not total:
        return [], 0
    rows = conn.execute(
        select(Step.step, Step.loss).where(Step.run_id == key, cond).order_by(Step.step).limit(MAX_NONFINITE_LISTED)
    ).all()
    steps = [int(r[0]) for r in rows]
    bad_vars: dict[int, list[str]] = defaultdict(list)
    for step, name in conn.execute(
        select(VarStep.step, Variable.name)
        .join(Variable, and_(Variable.run_id == VarStep.run_id, Variable.idx == VarStep.v))
        .where(
            VarStep.run_id == key,
            VarStep.step.between(steps[0], steps[-1]),
            or_(VarStep.nonfinite > 0, _nonfinite(VarStep.norm)),
        )
        .order_by(VarStep.step, VarStep.v)
    ):
        if len(bad_vars[int(step)]) < 20:
            bad_vars[int(step)].append(name)
    out = []
    for step, loss in rows:
        loss_bad = loss is not None and not math.isfinite(loss)
        variables = bad_vars.get(int(step), [])
        what = " and ".join(x for x in ("loss" if loss_bad else "", "gradient" if variables else "") if x)
        out.append({"step": int(step), "what": what or "gradient", "loss": loss, "variables": variables})
    return out, int(total)


MaxPoints = Annotated[
    int,
    Query(ge=10, le=MAX_POINTS_LIMIT, description="at most this many buckets on the step axis"),
]


@router.get("/runs/{run_id}/plots", summary="Downsampled per-step plot data of one run")
def run_plots(run_id: str, store: StoreDep, access: ReadAccess, max_points: MaxPoints = 2000) -> JSONResponse:
    """Loss, per-layer gradient norm, update/weight ratio, state changes, modes and non-finite steps."""
    ref = _resolve(store, access, run_id, "run_id")
    with store.engine.connect() as conn:
        rng = _step_range(conn, ref.key)
        doc: dict[str, Any] = {"run_id": ref.uid, "name": ref.name, "project": ref.project, "max_points": max_points}
        if rng is None:
            doc.update(num_steps=0, first_step=None, last_step=None, bucket_width=1, x=[],
                       loss={"min": [], "max": []}, grad_norm=[], update_ratio=[], state=[], modes=[],
                       nonfinite=[], nonfinite_total=0)
            return GradtraceJSONResponse(doc)
        first, last, n = rng
        width = _width(first, last, max_points)
        nb = (last - first) // width + 1
        bucket = ((Step.step - first) // width).label("b")
        loss_rows = conn.execute(
            select(literal(0), bucket, func.min(Step.loss), func.max(Step.loss))
            .where(Step.run_id == ref.key, _finite(Step.loss))
            .group_by(bucket)
        )
        loss = _bucketed(loss_rows, nb).get(0, {"min": [None] * nb, "max": [None] * nb})
        groups = _layer_groups(conn, ref.key)
        grad, update, state = _layer_series(conn, ref.key, groups, first, width, nb)
        nonfinite, nonfinite_total = _nonfinite_steps(conn, ref.key)
        doc.update(
            num_steps=n,
            first_step=first,
            last_step=last,
            bucket_width=width,
            x=[first + b * width for b in range(nb)],
            loss=loss,
            grad_norm=grad,
            update_ratio=update,
            state=state,
            modes=_modes(conn, ref.key, first, last, width),
            nonfinite=jsonable(nonfinite),  # the only part that may hold a NaN float (a loss)
            nonfinite_total=nonfinite_total,
        )
    # orjson writes the per-layer grids from numpy; everything else in doc is finite or encoded.
    return ArrayJSONResponse(doc)


def _global_series(conn: Connection, key: int, col: Any, first: int, width: int, nb: int) -> dict[str, list[float | None]]:
    bucket = ((Step.step - first) // width).label("b")
    rows = conn.execute(
        select(literal(0), bucket, func.min(col), func.max(col))
        .where(Step.run_id == key, Step.step >= first, _finite(col))
        .group_by(bucket)
    )
    return _bucketed(rows, nb).get(0, {"min": [None] * nb, "max": [None] * nb})


def _aligned_variables(conn: Connection, a: int, b: int, groups: Groups) -> list[tuple[int, str, int]]:
    """Trainable variables both runs have at the same index with the same shape.

    Returns ``(v, label, layer group)`` with labels and groups from run A.
    """

    def inventory(key: int) -> dict[int, tuple[Any, str]]:
        return {
            int(idx): (shape, name.rsplit("/", 1)[-1])
            for idx, name, shape in conn.execute(
                select(Variable.idx, Variable.name, Variable.shape)
                .where(Variable.run_id == key, Variable.trainable.is_(True))
                .order_by(Variable.idx)
            )
        }

    inv_a, inv_b = inventory(a), inventory(b)
    return [
        (v, f"{groups.labels[groups.of[v]]} · {inv_a[v][1]}", groups.of[v])
        for v in sorted(inv_a)
        if v in inv_b and inv_a[v][0] == inv_b[v][0] and v in groups.of
    ]


def _measured_steps(conn: Connection, key: int, first: int, last: int) -> np.ndarray:
    """The steps of a run in [first, last] with per-variable statistics (a global gradient norm)."""
    rows = conn.execute(
        select(Step.step)
        .where(Step.run_id == key, Step.step.between(first, last), Step.grad_norm.is_not(None))
        .order_by(Step.step)
    )
    return np.fromiter((int(s) for (s,) in rows), dtype=np.int64)


def _sketch(blob: bytes | None) -> np.ndarray | None:
    if not blob:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float64)


def _heatmap(
    conn: Connection, a: _RunRef, b: _RunRef, first: int, last: int, max_cols: int, by: str
) -> dict[str, Any]:
    groups = _layer_groups(conn, a.key)
    aligned = _aligned_variables(conn, a.key, b.key, groups)
    if not aligned:
        return {"rows": [], "cols": [], "col_width": 1, "ratio": [], "cosine": [], "by": by,
                "note": "no trainable variable has the same index and shape in both runs"}
    if by == "layer":
        row_keys = sorted({g for _, _, g in aligned})
        row_of = {v: row_keys.index(g) for v, _, g in aligned}
        row_labels = [groups.labels[g] for g in row_keys]
    else:
        row_of = {v: i for i, (v, _, _) in enumerate(aligned)}
        row_labels = [label for _, label, _ in aligned]
    # Columns cover the steps whose per-variable statistics both runs measured (every step,
    # or every N-th at the default cadence), not the step axis: no column is left empty
    # because the steps it spans were recorded without statistics.
    steps = np.intersect1d(_measured_steps(conn, a.key, first, last), _measured_steps(conn, b.key, first, last))
    if not steps.size:
        return {"rows": [], "cols": [], "col_width": 1, "ratio": [], "cosine": [], "by": by,
                "note": "no step has per-variable statistics in both runs"}
    col_width = max(1, math.ceil(steps.size / max_cols))  # measured steps per column
    ncols = math.ceil(steps.size / col_width)
    stride = max(1, col_width // SAMPLES_PER_COL)
    pos = np.arange(steps.size)
    sampled = steps[(pos % col_width) % stride == 0]
    col_of = {int(s): int(i) // col_width for i, s in zip(pos, steps, strict=True)}
    rows = (
        row
        for chunk in range(0, sampled.size, 500)
        for row in conn.execute(
            select(VarStep.run_id, VarStep.step, VarStep.v, VarStep.norm, VarStep.sketch)
            .where(
                VarStep.run_id.in_([a.key, b.key]),
                VarStep.step.in_([int(s) for s in sampled[chunk : chunk + 500]]),
                VarStep.v.in_(list(row_of)),
            )
            .order_by(VarStep.step)
        )
    )
    # (step, row) -> per run: [sum of squared norms, sketches]
    acc: dict[tuple[int, int], dict[int, list[Any]]] = defaultdict(lambda: {a.key: [0.0, {}], b.key: [0.0, {}]})
    for run_key, step, v, norm, blob in rows:
        cell = acc[(int(step), row_of[int(v)])][run_key]
        if norm is not None and math.isfinite(norm):
            cell[0] += norm * norm
        else:
            cell[0] = math.nan
        sk = _sketch(blob)
        if sk is not None:
            cell[1][int(v)] = sk
    nrows = len(row_labels)
    log_ratio_sum = np.zeros((nrows, ncols))
    log_ratio_n = np.zeros((nrows, ncols))
    cos_sum = np.zeros((nrows, ncols))
    cos_n = np.zeros((nrows, ncols))
    for (step, r), runs in acc.items():
        c = col_of[step]
        sa, sb = runs[a.key], runs[b.key]
        if sa[0] > 0 and sb[0] > 0 and math.isfinite(sa[0]) and math.isfinite(sb[0]):
            log_ratio_sum[r, c] += 0.5 * math.log(sb[0] / sa[0])
            log_ratio_n[r, c] += 1
        common = [v for v in sa[1] if v in sb[1] and sa[1][v].shape == sb[1][v].shape]
        if common:
            va = np.concatenate([sa[1][v] for v in common])
            vb = np.concatenate([sb[1][v] for v in common])
            den = float(np.linalg.norm(va) * np.linalg.norm(vb))
            if den > 0 and math.isfinite(den):
                cos_sum[r, c] += float(va @ vb) / den
                cos_n[r, c] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(log_ratio_n > 0, np.exp(log_ratio_sum / np.maximum(log_ratio_n, 1)), np.nan)
        cosine = np.where(cos_n > 0, cos_sum / np.maximum(cos_n, 1), np.nan)

    def cells(m: np.ndarray) -> list[list[float | None]]:
        return [[None if not math.isfinite(x) else round(float(x), 6) for x in row] for row in m]

    return {
        "by": by,
        "rows": row_labels,
        "cols": [int(steps[c * col_width]) for c in range(ncols)],
        "col_last": [int(steps[min((c + 1) * col_width, steps.size) - 1]) for c in range(ncols)],
        "col_width": col_width,
        "measured_steps": int(steps.size),
        "span": last - first + 1,
        "sample_stride": stride,
        "ratio": cells(ratio),
        "cosine": cells(cosine),
    }


@router.get("/plots/compare", summary="Two runs on one step axis, and a heat map of their gradients")
def compare_plots(
    store: StoreDep,
    access: ReadAccess,
    a: Annotated[str, Query(min_length=1, max_length=200, description="run A: uid, unique uid prefix or name")],
    b: Annotated[str, Query(min_length=1, max_length=200, description="run B")],
    max_points: MaxPoints = 1000,
    max_cols: Annotated[int, Query(ge=1, le=2000, description="heat map columns (step buckets)")] = 160,
    by: Annotated[Literal["variable", "layer"], Query(description="heat map rows")] = "variable",
) -> GradtraceJSONResponse:
    """Loss and global gradient norm of both runs, bucketed alike; gradient ratio/cosine heat map."""
    ra = _resolve(store, access, a, "a")
    rb = _resolve(store, access, b, "b")
    with store.engine.connect() as conn:
        range_a, range_b = _step_range(conn, ra.key), _step_range(conn, rb.key)
        doc: dict[str, Any] = {
            "a": {"id": ra.uid, "name": ra.name, "num_steps": range_a[2] if range_a else 0},
            "b": {"id": rb.uid, "name": rb.name, "num_steps": range_b[2] if range_b else 0},
        }
        if range_a is None or range_b is None:
            doc.update(x=[], bucket_width=1, loss={"a": None, "b": None}, grad_norm={"a": None, "b": None},
                       heatmap={"rows": [], "cols": [], "ratio": [], "cosine": [], "by": by,
                                "note": "a run without recorded steps"})
            return GradtraceJSONResponse(doc)
        first = min(range_a[0], range_b[0])
        last = max(range_a[1], range_b[1])
        width = _width(first, last, max_points)
        nb = (last - first) // width + 1
        doc.update(
            first_step=first,
            last_step=last,
            bucket_width=width,
            x=[first + i * width for i in range(nb)],
            loss={r: _global_series(conn, ref.key, Step.loss, first, width, nb) for r, ref in (("a", ra), ("b", rb))},
            grad_norm={
                r: _global_series(conn, ref.key, Step.grad_norm, first, width, nb) for r, ref in (("a", ra), ("b", rb))
            },
        )
        common_first, common_last = max(range_a[0], range_b[0]), min(range_a[1], range_b[1])
        if common_first > common_last:
            doc["heatmap"] = {"rows": [], "cols": [], "ratio": [], "cosine": [], "by": by,
                              "note": "the runs share no step numbers"}
        else:
            doc["heatmap"] = _heatmap(conn, ra, rb, common_first, common_last, max_cols, by)
    return GradtraceJSONResponse(doc)


__all__ = ["router"]
