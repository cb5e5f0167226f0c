"""Read side: listings, resolving run references, step streams, series, tokens, memory."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from gradtrace.schema import Batch, RunInfo, StepRecord, VariableInfo, VarStep
from gradtrace.store import AmbiguousRun, InvalidInput, RunNotFound, Store, _query, open_store
from gradtrace.store._tokens import hash_token

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def ingest_run(store: Store, rid: str, name: str, project: str, *, minutes: int = 0, steps: int = 3,
               nvars: int = 2, status: str = "finished") -> None:
    info = RunInfo(
        run_id=rid, name=name, project=project, status=status,  # type: ignore[arg-type]
        started_at=T0 + timedelta(minutes=minutes),
        ended_at=T0 + timedelta(minutes=minutes, seconds=30),
        variables=[VariableInfo(index=i, name=f"w{i}") for i in range(nvars)],
    )
    store.ingest(Batch(batch_id=rid + "-b", run=info, steps=[
        StepRecord(step=s, loss=float(s), lr=0.1,
                   vars=[VarStep(v=v, norm=10.0 * s + v, mean=-float(v), applied=v % 2 == 0) for v in range(nvars)])
        for s in range(steps)
    ]))


def test_listing_filters_and_pages(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    proj = uid("proj")
    for i in range(5):
        ingest_run(store, uid(f"r{i}"), "even" if i % 2 == 0 else "odd", proj, minutes=i,
                   status="failed" if i == 3 else "finished")
    page = store.runs(proj)
    assert page.total == 5 and [r.id for r in page.items] == [uid(f"r{i}") for i in (4, 3, 2, 1, 0)]
    assert page.items[0].duration_s == 30.0 and page.items[0].num_steps == 3
    assert [r.id for r in store.runs(proj, limit=2, offset=2).items] == [uid("r2"), uid("r1")]
    assert store.runs(proj, name="odd").total == 2
    assert [r.id for r in store.runs(proj, status="failed").items] == [uid("r3")]
    assert store.runs(proj, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)).total == 2
    (summary,) = [p for p in store.projects() if p.name == proj]
    assert summary.runs == 5 and summary.last_run_at == T0 + timedelta(minutes=4)
    for bad in ({"limit": 0}, {"offset": -1}, {"status": "done"}):
        with pytest.raises(InvalidInput) as e:
            store.runs(proj, **bad)  # type: ignore[arg-type]
        assert e.value.field == next(iter(bad))


def test_resolve_by_id_prefix_and_name(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    a, b = uid("pa"), uid("pb")
    ingest_run(store, uid("fit-old"), uid("fit"), a, minutes=0)
    ingest_run(store, uid("fit-new"), uid("fit"), a, minutes=5)
    ingest_run(store, uid("loop-a"), uid("loop"), a)
    ingest_run(store, uid("loop-b"), uid("loop"), b)
    assert store.resolve(uid("fit-old")).id == uid("fit-old")
    assert store.resolve(uid("fit")).id == uid("fit-new")  # the latest of that name
    assert store.resolve(uid("fit-old")[:-3]).id == uid("fit-old")  # a unique id prefix
    with pytest.raises(AmbiguousRun) as e:
        store.resolve(uid("loop"))
    assert a in str(e.value) and b in str(e.value)
    assert store.resolve(uid("loop"), project=b).id == uid("loop-b")
    with pytest.raises(RunNotFound) as nf:
        store.resolve(uid("fitt"))
    assert uid("fit") in nf.value.suggestions


def test_run_detail_and_steps_selection(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("sel")
    ingest_run(store, rid, "sel", uid("p"), steps=10, nvars=4)
    d = store.run_detail(rid)
    assert d.summary.num_steps == 10 and [v["name"] for v in d.variables] == ["w0", "w1", "w2", "w3"]
    assert d.meta["name"] == "sel" and "variables" not in d.meta
    recs = list(store.steps(rid, start=3, stop=6, vars=[1, 3], fields=["loss", "norm"]))
    assert [r["step"] for r in recs] == [3, 4, 5]
    assert recs[0] == {"step": 3, "loss": 3.0, "vars": [{"v": 1, "norm": 31.0}, {"v": 3, "norm": 33.0}]}
    full = next(store.steps(rid, start=9))
    assert full["grad_norm"] == pytest.approx(np.sqrt(sum((90.0 + v) ** 2 for v in range(4))))
    assert (full["n_grad"], full["n_applied"]) == (4, 2)
    assert list(store.steps(rid, start=10)) == []
    for kwargs, field in (({"start": -1}, "start"), ({"start": 5, "stop": 2}, "stop"),
                          ({"fields": ["loss", "bogus"]}, "fields"), ({"vars": [-1]}, "vars")):
        with pytest.raises(InvalidInput) as e:
            store.steps(rid, **kwargs)  # type: ignore[arg-type]
        assert e.value.field == field
    with pytest.raises(RunNotFound):
        store.steps(uid("nope"))


def test_series(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    rid = uid("ser")
    ingest_run(store, rid, "ser", uid("p"), steps=20, nvars=3)
    steps, loss = store.series(rid, "loss", start=5, stop=8)
    assert steps.tolist() == [5, 6, 7] and loss.tolist() == [5.0, 6.0, 7.0]
    steps, norm = store.series(rid, "norm", v=2)
    assert steps.tolist() == list(range(20)) and norm.tolist() == [10.0 * s + 2 for s in range(20)]
    assert store.series(rid, "applied", v=1)[1].dtype == bool
    many = store.series_many(rid, ["norm", "mean"], vs=[0, 2], start=10)
    assert sorted(many["norm"]) == [0, 2]
    assert many["norm"][2][0].tolist() == list(range(10, 20))
    assert np.array_equal(many["norm"][2][1], store.series(rid, "norm", v=2, start=10)[1])
    assert many["mean"][2][1].tolist() == [-2.0] * 10
    with pytest.raises(InvalidInput) as e:
        store.series(rid, "norm")
    assert e.value.field == "v"
    with pytest.raises(InvalidInput) as e:
        store.series(rid, "x_fp")
    assert e.value.field == "field"


def test_tokens_are_stored_hashed(store: Store, uid) -> None:  # type: ignore[no-untyped-def]
    proj = uid("tok")
    plain = store.create_token(proj, "write", name="ci")
    other = store.create_token(proj, "read")
    assert plain != other and len(plain) > 40
    info = store.check_token(plain)
    assert info is not None and (info.project, info.scope, info.name) == (proj, "write", "ci")
    assert store.check_token(plain + "x") is None and store.check_token("") is None
    with store.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT hash FROM tokens").scalars().all()
    assert plain not in stored and hash_token(plain) in stored
    assert {t.scope for t in store.list_tokens(proj)} == {"read", "write"}
    assert store.revoke_token(info.id) and store.check_token(plain) is None
    with pytest.raises(InvalidInput) as e:
        store.create_token(proj, "admin")
    assert e.value.field == "scope"


def test_streaming_a_big_run_keeps_memory_flat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller chunk than production so a test-sized run spans many chunks (20 here).
    monkeypatch.setattr(_query, "STREAM_ROWS", 500)
    store = open_store(str(tmp_path / "big.db"))
    nvars, nsteps = 10, 1000
    info = RunInfo(run_id="big", name="big", variables=[VariableInfo(index=i, name=f"w{i}") for i in range(nvars)])
    for b0 in range(0, nsteps, 500):
        store.ingest(Batch(batch_id=f"big-{b0}", run=info, steps=[
            StepRecord(step=s, loss=1.0, vars=[VarStep(v=v, norm=1.0, mean=0.0, min=-1.0, max=1.0,
                                                       sketch=[0.5] * 8) for v in range(nvars)])
            for s in range(b0, b0 + 500)
        ]))
    tracemalloc.start()
    n = 0
    for rec in store.steps("big"):
        n += len(rec["vars"])
    _, streamed_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == nvars * nsteps
    tracemalloc.start()
    everything = list(store.steps("big"))
    _, held = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(everything) == nsteps
    # holding the run costs ~ all of it; streaming it costs one chunk
    assert streamed_peak < held / 5, (streamed_peak, held)
    store.close()
