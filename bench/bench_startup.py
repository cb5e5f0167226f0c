"""Start-up cost of tracing: short ``fit()`` runs, traced and untraced, in one process.

Run: ``.venv/bin/python bench/bench_startup.py [--runs 3] [--steps 2] [--no-jit]``

Trains a fresh MLP 784-256-128-10 (batch 32, Adam) for ``--steps`` steps with
``model.fit()``, alternating untraced and traced runs in the same process, and
prints each run's wall time and the process's memory mappings after it. The
first traced run compiles the statistics function (XLA); later runs with the
same gradient shapes reuse it (``gradtrace._stats.stats_function``), so their
time and mappings show what a sweep or a notebook pays per run. ``--no-jit``
traces with ``stats_jit=False`` (no XLA compile).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mappings() -> int | None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    with maps.open() as f:
        return sum(1 for _ in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="traced runs (each after an untraced one)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no-jit", action="store_true", help="trace with stats_jit=False")
    args = parser.parse_args()

    import gradtrace
    import keras
    import numpy as np
    from bench_overhead import build

    db = f"sqlite:///{tempfile.mkdtemp(prefix='gradtrace-bench-')}/startup.db"
    options = {"stats_jit": False} if args.no_jit else {}
    print(f"{args.steps}-step fit() of the MLP, load average {os.getloadavg()[0]:.2f}, "
          f"stats_jit={'False' if args.no_jit else 'default'}")
    for r in range(2 * args.runs):
        traced = r % 2 == 1
        model, x, y = build("mlp")
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        xs, ys = np.repeat(x, args.steps, axis=0), np.repeat(y, args.steps, axis=0)
        t0 = time.perf_counter()
        if traced:
            with gradtrace.trace(run=f"startup-{r}", store=db, **options):
                model.fit(xs, ys, batch_size=32, epochs=1, verbose=0)
        else:
            model.fit(xs, ys, batch_size=32, epochs=1, verbose=0)
        dt = time.perf_counter() - t0
        print(f"run {r // 2 + 1} {'traced  ' if traced else 'untraced'} {dt:6.2f} s   "
              f"memory mappings {mappings()}", flush=True)


if __name__ == "__main__":
    main()
