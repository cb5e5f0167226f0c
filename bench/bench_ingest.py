"""Ingest benchmark through the team server, against a raw bulk insert and an MLflow server.

Workload: one run of 2000 steps x 50 variables x 4 statistics (norm, mean,
min, max) = 400k points, then reading its 200 series back.

- gradtrace over HTTP: ``gradtrace serve`` (a real uvicorn subprocess) over a
  SQLite file and over PostgreSQL (a fresh database, dropped at the end); the
  batches (``--batch`` steps each) are POSTed to ``/api/v1/ingest`` as the
  tracer's HttpSink does (JSON, gzip above 64 KiB).
- raw bulk insert: SQLAlchemy Core ``insert()`` of the same points in a wide
  layout (one row per step x variable, 4 value columns), same database kind,
  one transaction: the ceiling for any ingest path.
- MLflow: an ``mlflow server`` (its own venv ``bench/.venv-mlflow``, created
  on first use; never installed into the main venv), the same points via
  ``MlflowClient.log_batch`` at its 1000-metrics cap, read back with
  ``get_metric_history`` per series.

Read-back: the 200 series through the REST API one request each
(``/series?field=norm&v=3``), and all of them in one request
(``/series?fields=norm,mean,min,max&vars=all``, median of 5, JSON parsed).

    .venv/bin/python bench/bench_ingest.py [--steps 2000] [--vars 50] [--batch 200]
        [--pg postgresql://postgres@127.0.0.1:5432/test | --no-pg] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from gradtrace import schema

HERE = Path(__file__).resolve().parent
STATS = ("norm", "mean", "min", "max")
MLFLOW_VENV = HERE / ".venv-mlflow"
GZIP_MIN_BYTES = 64 * 1024  # as the tracer's HttpSink
READ_REPEATS = 5


def make_batches(run_id: str, steps: int, nvars: int, per_batch: int) -> list[schema.Batch]:
    rnd = random.Random(0)
    info = schema.RunInfo(
        run_id=run_id, name="bench", project="bench",
        variables=[schema.VariableInfo(index=i, name=f"dense_{i}/kernel", shape=[64, 64]) for i in range(nvars)],
    )
    out = []
    for n, b0 in enumerate(range(0, steps, per_batch)):
        recs = [
            schema.StepRecord(
                step=s, loss=rnd.random(),
                vars=[schema.VarStep(v=v, norm=rnd.random(), mean=rnd.gauss(0, 1), min=-rnd.random(), max=rnd.random())
                      for v in range(nvars)],
            )
            for s in range(b0, min(steps, b0 + per_batch))
        ]
        out.append(schema.Batch(batch_id=f"{run_id}-{n}", run=info, steps=recs))
    return out


def points(batches: list[schema.Batch]) -> list[tuple[int, int, float, float, float, float]]:
    return [(r.step, v.v, v.norm, v.mean, v.min, v.max) for b in batches for r in b.steps for v in r.vars]  # type: ignore[misc]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- gradtrace over HTTP ----------------------------------------------------------------

def bench_server(db_url: str, batches: list[schema.Batch], nvars: int) -> dict[str, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gt = Path(sys.executable).with_name("gradtrace")
    env = {**os.environ, "GRADTRACE_SERVER_ACCESS_LOG": "false"}
    proc = subprocess.Popen([str(gt), "serve", "--db", db_url, "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(base + "/readyz", proc)
        # The tracer serialises in its exporter thread; the server's cost is what is timed.
        bodies = []
        for b in batches:
            raw = schema.dumps(b).encode()
            bodies.append((gzip.compress(raw, 5), True) if len(raw) >= GZIP_MIN_BYTES else (raw, False))
        with httpx.Client(base_url=base, timeout=120) as c:
            t0 = time.perf_counter()
            for body, gz in bodies:
                headers = {"Content-Type": "application/json"}
                if gz:
                    headers["Content-Encoding"] = "gzip"
                r = c.post("/api/v1/ingest", content=body, headers=headers)
                r.raise_for_status()
            ingest_s = time.perf_counter() - t0
            run = batches[0].run.run_id
            t0 = time.perf_counter()
            n = 0
            for field in STATS:
                for v in range(nvars):
                    r = c.get(f"/api/v1/runs/{run}/series", params={"field": field, "v": v})
                    n += len(r.json()["values"])
            read_each_s = time.perf_counter() - t0
            # All 200 series in one request (one pass over the run's rows), parsed;
            # the median of READ_REPEATS.
            times = []
            for _ in range(READ_REPEATS):
                t0 = time.perf_counter()
                doc = c.get(f"/api/v1/runs/{run}/series",
                            params={"fields": ",".join(STATS), "vars": "all"}).json()
                times.append(time.perf_counter() - t0)
                m = sum(len(row) for f in STATS for row in doc["values"][f])
                assert len(doc["vars"]) == nvars and m == len(doc["steps"]) * nvars * len(STATS)
            read_all_s = statistics.median(times)
        total = sum(len(r.vars) for b in batches for r in b.steps) * len(STATS)
        assert n == total and m == total, (n, m, total)
        return {"ingest_s": ingest_s, "read_each_s": read_each_s, "read_all_s": read_all_s}
    finally:
        stop(proc)


# -- raw bulk insert ----------------------------------------------------------------------

def bench_raw(url: str, rows: list[tuple[int, int, float, float, float, float]]) -> float:
    from gradtrace.store import make_engine
    from sqlalchemy import Column, Double, Integer, MetaData, Table, insert

    engine = make_engine(url)
    md = MetaData()
    t = Table("raw_points", md, Column("run_id", Integer, primary_key=True), Column("step", Integer, primary_key=True),
              Column("v", Integer, primary_key=True), *(Column(s, Double) for s in STATS))
    md.drop_all(engine)
    md.create_all(engine)
    data = [{"run_id": 1, "step": s, "v": v, "norm": a, "mean": b, "min": c, "max": d} for s, v, a, b, c, d in rows]
    with engine.connect() as conn:
        t0 = time.perf_counter()
        with conn.begin():
            conn.execute(insert(t), data)
        elapsed = time.perf_counter() - t0
    md.drop_all(engine)
    engine.dispose()
    return elapsed


# -- MLflow -------------------------------------------------------------------------------

def ensure_mlflow() -> Path:
    py = MLFLOW_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import mlflow"], capture_output=True).returncode == 0
    if not ok:
        print("creating bench/.venv-mlflow (pip install mlflow; first run only)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        (MLFLOW_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow>=3.1"], check=True)
    return py


MLFLOW_CLIENT = textwrap.dedent('''
    import json, sys, time
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    uri, path = sys.argv[1], sys.argv[2]
    rows = json.load(open(path))
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench-%d" % time.time_ns())
    run = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(f"v{v}.{k}", val, ts, s) for s, v, *vals in rows for k, val in zip(("norm", "mean", "min", "max"), vals)]
    t0 = time.perf_counter()
    for i in range(0, len(metrics), 1000):  # log_batch's cap: 1000 metrics per call
        client.log_batch(run, metrics=metrics[i:i + 1000])
    ingest = time.perf_counter() - t0
    keys = sorted({m.key for m in metrics})
    t0 = time.perf_counter()
    n = sum(len(client.get_metric_history(run, k)) for k in keys)
    read = time.perf_counter() - t0
    assert n == len(metrics), (n, len(metrics))
    import mlflow
    print(json.dumps({"ingest_s": ingest, "read_each_s": read, "version": mlflow.__version__}))
''')


def bench_mlflow(rows: list[tuple[int, int, float, float, float, float]]) -> dict[str, Any]:
    py = ensure_mlflow()
    with tempfile.TemporaryDirectory(prefix="gt-mlflow-") as tmp:
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        mlflow_bin = MLFLOW_VENV / "bin" / "mlflow"
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
             "--default-artifact-root", f"{tmp}/artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            wait_http(uri + "/health", proc, timeout=180)
            data = Path(tmp) / "rows.json"
            data.write_text(json.dumps(rows))
            out = subprocess.run([str(py), "-c", MLFLOW_CLIENT, uri, str(data)], capture_output=True, text=True, check=True)
            return dict(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--vars", type=int, default=50)
    ap.add_argument("--batch", type=int, default=200, help="steps per HTTP batch")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="admin URL; a fresh database is made")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()

    run_id = "bench" + uuid.uuid4().hex[:8]
    batches = make_batches(run_id, args.steps, args.vars, args.batch)
    rows = points(batches)
    npts = len(rows) * len(STATS)
    results: list[tuple[str, float, float | None, float | None]] = []  # name, ingest s, read each, read all

    with tempfile.TemporaryDirectory(prefix="gt-bench-") as tmp:
        r = bench_server(f"sqlite:///{tmp}/server.db", batches, args.vars)
        results.append(("gradtrace HTTP -> SQLite", r["ingest_s"], r["read_each_s"], r["read_all_s"]))
        results.append(("raw bulk insert SQLite", bench_raw(f"sqlite:///{tmp}/raw.db", rows), None, None))

    if not args.no_pg:
        import psycopg

        name = "gt_bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = args.pg.rsplit("/", 1)[0] + "/" + name
        try:
            subprocess.run([str(Path(sys.executable).with_name("gradtrace")), "db", "upgrade", "--db", url],
                           check=True, capture_output=True)
            r = bench_server(url, batches, args.vars)
            results.append(("gradtrace HTTP -> PostgreSQL", r["ingest_s"], r["read_each_s"], r["read_all_s"]))
            results.append(("raw bulk insert PostgreSQL", bench_raw(url, rows), None, None))
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    mlflow_pps = None
    if not args.no_mlflow:
        r = bench_mlflow(rows)
        results.append((f"MLflow {r['version']} server (log_batch 1000)", r["ingest_s"], r["read_each_s"], None))
        mlflow_pps = npts / r["ingest_s"]

    nseries = args.vars * len(STATS)
    print(f"\n{args.steps} steps x {args.vars} variables x {len(STATS)} statistics = {npts} points; "
          f"{len(batches)} HTTP batches of {args.batch} steps; read-back of {nseries} series\n")
    print(f"{'path':40} {'ingest s':>9} {'points/s':>11} {'x MLflow':>9} {'read 1/req s':>13} {'read all s':>11}")
    # read all s: one request for all series, median of READ_REPEATS
    for name, secs, each, all_ in results:
        pps = npts / secs
        ratio = f"{pps / mlflow_pps:9.1f}" if mlflow_pps else f"{'-':>9}"
        print(f"{name:40} {secs:9.2f} {pps:11,.0f} {ratio} "
              f"{(f'{each:13.2f}' if each is not None else f'{chr(45):>13}')} "
              f"{(f'{all_:11.3f}' if all_ is not None else f'{chr(45):>11}')}")
    raws = {n.split()[-1]: s for n, s, _, _ in results if n.startswith("raw")}
    for n, s, _, _ in results:
        if n.startswith("gradtrace"):
            db = n.split()[-1]
            print(f"{n}: {raws[db] / s:.2f} of the raw bulk insert's rate")


if __name__ == "__main__":
    main()
