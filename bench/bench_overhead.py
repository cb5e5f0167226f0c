"""Overhead of tracing: traced vs untraced step time, next to the usual TensorBoard recipe.

Run: ``.venv/bin/python bench/bench_overhead.py [--steps 200] [--repeats 7]``

Workloads (all on random data, CPU):
- ``mlp-tape``: MLP 784-256-128-10, batch 32, a ``tf.function`` GradientTape step;
- ``mlp-fit``:  the same model under ``model.fit()`` (jit_compile default);
- ``cnn-tape``: a small CNN with BatchNormalization and Dropout, ``tf.function`` tape step.

Variants alternate in the same process, in reversed order on every other repeat, each timed
as the mean step time over ``--steps`` steps after a warm-up. A ratio is taken within each
repeat (a variant against ``plain`` of the same repeat, measured seconds apart) and the median
of those per-repeat ratios is reported with their quartiles: this machine's speed drifts by
±20 % over seconds, which the pairing cancels and a ratio of medians would not. Blocks seconds
apart still scatter by several percent (quartiles of 0.96-1.15x for the MLP loop): to decide a
few percent, use ``bench_paired.py`` (every step paired, repeated over fresh processes), which
also reports the tracer threads' CPU time. This script's part is the TensorBoard recipes beside
the tracer and the statistics-every-step variants. Variants:
- ``plain``: no instrumentation;
- ``gradtrace``: inside ``gradtrace.trace`` at default capture (records to a temp SQLite file):
  loss, learning rate, iterations and probes every step, per-variable statistics on a warm-up
  of 8 steps and then every N-th, N chosen from measured costs within ``overhead_budget`` 0.02;
- ``gradtrace/1``: the same with ``stats_every=1`` (per-variable statistics every step);
- ``gt-jit``: default capture with ``stats_jit=True`` (the statistics as a separate XLA function);
- ``gt/1-jit``: ``stats_every=1, stats_jit=True`` (mlp-tape);
- ``tb-hist``: per-step ``tf.summary.histogram`` of every gradient (tape workloads);
- ``tb-norms``: per-step ``tf.summary.scalar`` of every gradient's norm (tape workloads).
``--breakdown`` times the MLP tape loop with parts of the default capture switched off
(``ab/step0``, ``ab/nostore``, ``ab/nodecode``, ``ab/noprobes``, ``ab/nohost``: see
``_ablation``). Every variant warms up for ``--warmup`` seconds first (the automatic cadence is chosen during
it). Prints a table of step times and ratios to ``plain``, and the N the default capture chose.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def build(kind: str) -> tuple[Any, np.ndarray, np.ndarray]:
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if kind == "cnn":
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10),
        ])
        x = rng.normal(size=(32, 28, 28, 1)).astype("float32")
    else:
        model = keras.Sequential([
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ])
        x = rng.normal(size=(32, 784)).astype("float32")
    y = rng.integers(0, 10, size=(32,)).astype("int32")
    return model, x, y


def tape_step(model: Any, opt: Any, variant: str, writer: Any) -> Callable[..., Any]:
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
        if variant in ("tb-hist", "tb-norms"):
            with writer.as_default(step=opt.iterations):
                for v, g in zip(model.trainable_variables, grads, strict=False):
                    name = v.path.replace("/", "_")
                    if variant == "tb-hist":
                        tf.summary.histogram(name, g)
                    else:
                        tf.summary.scalar(name, tf.norm(g))
        return loss

    return step


CHOSEN: dict[str, list[int]] = {}


def _scope(variant: str, name: str, db: str) -> Any:
    import gradtrace

    if variant == "gradtrace":
        return gradtrace.trace(run=name, store=db)
    if variant == "gradtrace/1":
        return gradtrace.trace(run=name, store=db, stats_every=1)
    if variant == "gt-jit":
        return gradtrace.trace(run=name, store=db, stats_jit=True)
    if variant == "gt/1-jit":
        return gradtrace.trace(run=name, store=db, stats_every=1, stats_jit=True)
    if variant.startswith("ab/"):
        return _ablation(variant, name, db)
    return nullcontext()


@contextmanager
def _ablation(variant: str, name: str, db: str) -> Iterator[Any]:
    """``--breakdown``: the default capture with parts switched off, to see where its cost goes.

    ``ab/step0``: per-variable statistics on step 0 only (no full steps while timed);
    ``ab/nostore``: that, with the decoded records dropped instead of stored;
    ``ab/nodecode``: that, with the rows read from the ring but not decoded;
    ``ab/noprobes``: ``ab/step0`` without the probes (layer modes, loss details, fingerprints);
    ``ab/nohost``: that, with the host never reading the ring (nothing decoded or stored;
    the ring overruns and says so). Patches internals for the measurement only.
    """
    import gradtrace
    from gradtrace import _export, _probes, _ring, _trace

    saved = (_ring.Poller._loop, _probes.install, _export.Exporter.put_steps, _trace.Run._on_rows)
    if variant in ("ab/noprobes", "ab/nohost"):
        _probes.install = lambda run: (lambda: None)
    if variant == "ab/nohost":
        _ring.Poller._loop = lambda self: self._stop.wait()
    if variant == "ab/nostore":
        _export.Exporter.put_steps = lambda self, steps: None
    if variant == "ab/nodecode":
        _trace.Run._on_rows = lambda self, rows, lost: None
    try:
        with gradtrace.trace(run=name, store=db, stats_every=10**9) as run:
            yield run
    finally:
        _ring.Poller._loop, _probes.install, _export.Exporter.put_steps, _trace.Run._on_rows = saved


def _note(kind: str, scope: Any) -> None:
    info = getattr(scope, "info", None)
    if info is not None and info.extra.get("stats_cadence") == "auto":
        CHOSEN.setdefault(kind, []).append(int(info.extra["stats_every"]))


def time_tape(kind: str, variant: str, steps: int, db: str, logdir: str, warmup: float) -> float:
    import keras
    import tensorflow as tf

    model, x, y = build(kind)
    opt = keras.optimizers.Adam(1e-3)
    writer = tf.summary.create_file_writer(logdir) if variant.startswith("tb") else None
    scope = _scope(variant, f"bench-{kind}", db)
    with scope as run:
        step = tape_step(model, opt, variant, writer)
        xt, yt = tf.constant(x), tf.constant(y)
        t_end = time.perf_counter() + warmup
        n = 0
        while n < 20 or time.perf_counter() < t_end:
            step(xt, yt)
            n += 1
        float(step(xt, yt))
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step(xt, yt)
        float(loss)
        dt = (time.perf_counter() - t0) / steps
    _note(f"{kind}-tape", run)
    if writer is not None:
        writer.close()
    return dt


def time_fit(kind: str, variant: str, steps: int, db: str, warmup: float) -> float:
    import keras

    model, x, y = build(kind)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xs, ys = np.repeat(x, steps, axis=0), np.repeat(y, steps, axis=0)
    scope = _scope(variant, f"bench-fit-{kind}", db)
    with scope as run:
        t_end = time.perf_counter() + warmup
        while True:  # warm-up: trace, compile, let the cadence be chosen
            model.fit(xs[: 32 * 50], ys[: 32 * 50], batch_size=32, epochs=1, verbose=0)
            if time.perf_counter() >= t_end:
                break
        t0 = time.perf_counter()
        model.fit(xs, ys, batch_size=32, epochs=1, verbose=0, shuffle=False)
        dt = (time.perf_counter() - t0) / steps
    _note(f"{kind}-fit", run)
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of warm-up per variant")
    parser.add_argument("--breakdown", action="store_true",
                        help="only mlp-tape: default capture vs the same with parts switched off (see _ablation)")
    parser.add_argument("--only", default="",
                        help="comma-separated workload/variant names to keep, e.g. mlp-tape,gradtrace "
                             "(plain is always kept: it is what the ratios divide by)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="gradtrace-bench-")
    db = f"sqlite:///{tmp}/bench.db"
    workloads: list[tuple[str, list[str], Callable[[str], float]]] = [
        ("mlp-tape", ["plain", "gradtrace", "gt-jit", "gradtrace/1", "gt/1-jit", "tb-hist", "tb-norms"],
         lambda v: time_tape("mlp", v, args.steps, db, f"{tmp}/tb", args.warmup)),
        ("mlp-fit", ["plain", "gradtrace", "gt-jit", "gradtrace/1"],
         lambda v: time_fit("mlp", v, args.steps, db, args.warmup)),
        ("cnn-tape", ["plain", "gradtrace", "gt-jit", "gradtrace/1", "tb-hist", "tb-norms"],
         lambda v: time_tape("cnn", v, args.steps, db, f"{tmp}/tb", args.warmup)),
    ]
    if args.breakdown:
        workloads = [("mlp-tape", ["plain", "gradtrace", "ab/step0", "ab/nostore", "ab/nodecode",
                                    "ab/noprobes", "ab/nohost"],
                      lambda v: time_tape("mlp", v, args.steps, db, f"{tmp}/tb", args.warmup))]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("tensorboard is not installed: the tb-* variants are skipped (pip install tensorboard)")
        workloads = [(n, [v for v in vs if not v.startswith("tb")], f) for n, vs, f in workloads]
    if args.only:
        keep = set(args.only.split(","))
        names = {n for n, _, _ in workloads}
        variants = {v for _, vs, _ in workloads for v in vs}
        workloads = [(n, [v for v in vs if v == "plain" or v in keep or not keep & variants], f)
                     for n, vs, f in workloads if n in keep or not keep & names]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"steps per repeat: {args.steps}, repeats: {args.repeats}, warm-up {args.warmup}s, "
          f"load average {load:.2f} on {os.cpu_count()} cores, records: {db}")
    print(f"{'workload':<10} {'variant':<12} {'median ms/step':>15} {'ratio':>7}  {'quartiles of the ratio':>22}")
    for name, variants, fn in workloads:
        times: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(args.repeats):
            # Alternate, reversing the order every other repeat: a drift within a repeat
            # then favours no variant.
            for v in variants if rep % 2 == 0 else variants[::-1]:
                times[v].append(fn(v))
        for v in variants:
            ratios = [t / b for t, b in zip(times[v], times["plain"], strict=True)]
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
            med = statistics.median(times[v])
            print(f"{name:<10} {v:<12} {med * 1e3:>15.3f} {statistics.median(ratios):>6.3f}x  "
                  f"{q1:>10.3f}-{q3:.3f}", flush=True)
    for kind, ns in CHOSEN.items():
        print(f"default capture chose stats_every: {kind} {ns}")


if __name__ == "__main__":
    main()
