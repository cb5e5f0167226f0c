"""Store ingest and read-back benchmark.

One run of 2000 steps x 50 variables x 4 statistics (norm, mean, min, max:
400k points) ingested through ``store.ingest`` in batches, against a plain
SQLAlchemy Core bulk insert of the same points in a wide layout (one row per
step x variable) into the same database in the same process; then reading the
run's 200 series back (``store.series`` one by one, and ``store.series_many``).

    .venv/bin/python bench/bench_store.py [--steps 2000] [--vars 50] [--batch 100]
        [--repeats 3] [--pg postgresql://postgres@127.0.0.1:5432/test] [--no-pg]

PostgreSQL: a fresh database is created for the run and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from gradtrace.schema import Batch, RunInfo, StepRecord, VariableInfo, VarStep
from gradtrace.store import make_engine, normalize_url, open_store
from sqlalchemy import Column, Double, Integer, MetaData, Table, create_engine, insert, text

STATS = ("norm", "mean", "min", "max")


def make_batches(run_id: str, steps: int, nvars: int, per_batch: int) -> list[Batch]:
    rnd = random.Random(0)
    info = RunInfo(
        run_id=run_id,
        name="bench",
        project="bench",
        variables=[VariableInfo(index=i, name=f"dense_{i}/kernel", shape=[64, 64]) for i in range(nvars)],
    )
    batches = []
    for b0 in range(0, steps, per_batch):
        recs = []
        for s in range(b0, min(steps, b0 + per_batch)):
            recs.append(
                StepRecord(
                    step=s,
                    loss=rnd.random(),
                    vars=[
                        VarStep(v=v, norm=rnd.random(), mean=rnd.gauss(0, 1), min=-rnd.random(), max=rnd.random())
                        for v in range(nvars)
                    ],
                )
            )
        batches.append(Batch(batch_id=f"{run_id}-{b0}", run=info, steps=recs))
    return batches


def raw_insert(url: str, steps: int, nvars: int) -> float:
    """Seconds for a plain Core bulk insert of the same points, wide layout."""
    engine = make_engine(url) if url.startswith("sqlite") else create_engine(normalize_url(url))
    md = MetaData()
    wide = Table(
        f"bench_wide_{uuid.uuid4().hex[:8]}",
        md,
        Column("run_id", Integer, primary_key=True),
        Column("step", Integer, primary_key=True),
        Column("v", Integer, primary_key=True),
        *[Column(s, Double) for s in STATS],
    )
    md.create_all(engine)
    rnd = random.Random(0)
    rows = [
        {"run_id": 1, "step": s, "v": v, "norm": rnd.random(), "mean": rnd.gauss(0, 1), "min": -rnd.random(), "max": rnd.random()}
        for s in range(steps)
        for v in range(nvars)
    ]
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(wide), rows)
    dt = time.perf_counter() - t0
    md.drop_all(engine)
    engine.dispose()
    return dt


def store_ingest(url: str, steps: int, nvars: int, per_batch: int) -> tuple[float, str]:
    store = open_store(url)
    run_id = "bench-" + uuid.uuid4().hex[:12]
    batches = make_batches(run_id, steps, nvars, per_batch)
    t0 = time.perf_counter()
    for b in batches:
        assert store.ingest(b).stored
    dt = time.perf_counter() - t0
    store.close()
    return dt, run_id


def read_back(url: str, run_id: str, nvars: int) -> tuple[float, float, float, float]:
    """Seconds for the 200 series one by one, for all of them in one pass (wall, this process's CPU)."""
    store = open_store(url)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for v in range(nvars):
        for s in STATS:
            steps, vals = store.series(run_id, s, v=v)
            n += len(vals)
    one_by_one, one_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    m = 0
    for per_var in store.series_many(run_id, list(STATS)).values():
        for _steps, vals in per_var.values():
            m += len(vals)
    many, many_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert n == m, (n, m)
    store.delete_run(run_id)
    store.close()
    return one_by_one, one_cpu, many, many_cpu


def bench(label: str, url: str, args: argparse.Namespace) -> list[str]:
    points = args.steps * args.vars * len(STATS)
    raw, ing, r1, r1c, rm, rc = [], [], [], [], [], []
    for _ in range(args.repeats):
        raw.append(raw_insert(url, args.steps, args.vars))
        dt, run_id = store_ingest(url, args.steps, args.vars, args.batch)
        ing.append(dt)
        a, ac, b, c = read_back(url, run_id, args.vars)
        r1.append(a)
        r1c.append(ac)
        rm.append(b)
        rc.append(c)
    raw_s, ing_s = statistics.median(raw), statistics.median(ing)
    return [
        f"{label:<10} {points / raw_s:>14,.0f} {points / ing_s:>16,.0f} {raw_s / ing_s:>8.2f}"
        f" {statistics.median(r1):>12.3f} {statistics.median(r1c):>9.3f}"
        f" {statistics.median(rm):>11.3f} {statistics.median(rc):>9.3f}"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--vars", type=int, default=50)
    p.add_argument("--batch", type=int, default=100, help="steps per ingested batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--no-pg", action="store_true")
    args = p.parse_args()
    points = args.steps * args.vars * len(STATS)
    print(f"{args.steps} steps x {args.vars} variables x {len(STATS)} statistics = {points:,} points; "
          f"batches of {args.batch} steps; median of {args.repeats}")
    print(f"{'database':<10} {'raw points/s':>14} {'store points/s':>16} {'ratio':>8} {'200 series s':>12} {'(cpu s)':>9} {'1 pass s':>11} {'(cpu s)':>9}")
    with tempfile.TemporaryDirectory() as d:
        for line in bench("sqlite", "sqlite:///" + str(Path(d) / "bench.db"), args):
            print(line)
    if not args.no_pg:
        admin = create_engine(normalize_url(args.pg), isolation_level="AUTOCOMMIT")
        db = "gradtrace_bench_" + uuid.uuid4().hex[:8]
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{db}"'))
        try:
            url = normalize_url(args.pg).rsplit("/", 1)[0] + "/" + db
            open_store(url, check_schema=False).upgrade()
            for line in bench("postgresql", url, args):
                print(line)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
    print("ratio = store / raw (target >= 0.5). Read-back of all 200 series (target < 0.5 s): "
          "'200 series' = store.series() per (variable, statistic), '1 pass' = store.series_many(); "
          "cpu = this process's CPU time for the pass")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
