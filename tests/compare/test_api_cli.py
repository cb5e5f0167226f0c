"""GET /api/v1/compare on a real uvicorn (SQLite and PostgreSQL) and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradtrace.compare import compare
from gradtrace.schema import Batch
from gradtrace.store import open_store

from . import synth

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("GRADTRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _ingest(store, name, **kw):
    captured = {}
    orig = synth.from_records

    def grab(info, recs):
        captured["info"], captured["recs"] = info, recs
        return orig(info, recs)

    synth.from_records = grab
    try:
        synth.make_run(name, **kw)
    finally:
        synth.from_records = orig
    store.ingest(Batch(batch_id=f"b-{name}-{uuid.uuid4().hex[:6]}", run=captured["info"], steps=captured["recs"]))


def _fill(url: str) -> None:
    store = open_store(url)
    _ingest(store, "fit")
    _ingest(store, "loop", loss_factor=10.0, update_factor=10.0)
    _ingest(store, "same", name_offset=3)
    store.close()


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('cmp') / 'c.db'}"
        _fill(url)
        yield url
        return
    if not _pg_up():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running")
    import psycopg

    name = f"gt_compare_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        s = open_store(url, check_schema=False)
        s.upgrade()
        s.close()
        _fill(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(db):
    import uvicorn
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(db=db, port=port, access_log=False))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert t.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def test_rest_matches_engine(server, db):
    r = httpx.get(f"{server}/api/v1/compare", params={"a": "fit", "b": "loop", "project": "t"})
    assert r.status_code == 200, r.text
    doc = r.json()
    store = open_store(db)
    direct = compare(store, "fit", "loop", project="t").to_dict()
    store.close()
    assert doc["verdict"] == direct["verdict"] == "diverged"
    assert doc["findings"][0]["kind"] == "loss_scale"
    assert doc["findings"] == direct["findings"]
    assert doc["findings"][0]["evidence"]["factor"] == pytest.approx(0.1)
    eq = httpx.get(f"{server}/api/v1/compare", params={"a": "fit", "b": "same"}).json()
    assert eq["verdict"] == "equivalent" and eq["first_divergent_step"] is None


def test_rest_errors_name_the_field(server):
    r = httpx.get(f"{server}/api/v1/compare", params={"a": "fit", "b": "nope"})
    assert r.status_code == 404 and "query.b" in r.text
    r = httpx.get(f"{server}/api/v1/compare", params={"a": "fit"})
    assert r.status_code == 422 and "b" in r.text
    r = httpx.get(f"{server}/api/v1/runs/nope/check")
    assert r.status_code == 404


def test_rest_check_and_catalogue(server):
    r = httpx.get(f"{server}/api/v1/runs/loop/check")
    assert r.status_code == 200 and r.json()["b"] is None
    cat = httpx.get(f"{server}/api/v1/compare/catalogue").json()
    assert {"loss_scale", "training_mode_mismatch", "non_scalar_loss"} <= {k["kind"] for k in cat}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("tracer", "server", "."))}
    return subprocess.run([sys.executable, "-m", "gradtrace", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_exit_codes_and_json(server, db):
    p = _cli("compare", "fit", "loop", "--db", db, "--json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["findings"][0]["kind"] == "loss_scale"
    p = _cli("compare", "fit", "same", "--db", db)
    assert p.returncode == 0 and "EQUIVALENT" in p.stdout, p.stdout + p.stderr
    p = _cli("compare", "fit", "missing-run", "--db", db)
    assert p.returncode == 2 and "missing-run" in p.stderr
    p = _cli("compare", "fit", "loop", "--server", server, "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["findings"] == doc["findings"]
    p = _cli("compare", "fit", "loop", "--server", "http://127.0.0.1:9")
    assert p.returncode == 2 and "cannot reach" in p.stderr
    p = _cli("check", "loop", "--db", db)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cli_text_report_and_no_tensorflow(db):
    p = _cli("compare", "fit", "loop", "--db", db)
    assert "verdict: DIVERGED" in p.stdout and "loss_scale" in p.stdout and "fix:" in p.stdout
    # evidence lines carry values: an empty list or a null is not printed ("hints: []")
    evidence = [line for line in p.stdout.splitlines() if line.startswith("   - ")]
    assert evidence and not [line for line in evidence if line.rstrip().endswith((": []", ": {}", ": None", ":"))]
    code = ("import sys, gradtrace.compare, gradtrace._cli_compare, gradtrace.compare.reader; "
            "assert 'tensorflow' not in sys.modules and 'fastapi' not in sys.modules")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("tracer", "server", "."))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.parametrize("argv", [
    ["compare", "fit", "tape-loop", "--server", "notaurl"],
    ["compare", "fit", "tape-loop", "--server", "http://[::1"],
    ["check", "fit", "--server", "notaurl"],
    ["check", "fit", "--server", "http://host:port"],
])
def test_cli_malformed_server_url_is_one_line_exit_2(argv, capsys):
    """A typo in --server is a usage error (exit 2), not a traceback with exit 1 ("diverged")."""
    from gradtrace.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--server" in err and "http://" in err and argv[-1] in err, err


@pytest.mark.parametrize("url", ["postgresql://x@[::1", "postgresql://u@host:abc/db", "foo://bar", "http://[::1"])
def test_cli_malformed_db_url_is_one_line_exit_2(url, capsys):
    from gradtrace.cli import main

    for argv in (["compare", "a", "b", "--db", url], ["check", "a", "--db", url]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--db" in err and url in err, err


def test_cli_check_names_the_first_finding_not_a_divergent_step(tmp_path, capsys):
    """One run cannot diverge: `check` says where its first finding is, not "first divergent step"."""
    from gradtrace.cli import main

    url = f"sqlite:///{tmp_path / 'one.db'}"
    store = open_store(url)
    _ingest(store, "nan-run", nan_at=3)
    _ingest(store, "clean")
    store.close()
    assert main(["check", "nan-run", "--db", url]) == 1
    out = capsys.readouterr().out
    assert "first divergent step" not in out and "first finding at step: 3" in out, out
    assert "after the run's last step" not in out, out
    assert "numerics" in out
    assert main(["check", "clean", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "first divergent step" not in out and "first finding" not in out, out
    assert main(["compare", "nan-run", "clean", "--db", url]) == 1
    assert "first divergent step" in capsys.readouterr().out  # a pair does diverge at a step


def test_check_a_step_without_a_loss_is_not_a_nan_loss(tmp_path, capsys):
    """A step the tracer could not give a loss (None in the store) is not reported as NaN;
    a recorded NaN loss is, on the store and through the records path (REST) alike."""
    from gradtrace.cli import main
    from gradtrace.compare import check_run, from_records
    from gradtrace.schema import RunInfo, StepRecord, VariableInfo, VarStep

    url = f"sqlite:///{tmp_path / 'noloss.db'}"
    store = open_store(url)
    numerics = {}
    for name, missing in (("no-loss", None), ("nan-loss", float("nan"))):
        info = RunInfo(run_id=f"{name}-0000000000", name=name, status="finished",
                       variables=[VariableInfo(index=0, name="w")])
        steps = [StepRecord(step=i, loss=missing if i == 3 else 1.0 / (i + 1),
                            vars=[VarStep(v=0, norm=1.0, applied=True)]) for i in range(6)]
        store.ingest(Batch(batch_id=f"b-{name}", run=info, steps=steps))
        report = check_run(from_records(info.model_dump(), [r.model_dump() for r in steps]))
        numerics[name] = [f.steps for f in report.findings if f.kind == "numerics"]
    store.close()
    assert numerics == {"no-loss": [], "nan-loss": [[3]]}
    assert main(["check", "no-loss", "--db", url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not [f for f in doc["findings"] if f["kind"] == "numerics"], doc["findings"]
    assert main(["check", "nan-loss", "--db", url, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    (f,) = [f for f in doc["findings"] if f["kind"] == "numerics"]
    assert f["steps"] == [3]


def test_cli_check_reports_lost_steps(tmp_path, capsys):
    """A run that lost steps is not "OK": check warns how many were lost and which knob to raise."""
    from gradtrace.cli import main
    from gradtrace.schema import RunInfo, StepRecord, VariableInfo, VarStep

    url = f"sqlite:///{tmp_path / 'lost.db'}"
    store = open_store(url)
    info = RunInfo(run_id="0badc0de0badc0de", name="e_rq", status="finished",
                   lost={"ring_overrun": 16, "queue_full": 2},
                   variables=[VariableInfo(index=0, name="w")])
    store.ingest(Batch(batch_id="lost-1", run=info, steps=[
        StepRecord(step=i, loss=1.0 / (i + 1), vars=[VarStep(v=0, norm=1.0, applied=True)]) for i in range(2)]))
    store.close()
    assert main(["check", "e_rq", "--db", url, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    (f,) = [f for f in doc["findings"] if f["kind"] == "lost_records"]
    assert f["severity"] == "warning" and f["evidence"]["lost_steps"] == 18
    assert "18 of 20 optimizer steps" in f["summary"]
    assert "GRADTRACE_RING_SIZE" in f["fix"] and "GRADTRACE_QUEUE_STEPS" in f["fix"]
    assert main(["check", "e_rq", "--db", url]) == 1
    out = capsys.readouterr().out
    assert "OK" not in out and "lost_records" in out


def test_a_first_finding_after_the_last_step_is_said_so():
    """A finding dated after a run's last step (layers run in training mode after it): the header
    names the step and says that it follows the last one."""
    from gradtrace.compare import Finding, Report, render_text

    report = Report(verdict="diverged", a={"id": "x", "name": "r", "project": "p", "steps": 20,
                                           "status": "finished"},
                    b=None, first_divergent_step=20, aligned_steps=0,
                    findings=[Finding("training_outside_steps", "after the end", severity="warning", steps=[20])])
    assert "first finding at step: 20 (after the run's last step, 19)" in render_text(report)
