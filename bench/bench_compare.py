"""How long does comparing two long runs take? (the comparator reads with SQL, not whole runs)

Writes two runs of STEPS optimizer steps x VARS variables (an equivalent pair
that departs late, so every check runs) into a fresh SQLite file and a fresh
PostgreSQL database, then times ``compare(store, a, b)`` (resolve, SQL reads,
detectors, report) as the median of repeats.

    .venv/bin/python bench/bench_compare.py [--steps 10000] [--vars 50] [--pg postgresql://postgres@127.0.0.1:5432/test]

``--noise`` instead trains the equivalent pairs of ``tests/cases`` through the
tracer and prints the float noise they actually show: the step-0 relative
differences of loss and gradient norms, in units of the comparator's step-0
tolerance, and the largest ratio to the tolerance over the aligned steps (all
must stay below 1 for the tolerance model to hold).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def _batches(name: str, steps: int, nvars: int, depart: int | None, chunk: int = 1000):
    from gradtrace.schema import (
        Batch,
        LayerInfo,
        RunInfo,
        StateStep,
        StepRecord,
        VariableInfo,
        VarStep,
    )

    rng = np.random.default_rng(0)
    shapes = [[64, 64] if i % 2 == 0 else [64] for i in range(nvars)]
    info = RunInfo(
        run_id=uuid.uuid4().hex, name=name, project="bench", status="finished",
        init_fingerprint="w0", optimizer={"class": "Adam", "config": {"learning_rate": 1e-3}},
        variables=[VariableInfo(index=i, name=f"{name}/d{i // 2}/{'k' if i % 2 == 0 else 'b'}", shape=s,
                                layer_class="Dense", struct_key=f"{i // 2}:Dense/{i % 2}{s}")
                   for i, s in enumerate(shapes)]
        + [VariableInfo(index=nvars, name="bn/mm", shape=[64], trainable=False, struct_key="bn/mm")],
        layers=[LayerInfo(index=0, name="bn", class_name="BatchNormalization", training_dependent=True)],
    )
    loss = 2.3 * np.exp(-np.arange(steps) / 3000) + 0.01 * rng.normal(size=steps)
    norms = rng.uniform(0.1, 1.0, size=(steps, nvars))
    fps = rng.normal(size=(steps, 4))
    fps[:, 3] = 2048
    sk = rng.normal(size=(nvars, 32)).tolist()
    for lo in range(0, steps, chunk):
        recs = []
        for k in range(lo, min(steps, lo + chunk)):
            f = 1.0 + (0.5 if depart is not None and k >= depart else 0.0)
            vs = [VarStep.model_construct(v=i, grad=True, norm=float(norms[k, i] * f), mean=0.0, min=-1.0,
                                          max=1.0, nonfinite=0, applied=True,
                                          update_norm=float(norms[k, i] * 1e-3), weight_norm=1.0,
                                          sketch=sk[i] if k == 0 else None)
                  for i in range(nvars)]
            recs.append(StepRecord.model_construct(
                step=k, loss=float(loss[k] * f), batch_size=32, lr=1e-3, iterations=k + 1, mode="tf.function",
                x_fp=fps[k].tolist(), y_fp=None, modes={"bn": True}, vars=vs, broadcasts=[], target_shape=[],
                state=[StateStep(v=nvars, changed=True, delta_norm=0.01)], y_pred_shape=[32, 10],
                wall_time=None, loss_scale=None, skipped=None, reg_loss=None, loss_info=None, frozen=[]))
        yield Batch.model_construct(schema_version=1, batch_id=uuid.uuid4().hex, run=info, steps=recs, tensors=[])


def _fill(store, steps: int, nvars: int) -> float:
    t = time.perf_counter()
    for b in _batches("bench-a", steps, nvars, None):
        store.ingest(b)
    for b in _batches("bench-b", steps, nvars, depart=steps // 2):
        store.ingest(b)
    return time.perf_counter() - t


def _time_compare(store, repeats: int) -> tuple[float, dict]:
    from gradtrace.compare import compare

    times, doc = [], {}
    for _ in range(repeats):
        t = time.perf_counter()
        doc = compare(store, "bench-a", "bench-b", project="bench").to_dict()
        times.append(time.perf_counter() - t)
    return statistics.median(times), doc


def measure_noise() -> None:
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRADTRACE_FLUSH_INTERVAL", "0.2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gradtrace
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    from tests.cases.test_cases import CASES

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'noise.db'}"
        done: set[str] = set()
        print(f"{'pair':<36} {'verdict':<12} {'tol0':>9} {'loss d0/tol0':>13} {'grad d0/tol0':>13} "
              f"{'max d_k/tol_k':>14}")
        for cid, fa, fb, verdict, _top in CASES:
            if verdict != "equivalent":
                continue
            for fn in (fa, fb):
                if fn.__name__ not in done:
                    with gradtrace.trace(run=fn.__name__, project="noise", store=url):
                        fn()
                    done.add(fn.__name__)
            store = open_store(url)
            doc = compare(store, fa.__name__, fb.__name__, project="noise").to_dict()
            store.close()
            nz = doc["noise"]
            tol0 = nz["step0_rel_tolerance"]
            d0 = nz.get("step0_loss_rel_diff")
            g0 = nz.get("step0_grad_norm_rel_diff_max")
            steps = nz.get("loss_rel_diff_by_step") or []
            from gradtrace.compare.noise import GROWTH

            ratio = max((d / (tol0 * (1 + GROWTH * k ** 0.5)) for k, d in enumerate(steps)), default=float("nan"))
            print(f"{cid:<36} {doc['verdict']:<12} {tol0:9.2g} {_units(d0, tol0)} {_units(g0, tol0)} "
                  f"{ratio:14.3g}")


def _units(x: object, tol0: float) -> str:
    return f"{x / tol0:13.3g}" if isinstance(x, (int, float)) else f"{'-':>13}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--vars", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--noise", action="store_true", help="measure the float noise of the equivalent case pairs")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="a PostgreSQL server to create a scratch database in ('' to skip)")
    args = ap.parse_args()
    if args.noise:
        measure_noise()
        return
    from gradtrace.store import open_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        fill = _fill(store, args.steps, args.vars)
        med, doc = _time_compare(store, args.repeats)
        store.close()
        rows.append(("sqlite", fill, med, doc))
    if args.pg:
        rows.append(_postgres(args))
    print(f"compare two runs of {args.steps} steps x {args.vars} variables (median of {args.repeats})")
    print(f"{'database':<10} {'fill (s)':>9} {'compare (s)':>12}  verdict / first divergent step / top finding")
    for db, fill, med, doc in rows:
        top = doc["findings"][0]["kind"] if doc.get("findings") else "-"
        print(f"{db:<10} {fill:>9.1f} {med:>12.3f}  {doc.get('verdict')} / {doc.get('first_divergent_step')} / {top}")


def _postgres(args: argparse.Namespace):
    from gradtrace.store import open_store
    from sqlalchemy import create_engine, text

    name = f"gt_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg.rsplit("/", 1)[0] + "/" + name
    try:
        store = open_store(url, check_schema=False)
        store.upgrade()
        fill = _fill(store, args.steps, args.vars)
        med, doc = _time_compare(store, args.repeats)
        store.close()
        return ("postgresql", fill, med, doc)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
