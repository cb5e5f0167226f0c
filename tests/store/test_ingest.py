"""Ingest: NaN/Inf fidelity, idempotency (also under races), revisions, overlaps, atomicity."""

from __future__ import annotations

import base64
import math
import threading

import numpy as np
import pytest
from gradtrace.schema import (
    Batch,
    LossInfo,
    RunInfo,
    StateStep,
    StepRecord,
    TensorRecord,
    VarColumns,
    VariableInfo,
    VarStep,
    dumps,
)
from gradtrace.store import InvalidInput, Store, open_store
from gradtrace.store import models as m
from sqlalchemy import func, select, text

NAN, INF = float("nan"), float("inf")


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def make_batch(run_id: str, batch_id: str, steps: range, nvars: int = 3, **run: object) -> Batch:
    info = RunInfo(
        run_id=run_id,
        name=str(run.pop("name", "r")),
        variables=[VariableInfo(index=i, name=f"w{i}", shape=[2, 2]) for i in range(nvars)],
        **run,  # type: ignore[arg-type]
    )
    return Batch(
        batch_id=batch_id,
        run=info,
        steps=[
            StepRecord(
                step=s,
                loss=1.0 / (s + 1),
                vars=[VarStep(v=v, norm=float(s + v), applied=True) for v in range(nvars)],
                state=[StateStep(v=nvars, changed=s % 2 == 0, delta_norm=0.1)],
            )
            for s in steps
        ],
    )


def count(store: Store, model: type, run_uid: str) -> int:
    t = model.__table__  # type: ignore[attr-defined]
    r = m.Run.__table__
    with store.engine.connect() as c:
        return int(
            c.execute(
                select(func.count()).select_from(t.join(r, r.c.id == t.c.run_id)).where(r.c.uid == run_uid)
            ).scalar_one()
        )


