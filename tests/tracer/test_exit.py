"""The process exits cleanly after a run: the background thread that times a layout's
statistics (the automatic cadence) is not killed mid-compile at interpreter exit, which
aborts the process ("terminate called ... FATAL: exception not rethrown", exit code 134),
and it stops once its run has ended."""

from __future__ import annotations

import threading

import pytest

keras = pytest.importorskip("keras")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


def test_statistics_timing_threads_are_joined_at_exit_and_stop_with_their_run(db_url, monkeypatch):
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:  # the real start; the test keeps the thread
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    x, y = data(n=48)
    keras.utils.set_random_seed(5)
    base = keras.layers.Dense(8, activation="relu")
    model = keras.Sequential([keras.Input((8,)), base, keras.layers.Dense(1)])
    base.trainable = False
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="short", store=db_url):  # the automatic cadence times each layout
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        base.trainable = True  # a second layout, timed just before the run ends
        model.compile(keras.optimizers.SGD(0.01), "mse")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    timing = [t for t in started if t.name == "gradtrace-cadence"]
    assert timing, "no statistics timing thread was started"
    # the interpreter waits for them at exit instead of killing them inside TensorFlow
    assert not any(t.daemon for t in timing)
    for t in timing:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in timing)
