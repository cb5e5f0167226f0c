"""``make demo``: the same training written twice, traced, and diagnosed.

Trains a small MLP on scikit-learn's ``load_digits`` (shipped inside the
package; nothing is downloaded) twice from the same initial weights and the same
batches:

* ``fit``: ``model.compile(SGD(0.01), loss="mse", metrics=["accuracy"])`` and
  ``model.fit(...)``;
* ``tape-loop``: a hand-written ``tf.GradientTape`` loop that reproduces a
  common user report: the loss written as ``reduce_sum(square(out - y)) / 32``
  (Keras ``mse`` averages over the 10 outputs, so this loss and every gradient
  are 10x larger) and accuracy measured with a different metric class.

Both runs are traced into ``./gradtrace.db``; the demo then prints what was
recorded and the comparator's diagnosis. Run it with ``python -m gradtrace.demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator

PROJECT = "digits"
BATCH = 32
EPOCHS = 3
LR = 0.01


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# TensorFlow's C++ lines logged before absl is initialised, which TF_CPP_MIN_LOG_LEVEL does not
# reach: info and warnings, and the CUDA probe's error on a machine with CUDA libraries but no GPU.
_STARTUP_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*(cuInit|CUDA|cuda))"
)


@contextlib.contextmanager
def _without_startup_noise() -> Iterator[None]:
    """Drop TensorFlow's start-up log lines from this process's stderr (file descriptor 2,
    where the C++ side writes); every other line, gradtrace's warnings included, passes."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not _STARTUP_NOISE.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="demo-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to its end
        thread.join(timeout=5)
        os.close(saved)


def _data():
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")  # (1797, 64)
    y = digits.target.astype("int32")
    onehot = np.eye(10, dtype="float32")[y]
    return x, y, onehot


def _model():
    import keras

    keras.utils.set_random_seed(7)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def train_fit(store: str) -> None:
    import keras

    import gradtrace

    x, _, onehot = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse", metrics=["accuracy"])
    with gradtrace.trace(run="fit", project=PROJECT, store=store):
        model.fit(x, onehot, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)


def train_tape_loop(store: str) -> None:
    import keras
    import tensorflow as tf

    import gradtrace

    x, y, _ = _data()
    model = _model()
    optimizer = keras.optimizers.SGD(LR)
    accuracy = keras.metrics.Accuracy()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            out = model(xb, training=True)
            y_onehot = tf.one_hot(yb, depth=10)
            loss = tf.reduce_sum(tf.square(out - y_onehot)) / 32.0
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # noqa: B905 - as users write it
        accuracy.update_state(yb, tf.argmax(out, axis=1))
        return loss

    with gradtrace.trace(run="tape-loop", project=PROJECT, store=store):
        for _ in range(EPOCHS):
            for start in range(0, len(x), BATCH):
                train_step(x[start : start + BATCH], y[start : start + BATCH])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradtrace.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="gradtrace.db", help="SQLite file to trace into")
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    store = f"sqlite:///{os.path.abspath(args.db)}"

    print("gradtrace demo: one model, trained twice on scikit-learn's digits")
    print(f"  records go to {args.db}\n")
    for name, fn in (("fit", train_fit), ("tape-loop", train_tape_loop)):
        t0 = time.perf_counter()
        print(f"- training '{name}' ...", end=" ", flush=True)
        with _without_startup_noise():
            fn(store)
        print(f"done in {time.perf_counter() - t0:.1f}s")

    from gradtrace.cli import main as cli

    for name in ("fit", "tape-loop"):
        print(f"\n$ gradtrace show {name} --project {PROJECT} --steps 0:5")
        cli(["show", name, "--project", PROJECT, "--steps", "0:5", "--db", store])
    print(f"\n$ gradtrace compare fit tape-loop --project {PROJECT}")
    code = cli(["compare", "fit", "tape-loop", "--project", PROJECT, "--db", store])
    print(
        "\nNext: `gradtrace serve` and open http://127.0.0.1:8000 to see the plots, "
        "or `gradtrace --help`."
    )
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