def test_nan_inf_none_round_trip(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    values = [NAN, INF, -INF, 0.0, -0.0, 1e308, 5e-324, None]
    rid = uid("nan")
    batch = Batch(
        batch_id=uid("nanb"),
        run=RunInfo(run_id=rid, name="nan", extra={"x": NAN}),
        steps=[
            StepRecord(
                step=i,
                loss=x,
                lr=x,
                x_fp=[NAN, INF, -INF, 1.5],
                loss_info=LossInfo(per_sample_mean=x, per_sample_max=INF),
                vars=[
                    VarStep(v=0, norm=x, mean=x, min=-INF, max=INF, update_norm=x, weight_norm=None,
                            sketch=[NAN, INF, -INF, 0.25]),
                ],
                state=[StateStep(v=1, changed=True, delta_norm=x)],
            )
            for i, x in enumerate(values)
        ],
    )
    assert store.ingest(batch).stored
    got = list(store.steps(rid))
    assert [r["step"] for r in got] == list(range(len(values)))
    for x, rec in zip(values, got, strict=True):
        assert _same(rec["loss"], x) and _same(rec["lr"], x)
        var = rec["vars"][0]
        assert _same(var["norm"], x) and _same(var["mean"], x) and _same(var["update_norm"], x)
        assert var["min"] == -INF and var["max"] == INF and var["weight_norm"] is None
        assert np.array_equal(np.array(var["sketch"]), np.array([NAN, INF, -INF, 0.25], np.float32), equal_nan=True)
        assert _same(rec["state"][0]["delta_norm"], x)
        assert np.array_equal(rec["x_fp"], [NAN, INF, -INF, 1.5], equal_nan=True)
        assert _same(rec["loss_info"]["per_sample_mean"], x)
        assert rec["loss_info"]["per_sample_max"] == INF
    # series keep NaN/Inf and leave out the unrecorded (None) step
    steps, vals = store.series(rid, "loss")
    assert steps.tolist() == list(range(len(values) - 1))
    assert np.array_equal(vals, np.array(values[:-1], dtype=float), equal_nan=True)
    many = store.series_many(rid, ["norm", "weight_norm"])
    assert np.array_equal(many["norm"][0][1], np.array(values[:-1], dtype=float), equal_nan=True)
    assert many["weight_norm"] == {}
    assert store.run_detail(rid).meta["extra"] == {"x": "NaN"}  # JSON-safe, the wire encoding


def test_resent_batch_is_not_stored_twice(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("idem")
    b = make_batch(rid, uid("b"), range(5))
    first, second = store.ingest(b), store.ingest(b)
    assert (first.stored, first.steps) == (True, 5)
    assert (second.stored, second.steps) == (False, 0)
    assert count(store, m.Step, rid) == 5 and count(store, m.VarStep, rid) == 15
    assert store.resolve(rid).num_steps == 5
    # the same batch as a dict (what the server hands over) is recognised too
    assert not store.ingest(b.model_dump(mode="json")).stored


def test_concurrent_resends_store_once(store_url: str, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("race")
    b = make_batch(rid, uid("b"), range(50), nvars=20)
    stores = [open_store(store_url) for _ in range(4)]
    results: list[bool] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(len(stores))

    def send(s: Store) -> None:
        try:
            gate.wait()
            results.append(s.ingest(b).stored)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results) == [False, False, False, True]
    assert count(stores[0], m.VarStep, rid) == 50 * 20
    assert stores[0].resolve(rid).num_steps == 50
    for s in stores:
        s.close()


def test_highest_revision_wins(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("rev")
    store.ingest(make_batch(rid, uid("b1"), range(0, 2), revision=1, status="running"))
    store.ingest(make_batch(rid, uid("b3"), range(4, 6), revision=3, status="finished"))
    # an older batch arriving late carries an older RunInfo: it must not downgrade the run
    assert store.ingest(make_batch(rid, uid("b2"), range(2, 4), revision=2, status="running")).stored
    run = store.resolve(rid)
    assert run.status == "finished" and run.num_steps == 6
    assert store.run_detail(rid).meta["revision"] == 3


def test_same_step_from_another_batch_last_write_wins(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("ovl")
    store.ingest(make_batch(rid, uid("b1"), range(0, 4)))
    b2 = make_batch(rid, uid("b2"), range(2, 6), nvars=2)
    for rec in b2.steps:
        rec.loss = 100.0 + rec.step
    assert store.ingest(b2).stored
    got = {r["step"]: r for r in store.steps(rid)}
    assert sorted(got) == list(range(6))
    assert got[1]["loss"] == 0.5 and got[2]["loss"] == 102.0
    assert len(got[1]["vars"]) == 3 and len(got[2]["vars"]) == 2  # step 2 replaced whole
    assert store.resolve(rid).num_steps == 6


def test_refuses_bad_batches_naming_the_field(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("bad")
    b = make_batch(rid, uid("b"), range(3))
    b.steps[2].step = 1
    with pytest.raises(InvalidInput) as e:
        store.ingest(b)
    assert e.value.field == "steps[2].step"
    b = make_batch(rid, uid("b"), range(3))
    b.steps[1].vars.append(VarStep(v=0))
    with pytest.raises(InvalidInput) as e:
        store.ingest(b)
    assert e.value.field == "steps[1].vars[3].v"
    b = make_batch(rid, uid("b"), range(1))
    b.tensors = [TensorRecord(step=0, v=0, kind="grad", shape=[2, 2], data=base64.b64encode(b"\0" * 12).decode())]
    with pytest.raises(InvalidInput) as e:
        store.ingest(b)
    assert e.value.field == "tensors[0].data"
    with pytest.raises(InvalidInput) as e:
        store.ingest({"batch_id": "x", "run": {"run_id": "r"}})
    assert "name" in str(e.value)
    with pytest.raises(LookupError):  # nothing of the refused batches was written
        store.resolve(rid)
    # a run never moves to another project
    store.ingest(make_batch(rid, uid("ok"), range(1)))
    with pytest.raises(InvalidInput) as e:
        store.ingest(make_batch(rid, uid("other"), range(1, 2), project="elsewhere"))
    assert e.value.field == "run.project"


def test_tensors_round_trip(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("t")
    arr = np.array([[1.0, NAN], [INF, -2.5]], dtype=np.float32)
    b = make_batch(rid, uid("b"), range(2))
    b.tensors = [TensorRecord(step=1, v=0, kind="grad", shape=[2, 2], data=base64.b64encode(arr.tobytes()).decode())]
    store.ingest(b)
    assert store.tensor_index(rid) == [(1, 0, "grad")]
    got = store.tensor(rid, 1, 0, "grad")
    assert got is not None and got.dtype == np.float32
    assert np.array_equal(got, arr, equal_nan=True)
    assert store.tensor(rid, 0, 0, "grad") is None


def _install_failure(store: Store, v: int) -> None:
    """A real database error while the batch's state rows are written (after steps and vars)."""
    with store.engine.begin() as c:
        if c.dialect.name == "sqlite":
            c.execute(text(
                f"CREATE TRIGGER fail_state BEFORE INSERT ON state_steps WHEN NEW.v = {v} "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ))
        else:
            c.execute(text(
                "CREATE FUNCTION fail_state() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.v = {v} THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            ))
            c.execute(text("CREATE TRIGGER fail_state BEFORE INSERT ON state_steps FOR EACH ROW EXECUTE FUNCTION fail_state()"))


def _remove_failure(store: Store) -> None:
    with store.engine.begin() as c:
        if c.dialect.name == "sqlite":
            c.execute(text("DROP TRIGGER fail_state"))
        else:
            c.execute(text("DROP TRIGGER fail_state ON state_steps"))
            c.execute(text("DROP FUNCTION fail_state()"))


def test_batch_failing_midway_leaves_nothing(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("atomic")
    store.ingest(make_batch(rid, uid("b0"), range(0, 2)))
    b = make_batch(rid, uid("b1"), range(2, 40), nvars=777, revision=5, status="finished")
    _install_failure(store, v=777)
    try:
        with pytest.raises(Exception, match="injected failure"):
            store.ingest(b)
    finally:
        _remove_failure(store)
    run = store.resolve(rid)
    assert (run.num_steps, run.status) == (2, "running")
    assert count(store, m.Step, rid) == 2 and count(store, m.VarStep, rid) == 2 * 3
    assert count(store, m.Variable, rid) == 3 and count(store, m.IngestedBatch, rid) == 1
    # the tracer resends it: now it is stored, whole
    assert store.ingest(b).stored
    assert store.resolve(rid).num_steps == 40 and count(store, m.VarStep, rid) == 2 * 3 + 38 * 777


def test_delete_run(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("del")
    store.ingest(make_batch(rid, uid("b"), range(3)))
    keep = uid("keep")
    store.ingest(make_batch(keep, uid("k"), range(3)))
    store.delete_run(rid)
    assert count(store, m.VarStep, rid) == 0
    with pytest.raises(LookupError):
        store.resolve(rid)
    assert store.resolve(keep).num_steps == 3


@pytest.mark.parametrize("only", [None, ("norm", "mean", "min", "max")], ids=["all fields", "four statistics"])
def test_list_and_column_forms_store_identical_rows(store: Store, uid, only) -> None:  # type: ignore[no-untyped-def]
    """Schema version 1 (records) and 2 (columns) write the same rows, derived columns
    and layer sums included, with NaN/Inf/None in every float column; also when the
    batch leaves columns out altogether (the store then does not bind them)."""
    vals = [0.5, NAN, INF, -INF, None, 1e-300]

    def keep(var: VarStep) -> VarStep:
        if only is None:
            return var
        return VarStep(v=var.v, grad=var.grad, **{k: getattr(var, k) for k in only})

    def rec(s: int) -> StepRecord:
        if s % 4 == 3:  # a light step: only the variables without a gradient, counted
            return StepRecord(step=s, n_grad=3, vars=[VarStep(v=3, grad=False)])
        return StepRecord(
            step=s,
            loss=vals[s % 6],
            vars=[keep(var) for var in [
                VarStep(v=v, grad=v != 3, norm=vals[(s + v) % 6], mean=vals[(s + 2 * v) % 6],
                        min=vals[(s + v + 1) % 6], max=vals[(s + v + 2) % 6],
                        nonfinite=None if s % 4 == 2 else v, applied=None if s % 4 == 2 else v % 2 == 0,
                        update_norm=vals[(s + v + 3) % 6], weight_norm=vals[(s + v + 4) % 6],
                        sketch=[0.25, -1.0, float(s)] if v == 1 else None)
                for v in range(4)
            ]],
            state=[StateStep(v=4, changed=s % 2 == 0, delta_norm=vals[s % 6]),
                   StateStep(v=5, changed=True, delta_norm=1.0, rng=True)] if s % 4 else [],
        )

    runs = []
    for version in (1, 2):
        run_id = uid(f"v{version}")
        info = RunInfo(run_id=run_id, name="forms",
                       variables=[VariableInfo(index=i, name=f"d{i // 2}/w{i}", layer=f"d{i // 2}") for i in range(6)])
        batch = Batch(batch_id=uid(f"b{version}"), run=info, steps=[rec(s) for s in range(12)])
        wire = Batch.model_validate_json(dumps(batch, version=version))
        assert isinstance(wire.steps[0].vars, VarColumns) is (version == 2)
        assert store.ingest(wire).stored
        runs.append(run_id)

    def rows(table: type, run_uid: str) -> list[tuple[object, ...]]:
        t = table.__table__
        with store.engine.connect() as c:
            key = c.execute(select(m.Run.id).where(m.Run.uid == run_uid)).scalar_one()
            cols = [col for col in t.c if col.name != "run_id"]
            return [tuple(r) for r in c.execute(select(*cols).where(t.c.run_id == key).order_by(*t.primary_key))]

    def same(a: object, b: object) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return _same(a, b)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return a == b

    for table in (m.Step, m.VarStep, m.StateStep, m.LayerStep):
        one, two = rows(table, runs[0]), rows(table, runs[1])
        assert one and same(one, two), table.__tablename__


@pytest.mark.parametrize(("field", "record"), [
    ("steps[0].step", lambda: StepRecord.model_construct(step=2**31, vars=[], state=[])),
    ("steps[0].vars[1].v", lambda: StepRecord.model_construct(
        step=0, vars=[VarStep.model_construct(v=0), VarStep.model_construct(v=2**31)], state=[])),
    ("steps[0].state[0].v", lambda: StepRecord.model_construct(
        step=0, vars=[], state=[StateStep.model_construct(v=-1, changed=True)])),
])
def test_unvalidated_out_of_range_numbers_are_refused(store: Store, uid, field, record) -> None:  # type: ignore[no-untyped-def]
    # Records built with model_construct skip the schema's bounds; the store refuses
    # them before writing (PostgreSQL's binary COPY would wrap an int4 around).
    run_id = uid("range")
    batch = Batch.model_construct(schema_version=2, batch_id=uid("b"), run=RunInfo(run_id=run_id, name="r"),
                                  steps=[record()], tensors=[])
    with pytest.raises(InvalidInput) as info:
        store.ingest(batch)
    assert info.value.field == field
    with pytest.raises(LookupError):
        store.resolve(run_id)


def test_json_text_writes_what_the_json_encoder_writes() -> None:
    import json

    from gradtrace.store._ingest import json_text

    enc = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    for value in ([0.1, -2.5, 1e-300, 25088.0, 1.7976931348623157e308], [], [1.0, 2], [np.float64(0.1), 2.0],
                  {"a": [1.0]}, [[1.0], 2.0], [5e-324, -0.0], [True, 1.0]):
        assert json_text(value) == enc.encode(value), value
    # Non-finite values take the string form, in lists of floats as anywhere else.
    assert json.loads(json_text([1.0, NAN, INF, -INF])) == [1.0, "NaN", "Infinity", "-Infinity"]
    assert json_text(None) is None
