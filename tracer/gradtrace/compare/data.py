"""One run as arrays: what the comparator reads, independent of where it came from.

:class:`RunData` holds per-step columns as numpy arrays (``S`` steps) and
per-variable columns as ``(S, V)`` matrices whose column ``j`` is the variable
``var_index[j]`` (a :class:`~gradtrace.schema.VariableInfo` index). Missing
values are NaN in float arrays; "not recorded" booleans are NaN in float arrays
too (1.0 true, 0.0 false). Facts stored as JSON per step (training modes, shapes,
broadcasts) are kept as *distinct values* with the first step each appeared at,
which is all the detectors need and stays small for 10k-step runs; the loss
details are kept for the first ``HEAD`` steps.

Build one from records (tests, the tracer in memory) with :func:`from_records`,
or from a store with :func:`gradtrace.compare.reader.read_run`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEAD = 64  # steps whose sketches, loss details and per-variable rows are read up front
VSUM_KEYS = ("n_rows", "n_grad", "n_nograd", "first_nograd", "n_applied", "first_notapplied",
             "first_notapplied_nonzero",
             "first_nonfinite")
FP_LEN = 16
# The (R, V) per-variable matrices of RunData, one row per step read (``var_rows``):
# gradient present (1/0/NaN), its norm, non-finite entries, applied, the update's norm, and the
# gradient's smallest and largest entry (recorded on full steps).
VAR_ROW_COLS = ("grad", "norm", "nonfinite", "applied", "update_norm", "gmin", "gmax")


@dataclass
class RunData:
    """A run's metadata and step columns, ready for the detectors."""

    uid: str
    name: str
    meta: dict[str, Any]
    variables: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    step: np.ndarray  # (S,) int64
    loss: np.ndarray  # (S,) float64
    reg_loss: np.ndarray
    lr: np.ndarray
    loss_scale: np.ndarray
    batch_size: np.ndarray
    iterations: np.ndarray
    skipped: np.ndarray  # float: nan unknown
    x_fp: np.ndarray  # (S, FP_LEN) nan-padded
    y_fp: np.ndarray
    grad_norm: np.ndarray  # (S,) global gradient norm of the step
    nonfinite_step: np.ndarray  # (S,) non-finite gradient entries in the step
    n_applied: np.ndarray  # (S,) variables the step updated
    var_index: np.ndarray  # (V,) int
    var_rows: np.ndarray  # (R,) steps held in the var matrices below (sorted)
    grad: np.ndarray  # (R, V) float 1/0/nan
    norm: np.ndarray
    nonfinite: np.ndarray
    applied: np.ndarray
    update_norm: np.ndarray
    sketch_steps: np.ndarray  # (K,) steps (< HEAD) with sketches
    sketch: np.ndarray  # (K, V, D) float32; D may be 0
    vsum: dict[str, np.ndarray]  # per variable over all steps, see VSUM_KEYS
    state_index: np.ndarray  # (Vn,)
    state_changed: np.ndarray  # (Vn,) steps in which it changed
    rng: np.ndarray  # (Vn,) bool
    # distinct JSON facts: list of (value, first_step, count)
    modes: list[tuple[dict[str, Any], int, int]] = field(default_factory=list)
    exec_modes: list[tuple[Any, int, int]] = field(default_factory=list)
    target_shapes: list[tuple[Any, int, int]] = field(default_factory=list)
    y_pred_shapes: list[tuple[Any, int, int]] = field(default_factory=list)
    broadcasts: list[tuple[Any, int, int]] = field(default_factory=list)
    frozen: list[tuple[list[str], int, int]] = field(default_factory=list)  # layers that ran with trainable=False
    loss_info: dict[int, dict[str, Any]] = field(default_factory=dict)  # first HEAD steps
    loader: Callable[[int, int], dict[str, np.ndarray]] | None = None
    # A later step's loss details (read one step at a time, on demand): None if not recorded.
    loss_info_at: Callable[[int], dict[str, Any] | None] | None = None
    # (S,) bool: the step carries per-variable statistics. The tracer's cadence records
    # them on some steps only; elsewhere norms are "not recorded", not NaN data.
    stats: np.ndarray | None = None
    # (S,) bool: the step recorded a loss (NaN included). A step whose loss could not be
    # known (a stale split-step stash) has none, which is not a NaN loss.
    loss_known: np.ndarray | None = None
    # (S, Vn): each state variable's change (delta norm) at the first HEAD steps; NaN elsewhere
    # and where not recorded.
    state_delta: np.ndarray | None = None
    # (S,) variables with a gradient in the step (full steps: counted; light ones: the tracer's
    # count); NaN where not known.
    n_grad: np.ndarray | None = None
    # (R, V) the gradient's smallest and largest entry (full steps; NaN elsewhere)
    gmin: np.ndarray | None = None
    gmax: np.ndarray | None = None

    def __post_init__(self) -> None:
        for k in ("gmin", "gmax"):
            if getattr(self, k) is None:
                setattr(self, k, np.full(np.shape(self.grad), np.nan))
        if self.stats is None:
            self.stats = ~np.isnan(self.grad_norm) | (np.nan_to_num(self.n_applied, nan=0.0) > 0)

    def ensure_rows(self, lo: int, hi: int) -> None:
        """Make var rows for steps ``lo <= step < hi`` available (a reader loads them on demand)."""
        have = set(self.var_rows.tolist())
        if self.loader is None or all(s in have for s in range(lo, hi) if s < self.n_steps):
            return
        got = self.loader(lo, hi)
        steps = np.concatenate([self.var_rows, got["steps"]])
        order = np.argsort(steps, kind="stable")
        steps = steps[order]
        keep = np.concatenate([[True], np.diff(steps) != 0])
        self.var_rows = steps[keep]
        for k in VAR_ROW_COLS:
            mat = np.concatenate([getattr(self, k), got[k]])[order][keep]
            setattr(self, k, mat)

    def rows(self, steps: np.ndarray) -> np.ndarray:
        """Row indices of the var matrices for ``steps`` (-1 where not loaded)."""
        idx = np.searchsorted(self.var_rows, steps)
        idx = np.clip(idx, 0, max(len(self.var_rows) - 1, 0))
        ok = len(self.var_rows) > 0
        hit = (self.var_rows[idx] == steps) if ok else np.zeros(np.shape(steps), dtype=bool)
        return np.where(hit, idx, -1)

    @property
    def n_steps(self) -> int:
        return int(self.step.shape[0])

    def var_info(self, index: int) -> dict[str, Any]:
        by = self._by_index()
        return by.get(int(index), {"index": int(index), "name": f"#{index}"})

    def loss_info_of(self, step: int) -> dict[str, Any]:
        """The loss details recorded at ``step`` (the first steps held, a later one read on
        demand), or {}."""
        info = self.loss_info.get(step)
        if info is None and self.loss_info_at is not None:
            info = self.loss_info_at(step)
        return info or {}

    def fit_calls(self) -> list[dict[str, Any]]:
        """Every fit() call of the run in order (records before ``fit_calls``: the last one
        only); [] for a run without fit()."""
        calls = self.meta.get("fit_calls") or []
        fit = self.meta.get("fit")
        return [dict(c) for c in calls] if calls else ([dict(fit)] if fit else [])

    def tracked_name(self, layer: dict[str, Any]) -> str:
        """The name the tracer records an inventory layer's modes and calls under: its own, or
        ``name#k`` for the k-th layer of the run with that name (a cloned model keeps its
        layers' names; ``gradtrace._probes._Probe.layer_name``), in inventory order, which is
        the order the models were first called."""
        names = self.__dict__.get("_tracked")
        if names is None:
            names, seen = {}, {}
            for x in sorted(self.layers, key=lambda x: int(x.get("index") or 0)):
                base = str(x.get("name"))
                seen[base] = seen.get(base, 0) + 1
                names[int(x.get("index") or 0)] = base if seen[base] == 1 else f"{base}#{seen[base]}"
            self.__dict__["_tracked"] = names
        return names.get(int(layer.get("index") or 0), str(layer.get("name")))

    def layer_tracked_as(self, name: str) -> dict[str, Any] | None:
        """The inventory's layer the tracer records as ``name`` (see :meth:`tracked_name`)."""
        return next((x for x in self.layers if self.tracked_name(x) == name), None)

    def var_name(self, index: int) -> str:
        return str(self.var_info(index).get("name") or f"#{index}")

    def _by_index(self) -> dict[int, dict[str, Any]]:
        cache = self.__dict__.get("_vcache")
        if cache is None:
            cache = {int(v["index"]): v for v in self.variables}
            self.__dict__["_vcache"] = cache
        return cache

    def batch_at(self, row: int) -> float:
        """The batch size recorded at ``row`` (NaN where none was: the row is past the run's end,
        or the step's batch had no leading dimension)."""
        return float(self.batch_size[row]) if 0 <= row < self.batch_size.size else float("nan")

    def describe(self) -> dict[str, Any]:
        """Identity of the run for the report."""
        return {
            "id": self.uid,
            "name": self.name,
            "project": self.meta.get("project"),
            "steps": self.n_steps,
            "status": self.meta.get("status"),
        }


