"""Tracer overhead measured step by step: a plain and a traced training called in turn.

Run: ``.venv/bin/python bench/bench_paired.py [--kind mlp|cnn|fit] [--pairs 3000] [--repeats 6]
[--block 1] [--stats-jit] [--without PART]``

``bench_overhead.py`` times blocks of steps per variant; this machine's speed drifts by ±20 %
within seconds, so its ratios scatter by several percent. Here two identical models (same
seed) train side by side inside one ``gradtrace.trace``, one traced and one plain, called in
turn, and every call is timed, so drift hits both alike:

- ``mlp``, ``cnn`` (the workloads of ``bench_overhead.py``): a ``tf.function`` tape step each;
  the plain one is traced before ``trace`` is entered, so it runs its plain graph. A pair is
  one step of each.
- ``eager``: the MLP's tape step without ``tf.function`` (every op dispatched from Python, the
  tracer's too); the plain model's steps run inside the tracer's ``suppressed()`` block.
- ``fit``: the MLP under ``model.fit()`` (Keras' default ``jit_compile``), in chunks of
  ``--chunk`` steps: one ``fit()`` call of each model per pair, the plain model's inside the
  tracer's ``suppressed()`` block (fit() inside ``trace`` would otherwise instrument it too).
  Step time is the call's time over its steps, so fit()'s per-call set-up is in both.

Per process it prints the median step time of each, their ratio (a light step's cost: most
steps record no per-variable statistics), the ratio of the mean step times (full steps
included), and the median ratio within blocks of pairs with its quartiles.

The ratio moves by a few percent from one process to the next (1.01× to 1.07× for the MLP on
this 2-core machine) while it stays within ±1–2 % inside one (where the two models' buffers
land in memory is one likely cause): ``--repeats N`` runs N fresh processes and reports the
median of their ratios with the quartiles.

``--block B`` times B steps of one model, then B of the other: the tracer's threads then work
while the traced model trains, as in a traced-only run, instead of between every two steps.

The tracer's background threads (reading the ring, storing records) run while either model
steps, so the ratio charges them to both alike and understates them. Their CPU time per traced
step is measured (the ``gradtrace-*`` threads' CPU clocks over the timed part) and printed,
with the ratio it gives if every microsecond of it delayed the traced step: an upper bound (on
a machine with an idle core it delays nothing).

``--without`` switches one part off, patching internals for the measurement only:
``statcond``: the full-step statistics condition (no full steps: the place where it sits in the
graph is what is measured); ``snapshot``: the pre-update weight copy's condition; ``probes``:
layer modes, loss details and fingerprints; ``host``: the host never reads the ring (it
overruns and says so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _processes import emit, in_fresh_processes  # noqa: E402
from bench_overhead import build, tape_step  # noqa: E402

WARM = 500  # pairs run before timing (tape kinds; fit: 5 chunk pairs), and at least
WARM_SECONDS = 5.0  # seconds: the tracer's start-up (its store opened, the statistics timed) is over


def _switch_off(part: str) -> None:
    from gradtrace import _probes, _ring, _stats

    if part == "statcond":
        cond = _stats.cond
        _stats.cond = lambda pred, t, f: f() if t.__name__ == "stats" else cond(pred, t, f)
    elif part == "snapshot":
        _stats.Cadence.snapshot = lambda self, tvars: self.full(self.seq.read_value())
    elif part == "probes":
        _probes.install = lambda run: (lambda: None)
    elif part == "host":
        _ring.Poller._loop = lambda self: self._stop.wait()
    elif part:
        raise SystemExit(f"--without: unknown part {part!r} (statcond, snapshot, probes, host)")


def _host_cpu() -> dict[tuple[int, str], float]:
    """CPU seconds used so far by each of the tracer's background threads alive now."""
    got = {}
    for t in threading.enumerate():
        if t.name.startswith("gradtrace") and t.ident is not None:
            with contextlib.suppress(OSError, ValueError):
                got[(t.ident, t.name)] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return got


