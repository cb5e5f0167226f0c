"""Start-up cost of tracing: short ``fit()`` runs, traced and untraced, in one process.

Run: ``.venv/bin/python bench/bench_startup.py [--model mlp|mobilenet] [--runs 3] [--steps 2] [--stats-jit]``

Trains a fresh model for ``--steps`` steps with ``model.fit()``, alternating
untraced and traced runs in the same process, and prints each run's wall time,
the traced/untraced ratio of each pair and the process's memory mappings after
it. Most of a short run is building and optimising the train function; tracing
adds its recording ops to that graph, and the per-variable statistics function
is built once per gradient shapes and reused by later runs in the process
(``gradtrace._stats.stats_function``), so the first pair shows what a script
pays once and the later pairs what a sweep or a notebook pays per run.

``--model mlp``: the MLP 784-256-128-10 (6 variables), batch 32, Adam.
``--model mobilenet``: Keras's MobileNetV2 (``alpha=0.35``, 32x32x3 inputs, 5
classes, no pretrained weights): 158 trainable variables, 104 BatchNormalization
statistics, batch 16, Adam; the case where per-variable work in the graph counts.
``--stats-jit`` traces with ``stats_jit=True`` (the statistics compiled by XLA).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mappings() -> int | None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    with maps.open() as f:
        return sum(1 for _ in f)


def build(kind: str, steps: int) -> tuple[Any, Any, Any, int]:
    """A fresh compiled model and ``steps`` batches of data for it."""
    import keras
    import numpy as np

    if kind == "mlp":
        from bench_overhead import build as build_mlp

        model, x, y = build_mlp("mlp")
        batch = 32
        x, y = np.repeat(x, steps, axis=0), np.repeat(y, steps, axis=0)
    else:
        keras.utils.set_random_seed(0)
        batch = 16
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch * steps, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 5, batch * steps)
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=5, alpha=0.35)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "mlp"))
    return model, x, y, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "mobilenet"), default="mlp")
    parser.add_argument("--runs", type=int, default=3, help="traced runs (each after an untraced one)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--stats-jit", action="store_true", help="trace with stats_jit=True")
    args = parser.parse_args()

    import gradtrace

    db = f"sqlite:///{tempfile.mkdtemp(prefix='gradtrace-bench-')}/startup.db"
    options = {"stats_jit": True} if args.stats_jit else {}
    print(f"{args.steps}-step fit() of the {args.model}, load average {os.getloadavg()[0]:.2f}, "
          f"stats_jit={args.stats_jit}", flush=True)
    plain = 0.0
    for r in range(2 * args.runs):
        traced = r % 2 == 1
        model, x, y, batch = build(args.model, args.steps)
        t0 = time.perf_counter()
        if traced:
            with gradtrace.trace(run=f"startup-{r}", store=db, **options):
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        else:
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        dt = time.perf_counter() - t0
        ratio = f"   {dt / plain:5.2f}x the untraced run before" if traced else ""
        plain = dt
        print(f"run {r // 2 + 1} {'traced  ' if traced else 'untraced'} {dt:6.2f} s{ratio}   "
              f"memory mappings {mappings()}", flush=True)


if __name__ == "__main__":
    main()
