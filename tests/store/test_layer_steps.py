"""StepRecord.frozen round-trips; layer_steps (per-layer sums formed at ingest) equals the
sums written out plainly from the records and what a rebuild from var_steps/state_steps
stores, through NaN/Inf, inventory changes, replaced steps and deletion.
(Migration 0002 -> head: test_migrations.py.)"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from gradtrace.schema import Batch, RunInfo, StateStep, StepRecord, VariableInfo, VarStep
from gradtrace.store import Store, _layers
from gradtrace.store import models as m
from sqlalchemy import select

NAN, INF = float("nan"), float("inf")


def _inventory(nvars: int, layer_of: Callable[[int], int]) -> list[VariableInfo]:
    return [
        VariableInfo(index=i, name=f"model/dense_{layer_of(i)}/w{i}", layer=f"model/dense_{layer_of(i)}",
                     layer_index=None, shape=[3])
        for i in range(nvars)
    ]


def _steps(steps: range, nvars: int, seed: int = 0) -> list[StepRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for s in steps:
        vars_ = []
        for v in range(nvars):
            norm = float(rng.lognormal())
            if s == 3 and v == 1:
                norm = INF
            if s == 4 and v == 2:
                norm = NAN
            vars_.append(VarStep(
                v=v, grad=not (s == 5 and v == 0), norm=norm, nonfinite=int(not math.isfinite(norm)),
                update_norm=None if s == 6 else float(rng.uniform(0, 1)) * 1e-2,
                weight_norm=INF if (s == 2 and v == 3) else float(rng.uniform(1, 2)),
            ))
        state = [StateStep(v=nvars, changed=True, delta_norm=float(s)),
                 StateStep(v=nvars + 1, changed=True, delta_norm=5.0, rng=True)]
        out.append(StepRecord(step=s, loss=1.0, frozen=["bn"] if s % 2 else [], vars=vars_, state=state))
    return out


Sums = dict[tuple[int, int], tuple[float | None, ...]]


def _stored(store: Store, run: str) -> Sums:
    """(layer, step) -> (grad_sq, update_sq, weight_sq, state_sq) as stored; None = nothing."""
    t = m.LayerStep.__table__
    out: Sums = {}
    with store.engine.connect() as c:
        key = c.execute(select(m.Run.id).where(m.Run.uid == run)).scalar_one()
        for row in c.execute(select(t.c.step, *[t.c[k] for k in _layers.SUMS]).where(t.c.run_id == key)):
            arrays = [None if b is None else np.frombuffer(b, dtype="<f8") for b in row[1:]]
            nl = max(len(a) for a in arrays if a is not None)
            for g in range(nl):
                vals = tuple(None if a is None or math.isnan(a[g]) else float(a[g]) for a in arrays)
                if any(x is not None for x in vals):
                    out[(g, row[0])] = vals
    return out


def _rebuilt(store: Store, run: str) -> Sums:
    """Rebuild the run's rows from var_steps/state_steps (committed) and read them back."""
    with store.engine.connect() as c:
        key = c.execute(select(m.Run.id).where(m.Run.uid == run)).scalar_one()
        _layers.rebuild(c, key)
        c.commit()
    return _stored(store, run)


def _expected(records: list[StepRecord], of: dict[int, int]) -> Sums:
    """The reference: the sums written out plainly from the step records."""
    acc: dict[tuple[int, int], list[float | None]] = {}

    def add(key: tuple[int, int], i: int, x: float) -> None:
        cell = acc.setdefault(key, [None, None, None, None])
        cell[i] = (cell[i] or 0.0) + x * x

    for rec in records:
        for var in rec.vars:
            if var.v not in of:
                continue
            key = (of[var.v], rec.step)
            if var.grad and var.norm is not None and math.isfinite(var.norm):
                add(key, 0, var.norm)
            u, w = var.update_norm, var.weight_norm
            if u is not None and w is not None and math.isfinite(u) and math.isfinite(w):
                add(key, 1, u)
                add(key, 2, w)
        for st in rec.state:
            if st.v in of and not st.rng and st.delta_norm is not None and math.isfinite(st.delta_norm):
                add((of[st.v], rec.step), 3, st.delta_norm)
    return {k: tuple(v) for k, v in acc.items() if any(x is not None for x in v)}