def _host_since(before: dict[tuple[int, str], float]) -> dict[str, float]:
    """CPU seconds, by thread name, the tracer's threads alive now used since ``before`` (a
    thread that ended in between, such as the one-off timing of the statistics, is not counted)."""
    out: dict[str, float] = {}
    for key, cpu in _host_cpu().items():
        out[key[1]] = out.get(key[1], 0.0) + cpu - before.get(key, 0.0)
    return out


def _pairs_tape(args: argparse.Namespace, db: str) -> tuple[np.ndarray, np.ndarray, dict[str, float], Any]:
    import gradtrace
    import keras
    import tensorflow as tf
    from gradtrace._hooks import suppressed

    eager = args.kind == "eager"

    def make(model: Any) -> Any:
        step = tape_step(model, keras.optimizers.Adam(1e-3), "plain", None)
        return step.python_function if eager else step

    kind = "mlp" if eager else args.kind
    plain_model, x, y = build(kind)
    traced_model, _, _ = build(kind)
    xt, yt = tf.constant(x), tf.constant(y)
    plain_step = make(plain_model)

    def plain_eager(xb: Any, yb: Any) -> None:
        # Eagerly every call runs the hooks: the plain model's steps run inside `suppressed()`.
        with suppressed():
            plain_step(xb, yb)

    plain = plain_eager if eager else plain_step  # a tf.function step as it is: no wrapper to time
    plain(xt, yt)
    tp: list[float] = []
    tt: list[float] = []
    with gradtrace.trace(run=f"paired-{args.kind}", store=db, stats_jit=args.stats_jit) as run:
        traced = make(traced_model)
        t_warm = time.perf_counter() + WARM_SECONDS
        i = 0
        while i < WARM or time.perf_counter() < t_warm:
            plain(xt, yt)
            traced(xt, yt)
            i += 1
        cpu0 = _host_cpu()
        b = args.block
        for _ in range(args.pairs // b):
            t0 = time.perf_counter()
            for _ in range(b):
                plain(xt, yt)
            t1 = time.perf_counter()
            for _ in range(b):
                traced(xt, yt)
            t2 = time.perf_counter()
            tp.append((t1 - t0) / b)
            tt.append((t2 - t1) / b)
        host = {k: v / (len(tt) * b) for k, v in _host_since(cpu0).items()}
    return np.array(tp), np.array(tt), host, run


def _pairs_fit(args: argparse.Namespace, db: str) -> tuple[np.ndarray, np.ndarray, dict[str, float], Any]:
    import gradtrace
    import keras
    from gradtrace._hooks import suppressed

    chunk = args.chunk

    def make() -> tuple[Any, np.ndarray, np.ndarray]:
        model, x, y = build("mlp")
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, np.repeat(x, chunk, axis=0), np.repeat(y, chunk, axis=0)

    plain_model, xs, ys = make()
    traced_model, _, _ = make()

    def fit(model: Any) -> float:
        t0 = time.perf_counter()
        model.fit(xs, ys, batch_size=32, epochs=1, verbose=0, shuffle=False)
        return (time.perf_counter() - t0) / chunk

    fit(plain_model)
    chunks = max(args.pairs // chunk, 2)
    tp: list[float] = []
    tt: list[float] = []
    with gradtrace.trace(run="paired-fit", store=db, stats_jit=args.stats_jit) as run:
        t_warm = time.perf_counter() + WARM_SECONDS
        i = 0
        while i < 5 or time.perf_counter() < t_warm:
            with suppressed():
                fit(plain_model)
            fit(traced_model)
            i += 1
        cpu0 = _host_cpu()
        for _ in range(chunks):
            with suppressed():
                tp.append(fit(plain_model))
            tt.append(fit(traced_model))
        host = {k: v / (chunks * chunk) for k, v in _host_since(cpu0).items()}
    return np.array(tp), np.array(tt), host, run


def one(args: argparse.Namespace) -> dict[str, Any]:
    _switch_off(args.without)
    db = f"sqlite:///{tempfile.mkdtemp(prefix='gradtrace-paired-')}/paired.db"
    p, t, host, run = (_pairs_fit if args.kind == "fit" else _pairs_tape)(args, db)
    block = min(10 if args.kind == "fit" else max(500 // args.block, 10), len(p))  # short runs: one block
    blocks = [float(np.median(t[i:i + block]) / np.median(p[i:i + block])) for i in range(0, len(p) - block + 1, block)]
    q = statistics.quantiles(blocks, n=4) if len(blocks) > 1 else [blocks[0]] * 3
    return {
        "plain_ms": float(np.median(p) * 1e3), "traced_ms": float(np.median(t) * 1e3),
        "ratio": float(np.median(t) / np.median(p)), "ratio_means": float(t.mean() / p.mean()),
        "blocks": [statistics.median(blocks), q[0], q[2]], "host_us": sum(host.values()) * 1e6,
        "threads_us": {k: round(v * 1e6, 1) for k, v in sorted(host.items())},
        "bound": float((np.median(t) + sum(host.values())) / np.median(p)),
        "stats_every": run.info.extra.get("stats_every"),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def _print_one(r: dict[str, Any]) -> None:
    b = r["blocks"]
    threads = ", ".join(f"{name.removeprefix('gradtrace-')} {us:.0f}" for name, us in r["threads_us"].items())
    print(f"plain {r['plain_ms']:.3f} ms, traced {r['traced_ms']:.3f} ms (medians): ratio {r['ratio']:.3f}x "
          f"(blocks {b[0]:.3f}x, quartiles {b[1]:.3f}-{b[2]:.3f}); ratio of means {r['ratio_means']:.3f}x; "
          f"tracer threads {r['host_us']:.0f} us CPU per step "
          f"({threads}; "
          f"bound {r['bound']:.3f}x); "
          f"stats_every {r['stats_every']}, load {r['load']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["mlp", "cnn", "fit", "eager"], default="mlp",
                        help="mlp: 784-256-128-10 tape loop, batch 32; cnn: small CNN with BatchNormalization "
                             "and Dropout, tape loop; fit: the MLP under model.fit(); eager: the MLP tape loop without "
                             "tf.function")
    parser.add_argument("--pairs", type=int, default=3000,
                        help="steps of each model timed, after a warm-up of 500 pairs (fit: 5 chunks) and "
                             f"at least {WARM_SECONDS:g} s; fit in chunks")
    parser.add_argument("--chunk", type=int, default=50, help="fit: steps per fit() call")
    parser.add_argument("--block", type=int, default=1,
                        help="tape kinds: steps of one model timed together before the other's (1: every "
                             "step alone). In blocks of ~100 steps the tracer's threads work while the "
                             "traced model trains, as in a traced-only run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh processes to run; their ratios' median and quartiles are reported")
    parser.add_argument("--stats-jit", action="store_true", help="trace with stats_jit=True")
    parser.add_argument("--without", default="", help="switch one part off: statcond, snapshot, probes, host")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one process, for --repeats
    args = parser.parse_args()

    head = (f"{args.kind}, {args.pairs} pairs{f' in blocks of {args.block}' if args.block > 1 else ''}, "
            f"stats_jit={args.stats_jit}, without={args.without or '-'}")
    if args.repeats <= 1:
        r = one(args)
        if args.json:
            emit(r)
        else:
            print(head)
            _print_one(r)
        return
    print(f"{head}, {args.repeats} processes", flush=True)

    def show(i: int, r: dict[str, Any]) -> None:
        print(f"[{i + 1}/{args.repeats}] ", end="")
        _print_one(r)

    results = in_fresh_processes(__file__, args.repeats, show)

    def summary(key: str) -> str:
        vals = [r[key] for r in results]
        q = statistics.quantiles(vals, n=4)
        return f"{statistics.median(vals):.3f}x (quartiles {q[0]:.3f}-{q[2]:.3f})"

    print(f"median over {args.repeats} processes: ratio {summary('ratio')}; ratio of means {summary('ratio_means')}; "
          f"bound with the tracer threads' CPU charged {summary('bound')}; tracer threads "
          f"{statistics.median(r['host_us'] for r in results):.0f} us CPU per step")


if __name__ == "__main__":
    main()
