"""Where the full-step statistics condition sits in the step: a microbenchmark.

Run: ``.venv/bin/python bench/bench_defer.py [--rounds 3000] [--repeats 6]``

The tracer decides per step whether to compute the per-variable statistics, with one functional
``If`` (``gradtrace._stats.cond``) that takes the step's gradients and weights, so it runs at
the end of the step. This script measures that shape on the MLP 784-256-128-10 tape step (batch
32, Adam), without the tracer, against keeping the gradients for the next step and testing
for them there, at its start:

- ``plain``: the step alone;
- ``ring``: a step counter and a ring-buffer row write (the part every variant has);
- ``end``: ``ring`` plus the ``If`` at the end of the step, taking the gradients and weights;
- ``next``: ``ring`` plus the gradients kept by reference in a ``variant`` variable holding a
  ``tf.experimental.Optional`` (written at the end of the step) and the ``If`` at the next
  step's start, on them.

Statistics are due every 1000 steps, so nearly every step is light. The four step functions are
called in turn, every call timed; each process prints its medians' ratios to ``plain``, and
``--repeats`` runs fresh processes and prints the median of each ratio (they move by a few
percent from one process to the next).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _processes import emit, in_fresh_processes  # noqa: E402
from bench_overhead import build  # noqa: E402

VARIANTS = ("plain", "ring", "end", "next")
EVERY = 1000


def _stats(grads: list[Any], weights: list[Any]) -> Any:
    import tensorflow as tf

    parts = [tf.stack([tf.norm(g), tf.reduce_min(g), tf.reduce_max(g)]) for g in grads]
    return tf.concat(parts, 0) + tf.add_n([tf.norm(w) for w in weights])


def make_step(variant: str) -> Any:
    import keras
    import tensorflow as tf
    from gradtrace._stats import cond
    from tensorflow.python.data.ops import optional_ops

    model, x, y = build("mlp")
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tv = model.trainable_variables
    width = 3 * len(tv)
    ring = tf.Variable(tf.zeros([64, width]))
    count = tf.Variable(0, dtype=tf.int64)
    every = tf.Variable(EVERY, dtype=tf.int64)
    nan = float("nan")
    if variant == "next":
        spec = tf.experimental.Optional.from_value(
            tuple(tf.zeros(v.shape) for v in tv) + (tf.constant(False),)).element_spec
        kept = tf.Variable(tf.experimental.Optional.empty(spec)._variant_tensor, trainable=False)

    def write(i: Any, vals: Any) -> None:
        ring.scatter_nd_update(tf.reshape(tf.math.floormod(i, 64), [1, 1]), tf.reshape(vals, [1, -1]))

    @tf.function(autograph=False)
    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, tv)
        if variant == "plain":
            opt.apply_gradients(zip(grads, tv, strict=True))
            return loss
        i = count.assign_add(1) - 1
        full = tf.equal(tf.math.floormod(i, every), 0)
        if variant == "ring":
            write(i, tf.fill([width], 1.0))
        elif variant == "next":
            prev = optional_ops._OptionalImpl(kept.read_value(), spec)

            def previous() -> Any:
                got = prev.get_value()
                weights = [tf.convert_to_tensor(v) for v in tv]
                write(i, cond(got[-1], lambda: _stats(list(got[:-1]), weights), lambda: tf.fill([width], nan)))
                return tf.constant(True)

            cond(prev.has_value(), previous, lambda: tf.constant(False))
        opt.apply_gradients(zip(grads, tv, strict=True))
        if variant == "end":
            weights = [tf.convert_to_tensor(v) for v in tv]
            write(i, cond(full, lambda: _stats(grads, weights), lambda: tf.fill([width], nan)))
        elif variant == "next":
            kept.assign(tf.experimental.Optional.from_value(tuple(grads) + (full,))._variant_tensor)
        return loss

    step(tf.constant(x), tf.constant(y))
    return step


def one(rounds: int) -> dict[str, float]:
    import numpy as np
    import tensorflow as tf

    _, x, y = build("mlp")
    x, y = tf.constant(x), tf.constant(y)
    steps = {v: make_step(v) for v in VARIANTS}
    for _ in range(300):
        for f in steps.values():
            f(x, y)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for v in order:
            t0 = time.perf_counter()
            steps[v](x, y)
            times[v].append(time.perf_counter() - t0)
    base = float(np.median(times["plain"]))
    return {"plain_ms": base * 1e3, **{v: float(np.median(times[v])) / base for v in VARIANTS[1:]}}


def _line(r: dict[str, float]) -> str:
    return f"plain {r['plain_ms']:.3f} ms; " + ", ".join(f"{v} {r[v]:.3f}x" for v in VARIANTS[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000, help="calls of each step function timed")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes; the median of their ratios")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats <= 1:
        r = one(args.rounds)
        if args.json:
            emit(r)
        else:
            print(_line(r))
        return

    def show(i: int, r: dict[str, Any]) -> None:
        print(f"[{i + 1}/{args.repeats}] {_line(r)}", flush=True)

    results = in_fresh_processes(__file__, args.repeats, show)
    print(f"median over {args.repeats} processes: "
          + ", ".join(f"{v} {statistics.median(r[v] for r in results):.3f}x "
                      f"({min(r[v] for r in results):.3f}-{max(r[v] for r in results):.3f})" for v in VARIANTS[1:]))


if __name__ == "__main__":
    main()
