"""Tracer overhead measured step by step: a plain and a traced step function called in turn.

Run: ``.venv/bin/python bench/bench_paired.py [--kind mlp|cnn] [--pairs 5000] [--stats-jit]
[--without PART]``

``bench_overhead.py`` times blocks of steps per variant; this machine's speed drifts by ±20 %
within seconds, so its ratios scatter by several percent. Here two identical models (same
seed) get one ``tf.function`` tape step each: the plain one is traced before
``gradtrace.trace`` is entered (so it runs its plain graph; the tracer reports its steps as
not recorded, as it should), the other inside. Inside the trace the two are called
alternately and every call is timed, so drift hits both alike. Printed: the median step time of
each and their ratio (a light step's cost: most steps record no per-variable statistics), the
ratio of the mean step times (full steps included), and the median ratio within blocks of 500
pairs with its quartiles.

Caveat: the tracer's background threads (reading the ring, storing records) run while either
function steps, so their cost lands on both and the ratio understates it by about half;
``bench_overhead.py`` charges it to the traced variant alone.

``--without`` switches one part off, patching internals for the measurement only:
``statcond``: the full-step statistics condition (no full steps: the place where it sits in the
graph is what is measured); ``snapshot``: the pre-update weight copy's condition; ``probes``:
layer modes, loss details and fingerprints; ``host``: the host never reads the ring (it
overruns and says so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_overhead import build, tape_step  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["mlp", "cnn"], default="mlp",
                        help="mlp: 784-256-128-10, batch 32; cnn: small CNN with BatchNormalization and Dropout")
    parser.add_argument("--pairs", type=int, default=5000, help="plain+traced calls timed (after 500 not timed)")
    parser.add_argument("--stats-jit", action="store_true", help="trace with stats_jit=True")
    parser.add_argument("--without", default="", help="switch one part off: statcond, snapshot, probes, host")
    args = parser.parse_args()

    import gradtrace
    import keras
    import tensorflow as tf

    _switch_off(args.without)

    def make(model: Any) -> Any:
        return tape_step(model, keras.optimizers.Adam(1e-3), "plain", None)

    plain_model, x, y = build(args.kind)
    traced_model, _, _ = build(args.kind)
    xt, yt = tf.constant(x), tf.constant(y)
    plain = make(plain_model)
    plain(xt, yt)
    db = f"sqlite:///{tempfile.mkdtemp(prefix='gradtrace-paired-')}/paired.db"
    warm = 500
    tp: list[float] = []
    tt: list[float] = []
    with gradtrace.trace(run=f"paired-{args.kind}", store=db, stats_jit=args.stats_jit) as run:
        traced = make(traced_model)
        for i in range(warm + args.pairs):
            t0 = time.perf_counter()
            plain(xt, yt)
            t1 = time.perf_counter()
            traced(xt, yt)
            t2 = time.perf_counter()
            if i >= warm:
                tp.append(t1 - t0)
                tt.append(t2 - t1)
    p, t = np.array(tp), np.array(tt)
    blocks = [float(np.median(t[i:i + 500]) / np.median(p[i:i + 500])) for i in range(0, len(p) - 499, 500)]
    q = statistics.quantiles(blocks, n=4) if len(blocks) > 1 else [blocks[0]] * 3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.kind} tape loop, {args.pairs} pairs, stats_jit={args.stats_jit}, "
          f"without={args.without or '-'}, load average {load:.2f}, stats_every chosen "
          f"{run.info.extra.get('stats_every')}")
    print(f"plain   median {np.median(p) * 1e3:.3f} ms  mean {p.mean() * 1e3:.3f} ms")
    print(f"traced  median {np.median(t) * 1e3:.3f} ms  mean {t.mean() * 1e3:.3f} ms")
    print(f"ratio of medians {np.median(t) / np.median(p):.3f}x (blocks of 500: {statistics.median(blocks):.3f}x, "
          f"quartiles {q[0]:.3f}-{q[2]:.3f}); ratio of means {t.mean() / p.mean():.3f}x")


if __name__ == "__main__":
    main()