def first_batch(a: RunData, b: RunData, default: int) -> int:
    """The larger of the two runs' first batch sizes, ``default`` when neither recorded one."""
    sizes = [x for x in (a.batch_at(0), b.batch_at(0)) if math.isfinite(x)]
    return int(max(sizes)) if sizes else default


def _f(x: Any) -> float:
    if x is None:
        return float("nan")
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _fp(values: Any) -> np.ndarray:
    out = np.full(FP_LEN, np.nan)
    if values:
        vals = [_f(v) for v in list(values)[:FP_LEN]]
        out[: len(vals)] = vals
    return out


def distinct(values: list[Any], steps: list[int]) -> list[tuple[Any, int, int]]:
    """Distinct JSON-able values with the first step each was seen and how often."""
    seen: dict[str, list[Any]] = {}
    for v, s in zip(values, steps, strict=False):
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            seen[key][2] += 1
        else:
            seen[key] = [v, s, 1]
    return [(v, int(s), int(c)) for v, s, c in seen.values()]


def summarise_vars(
    step: np.ndarray, grad: np.ndarray, applied: np.ndarray, nonfinite: np.ndarray, skipped: np.ndarray,
    norm: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-variable facts over all steps (the reader computes the same with SQL).

    ``first_notapplied`` counts only steps in which the optimizer updated some
    variable and did not skip: accumulation and overflow steps change nothing,
    which is no evidence against a particular variable. ``first_notapplied_nonzero``
    also leaves out exactly zero gradients (a bias whose contributions cancel), which no
    optimizer turns into an update: alone they prove nothing, against a run where the
    same variable has a gradient and moves they do.
    """
    V = grad.shape[1]
    nan = np.full(V, np.nan)
    if not grad.size:
        return {k: nan.copy() for k in VSUM_KEYS}
    upd = (np.nan_to_num(applied, nan=0.0) > 0).any(axis=1) & ~(np.nan_to_num(skipped, nan=0.0) > 0)
    g1, g0 = grad == 1, grad == 0
    na = upd[:, None] & g1 & (applied == 0)
    na_nz = na & ~(norm == 0) if norm is not None else na
    nf = np.nan_to_num(nonfinite, nan=0.0) > 0

    def first(mask: np.ndarray) -> np.ndarray:
        anyv = mask.any(axis=0)
        return np.where(anyv, step[np.argmax(mask, axis=0)].astype(float), np.nan)

    return {
        "n_rows": (~np.isnan(grad)).sum(axis=0).astype(float),
        "n_grad": g1.sum(axis=0).astype(float),
        "n_nograd": g0.sum(axis=0).astype(float),
        "first_nograd": first(g0),
        "n_applied": (applied == 1).sum(axis=0).astype(float),
        "first_notapplied": first(na),
        "first_notapplied_nonzero": first(na_nz),
        "first_nonfinite": first(nf),
    }



def loss_details(info: dict[str, Any]) -> dict[str, Any]:
    """A step's loss details, Keras 3's ``reduction=None`` as ``"none"`` (older records wrote the
    string ``"None"``)."""
    calls = info.get("calls")
    if info.get("reduction") == "None" or any(isinstance(c, dict) and c.get("reduction") == "None"
                                              for c in calls or []):
        info = {**info, "reduction": "none" if info.get("reduction") == "None" else info.get("reduction")}
        if calls:
            info["calls"] = [{**c, "reduction": "none"} if isinstance(c, dict) and c.get("reduction") == "None"
                             else c for c in calls]
    return info

def from_records(run: Any, steps: list[Any]) -> RunData:
    """Build :class:`RunData` from a ``schema.RunInfo`` and its ``schema.StepRecord`` list."""
    info = run.model_dump(mode="python") if hasattr(run, "model_dump") else dict(run)
    recs = sorted(
        (s.model_dump(mode="python") if hasattr(s, "model_dump") else dict(s) for s in steps),
        key=lambda r: r["step"],
    )
    variables = info.pop("variables", []) or []
    layers = info.pop("layers", []) or []
    vidx = sorted({int(v["v"]) for r in recs for v in r.get("vars") or []})
    sidx = sorted({int(v["v"]) for r in recs for v in r.get("state") or []})
    vcol = {v: j for j, v in enumerate(vidx)}
    scol = {v: j for j, v in enumerate(sidx)}
    S, V, Vn = len(recs), len(vidx), len(sidx)

    def mat(n: int) -> np.ndarray:
        return np.full((S, n), np.nan)

    grad, norm, nonfinite, applied, upd, gmin, gmax = (mat(V) for _ in range(7))
    changed = np.zeros(Vn)
    rng = np.zeros(Vn, dtype=bool)
    sdelta = np.full((S, Vn), np.nan)
    head = [i for i, r in enumerate(recs) if r["step"] < HEAD]
    dim = max((len(v.get("sketch") or []) for i in head for v in recs[i].get("vars") or []), default=0)
    sketch = np.full((len(head), V, dim), np.nan, dtype=np.float32)
    for i, r in enumerate(recs):
        for v in r.get("vars") or []:
            j = vcol[int(v["v"])]
            grad[i, j] = _f(v.get("grad"))
            norm[i, j] = _f(v.get("norm"))
            nonfinite[i, j] = _f(v.get("nonfinite"))
            applied[i, j] = _f(v.get("applied"))
            upd[i, j] = _f(v.get("update_norm"))
            gmin[i, j], gmax[i, j] = _f(v.get("min")), _f(v.get("max"))
            sk = v.get("sketch")
            if sk and r["step"] < HEAD and dim:
                sketch[i, j, : len(sk)] = [_f(x) for x in sk]
        for st in r.get("state") or []:
            j = scol[int(st["v"])]
            changed[j] += 1 if st.get("changed") else 0
            rng[j] = rng[j] or bool(st.get("rng"))
            if r["step"] < HEAD:
                sdelta[i, j] = _f(st.get("delta_norm"))

    def col(key: str) -> np.ndarray:
        return np.array([_f(r.get(key)) for r in recs], dtype=np.float64)

    step_nums = np.array([int(r["step"]) for r in recs], dtype=np.int64)
    skipped = col("skipped")
    recorded = (~np.isnan(applied) | ~np.isnan(norm)).any(axis=1) if V else np.zeros(S, dtype=bool)
    with np.errstate(invalid="ignore"):
        sq = np.where((grad == 1) & ~np.isnan(norm), norm, 0.0) ** 2
        # NaN norms are data (a non-finite gradient) and make the step's norm NaN, as at ingest.
        sq = np.where((grad == 1) & np.isnan(norm) & ~np.isnan(applied), np.nan, sq)
        gnorm = np.sqrt(np.sum(sq, axis=1)) if V else np.full(S, np.nan)
    gnorm = np.where(recorded & (grad == 1).any(axis=1) if V else recorded, gnorm, np.nan)
    return RunData(
        uid=str(info.get("run_id", "")),
        name=str(info.get("name", "")),
        meta=info,
        variables=[dict(v) for v in variables],
        layers=[dict(x) for x in layers],
        step=step_nums,
        loss=col("loss"),
        reg_loss=col("reg_loss"),
        lr=col("lr"),
        loss_scale=col("loss_scale"),
        batch_size=col("batch_size"),
        iterations=col("iterations"),
        skipped=skipped,
        x_fp=np.array([_fp(r.get("x_fp")) for r in recs]).reshape(S, FP_LEN),
        y_fp=np.array([_fp(r.get("y_fp")) for r in recs]).reshape(S, FP_LEN),
        grad_norm=gnorm,
        nonfinite_step=np.nansum(nonfinite, axis=1) if V else np.zeros(S),
        n_applied=(applied == 1).sum(axis=1).astype(float) if V else np.zeros(S),
        n_grad=np.array([float(r["n_grad"]) if r.get("n_grad") is not None
                         else float((grad[i] == 1).sum()) if V and r.get("vars") else np.nan
                         for i, r in enumerate(recs)], dtype=np.float64),
        var_index=np.array(vidx, dtype=np.int64),
        var_rows=step_nums.copy(),
        grad=grad,
        norm=norm,
        nonfinite=nonfinite,
        applied=applied,
        update_norm=upd,
        gmin=gmin,
        gmax=gmax,
        sketch_steps=step_nums[: len(head)].copy(),
        sketch=sketch,
        vsum=summarise_vars(step_nums, grad, applied, nonfinite, skipped, norm),
        state_index=np.array(sidx, dtype=np.int64),
        state_changed=changed,
        rng=rng,
        modes=distinct([r.get("modes") or {} for r in recs], step_nums.tolist()),
        exec_modes=distinct([r.get("mode") for r in recs], step_nums.tolist()),
        target_shapes=distinct([r.get("target_shape") for r in recs], step_nums.tolist()),
        y_pred_shapes=distinct([r.get("y_pred_shape") for r in recs], step_nums.tolist()),
        broadcasts=distinct([r.get("broadcasts") or [] for r in recs], step_nums.tolist()),
        frozen=distinct([r.get("frozen") or [] for r in recs], step_nums.tolist()),
        loss_info={r["step"]: loss_details(r["loss_info"]) for r in recs if r["step"] < HEAD and r.get("loss_info")},
        loss_info_at={int(r["step"]): loss_details(r["loss_info"]) for r in recs if r.get("loss_info")}.get,
        stats=recorded,
        loss_known=np.array([r.get("loss") is not None for r in recs], dtype=bool),
        state_delta=sdelta,
    )
