"""The exporter into the real store: SQLite files, PostgreSQL, and the real server over HTTP."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from export_helpers import (
    ServerThread,
    create_pg_database,
    drop_pg_database,
    free_port,
    pg_available,
    run_info,
    steps,
)
from gradtrace import schema
from gradtrace._export import Exporter
from gradtrace._sinks import HttpSink, SinkError, StoreSink, make_sink
from gradtrace.store import open_store

ROOT = Path(__file__).resolve().parents[2]


def _nonfinite_steps() -> list[schema.StepRecord]:
    out = []
    for i in range(10):
        out.append(
            schema.StepRecord(
                step=i,
                loss=float("nan") if i == 4 else 1.0 / (i + 1),
                vars=[
                    schema.VarStep(v=0, norm=float("inf") if i == 7 else float(i), nonfinite=int(i == 7)),
                    schema.VarStep(v=1, grad=False),
                ],
            )
        )
    return out


def _inventory() -> list[schema.VariableInfo]:
    return [
        schema.VariableInfo(index=0, name="dense/kernel", shape=[2, 2], struct_key="1:Dense/kernel[2,2]"),
        schema.VariableInfo(index=1, name="dense/bias", shape=[2], struct_key="1:Dense/bias[2]"),
    ]


def _check_stored(url: str, run_id: str) -> None:
    store = open_store(url)
    try:
        detail = store.run_detail(run_id)
        rows = list(store.steps(run_id))
        assert [r["step"] for r in rows] == list(range(10))
        assert math.isnan(rows[4]["loss"]) and rows[3]["loss"] == pytest.approx(0.25)
        steps_, norms = store.series(run_id, "norm", v=0)
        assert list(steps_) == list(range(10)) and math.isinf(norms[7]) and norms[3] == 3.0
        assert detail.summary.status == "finished" and detail.meta["lost"] == {}
        assert [v["struct_key"] for v in detail.variables] == ["1:Dense/kernel[2,2]", "1:Dense/bias[2]"]
    finally:
        store.close()


def test_sqlite_roundtrip_with_nonfinite_values_and_final_status(tmp_path: Path, cfg_factory) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    cfg = cfg_factory(url=url, batch_steps=3)
    info = run_info("sq1", variables=_inventory())
    exp = Exporter(make_sink(cfg.url), cfg, info)
    exp.put_steps(_nonfinite_steps())
    assert exp.flush(20)
    exp.update_run(info.model_copy(update={"status": "finished"}))
    assert exp.shutdown(20)
    _check_stored(url, "sq1")
    store = open_store(url)
    (run,) = store.runs().items
    assert run.status == "finished"
    store.close()


def test_relative_sqlite_url_is_pinned_to_the_directory_it_started_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    sink = make_sink("sqlite:///./rel.db")
    assert isinstance(sink, StoreSink) and sink.destination == f"sqlite:///{tmp_path / 'rel.db'}"
    assert make_sink("other.db").destination == f"sqlite:///{tmp_path / 'other.db'}"


def test_a_batch_the_store_refuses_is_counted_and_kept(tmp_path: Path, cfg_factory) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    cfg = cfg_factory(url=url)
    exp = Exporter(make_sink(url), cfg, run_info("dup"))
    assert exp.flush(20)
    twice = [schema.StepRecord(step=1), schema.StepRecord(step=1)]  # the store refuses duplicates
    exp.put_steps(twice)
    assert not exp.flush(20)
    assert exp.lost == {"rejected_invalid": 2}
    (kept,) = exp.spool.rejected()
    assert "step" in kept.with_name(kept.name + ".reason").read_text()
    exp.put_steps([schema.StepRecord(step=2)])
    assert exp.shutdown(20) is False
    store = open_store(url)
    assert [r["step"] for r in store.steps("dup")] == [2]
    assert store.run_detail("dup").meta["lost"] == {"rejected_invalid": 2}  # the gap is explained
    store.close()


@pytest.mark.postgres
def test_postgres_roundtrip(cfg_factory) -> None:
    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running (make postgres)")
    url = create_pg_database()
    try:
        store = open_store(url, check_schema=False)
        store.upgrade()
        store.close()
        cfg = cfg_factory(url=url, batch_steps=4)
        info = run_info("pg1", variables=_inventory())
        exp = Exporter(make_sink(url), cfg, info)
        exp.put_steps(_nonfinite_steps())
        exp.update_run(info.model_copy(update={"status": "finished"}))
        assert exp.shutdown(30)
        _check_stored(url, "pg1")
    finally:
        drop_pg_database(url)


def test_real_server_ingest_resend_and_auth(tmp_path: Path, cfg_factory) -> None:
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = ServerThread(db, require_auth=True).start()
    try:
        store = open_store(db)
        token = store.create_token("digits", "write")
        store.close()
        cfg = cfg_factory(url=server.url, token=token, batch_steps=4)
        info = run_info("http1", project="digits", variables=_inventory())
        exp = Exporter(make_sink(cfg.url, token=cfg.token), cfg, info)
        exp.put_steps(_nonfinite_steps())
        exp.update_run(info.model_copy(update={"status": "finished"}))
        assert exp.shutdown(30)
        _check_stored(db, "http1")

        # a resent batch is acknowledged (stored: false) and not stored twice
        sink = HttpSink(server.url, token=token)
        again = schema.Batch(batch_id="resent-1", run=info, steps=[schema.StepRecord(step=20, loss=1.0)])
        sink.write(again)
        sink.write(again)
        store = open_store(db)
        assert [r["step"] for r in store.steps("http1", start=20)] == [20]
        store.close()

        # a wrong token is final: no retry, counted, kept
        bad = Exporter(make_sink(server.url, token="wrong"), cfg_factory(url=server.url), run_info("nope", project="digits"))
        bad.put_steps(steps(0, 2))
        assert bad.shutdown(10) is False
        assert bad.lost.get("rejected_http_401") == 2
        assert bad.spool.rejected()
        with pytest.raises(SinkError) as info_:
            HttpSink(server.url).write(again)
        assert info_.value.status == 401 and not info_.value.retryable
    finally:
        server.stop()


def test_server_down_spool_then_up_every_step_exactly_once(tmp_path: Path, cfg_factory) -> None:
    db = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = cfg_factory(url=url, retry_seconds=0.2, batch_steps=3)
    info = run_info("offline", variables=_inventory())
    exp = Exporter(make_sink(url), cfg, info)
    exp.put_steps(_nonfinite_steps())
    exp.update_run(info.model_copy(update={"status": "finished"}))
    assert exp.shutdown(10) is False
    assert sum(e.n_steps for e in exp.spool.pending()) == 10

    server = ServerThread(db, port=port).start()
    try:
        nxt = Exporter(make_sink(url), cfg, run_info("next"))  # a later run resends the spool
        nxt.put_steps(steps(0, 1))
        assert nxt.shutdown(20)
        assert nxt.spool.pending() == []
        _check_stored(db, "offline")
    finally:
        server.stop()


def test_atexit_flushes_a_run_nobody_shut_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    code = textwrap.dedent(
        f"""
        from gradtrace import _config, schema
        from gradtrace._export import Exporter
        from gradtrace._sinks import make_sink
        cfg = _config.load(url={url!r}, spool_dir={str(tmp_path / 'spool')!r}, flush_interval=60)
        exp = Exporter(make_sink(cfg.url), cfg, schema.RunInfo(run_id="exit1", name="exit1"))
        exp.put_steps([schema.StepRecord(step=i, loss=float(i)) for i in range(5)])
        exp.update_run(schema.RunInfo(run_id="exit1", name="exit1", status="failed", error="KeyboardInterrupt"))
        # no shutdown(): the interpreter exits, atexit must deliver
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tracer"), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    store = open_store(url)
    (run,) = store.runs().items
    assert run.status == "failed"
    assert [r["step"] for r in store.steps("exit1")] == [0, 1, 2, 3, 4]
    store.close()


def test_a_forked_child_ships_nothing_under_the_parents_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    code = textwrap.dedent(
        f"""
        import os, sys
        from gradtrace import _config, schema
        from gradtrace._export import Exporter
        from gradtrace._sinks import make_sink
        cfg = _config.load(url={url!r}, spool_dir={str(tmp_path / 'spool')!r}, flush_interval=0.05)
        exp = Exporter(make_sink(cfg.url), cfg, schema.RunInfo(run_id="parent", name="parent"))
        assert exp.flush(20)
        pid = os.fork()
        if pid == 0:  # e.g. a data-loader worker
            exp.put_steps([schema.StepRecord(step=99, loss=1.0)])
            exp.update_run(schema.RunInfo(run_id="parent", name="parent", status="failed"))
            exp.flush(5)
            sys.exit(0)  # atexit runs here too
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        exp.put_steps([schema.StepRecord(step=i, loss=float(i)) for i in range(3)])
        exp.update_run(schema.RunInfo(run_id="parent", name="parent", status="finished"))
        print(exp.shutdown(20))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tracer"), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"
    store = open_store(url)
    (run,) = store.runs().items
    assert run.status == "finished"
    assert [r["step"] for r in store.steps("parent")] == [0, 1, 2]
    store.close()