def _close(got: Sums, want: Sums) -> None:
    assert got.keys() == want.keys() and got
    for k in want:
        for x, y in zip(got[k], want[k], strict=True):
            assert (x is None and y is None) or (x is not None and y is not None and x == pytest.approx(y, rel=1e-12)), (
                k, got[k], want[k])


def test_frozen_round_trips(store: Store, uid: Callable[[str], str]) -> None:
    run = uid("frozen")
    store.ingest(Batch(batch_id=uid("fb"), run=RunInfo(run_id=run, name="f"), steps=_steps(range(3), 2)))
    got = {r["step"]: r["frozen"] for r in store.steps(run, fields=["frozen"])}
    assert got == {0: [], 1: ["bn"], 2: []}
    assert "frozen" in next(store.steps(run))  # part of the default fields too


def test_layer_sums_at_ingest_equal_the_reference_and_the_rebuild(store: Store, uid: Callable[[str], str]) -> None:
    run = uid("layers")
    nvars = 6
    # variables 0..7 in layers 0,0,1,1,2,2,3,3; 6 and 7 are non-trainable state (7 an RNG)
    info = RunInfo(run_id=run, name="l", variables=_inventory(nvars + 2, lambda i: min(i // 2, 3)))
    recs = _steps(range(0, 8), nvars)
    store.ingest(Batch(batch_id=uid("a"), run=info, steps=recs))
    of = {i: min(i // 2, 3) for i in range(nvars + 2)}
    stored = _stored(store, run)
    _close(stored, _expected(recs, of))
    _close(_rebuilt(store, run), stored)
    # spot checks of the reference itself
    assert stored[(0, 5)][0] == pytest.approx(recs[5].vars[1].norm ** 2)  # v0's gradient did not arrive
    assert stored[(0, 3)][0] == pytest.approx(recs[3].vars[0].norm ** 2)  # v1's Inf left out
    assert stored[(1, 4)][0] == pytest.approx(recs[4].vars[3].norm ** 2)  # v2's NaN left out
    assert stored[(1, 2)][2] == pytest.approx(recs[2].vars[2].weight_norm ** 2)  # v3's Inf weight left out
    assert stored[(0, 6)][1] is None and stored[(0, 6)][2] is None  # no update recorded
    assert stored[(3, 4)][3] == pytest.approx(16.0)  # v6's change; v7's RNG change not counted


def test_regrouping_inventory_and_replaced_steps_rebuild(store: Store, uid: Callable[[str], str]) -> None:
    run = uid("regroup")
    nvars = 4
    first = _steps(range(0, 4), nvars)
    # Steps arrive before any inventory: nothing can be grouped yet.
    store.ingest(Batch(batch_id=uid("a"), run=RunInfo(run_id=run, name="g"), steps=first))
    assert _stored(store, run) == {}
    # The inventory arrives (one layer per variable) with more steps.
    info = RunInfo(run_id=run, name="g", revision=1, variables=_inventory(nvars, lambda i: i))
    second = _steps(range(4, 6), nvars, seed=3)
    store.ingest(Batch(batch_id=uid("b"), run=info, steps=second))
    _close(_stored(store, run), _expected(first + second, {i: i for i in range(nvars)}))
    # A later revision groups two variables per layer; steps 2..3 are resent with other numbers.
    info2 = RunInfo(run_id=run, name="g", revision=2, variables=_inventory(nvars, lambda i: i // 2))
    resent = _steps(range(2, 4), nvars, seed=9)
    store.ingest(Batch(batch_id=uid("c"), run=info2, steps=resent))
    want = _expected(first[:2] + resent + second, {i: i // 2 for i in range(nvars)})
    _close(_stored(store, run), want)
    _close(_rebuilt(store, run), want)
def test_delete_run_removes_its_layer_rows(store: Store, uid: Callable[[str], str]) -> None:
    run, other = uid("del"), uid("keep")
    for r in (run, other):
        info = RunInfo(run_id=r, name=r, variables=_inventory(3, lambda i: i))
        store.ingest(Batch(batch_id=uid(r), run=info, steps=_steps(range(3), 3)))
    with store.engine.connect() as c:
        key = c.execute(select(m.Run.id).where(m.Run.uid == run)).scalar_one()
    store.delete_run(run)
    with store.engine.connect() as c:
        assert c.execute(select(m.LayerStep.step).where(m.LayerStep.run_id == key)).all() == []
    assert len(_stored(store, other)) == 9
