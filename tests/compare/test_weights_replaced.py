"""Weights overwritten outside the optimizer's steps: fit() with an EMA optimizer writes the
moving average into the model when it ends, and EarlyStopping(restore_best_weights=True) sets
its best epoch's weights back; a tape loop with the same optimizer does neither. Every step
agrees, the trained models do not. The tracer records each write (``RunInfo.weight_writes``)
on Keras 3 and tf-keras, and the comparator reports ``weights_replaced`` for the run that has
writes the other lacks. Real trainings on digits in a fresh process per Keras, traced into a
SQLite file that the test process compares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = 2 * 8  # two epochs of 8 batches

SCRIPT = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
import gradtrace
if os.environ.get("TF_USE_LEGACY_KERAS"):
    import tf_keras as keras
else:
    import keras
from sklearn.datasets import load_digits

url = sys.argv[1]
x, y = load_digits(return_X_y=True)
x, y = (x[:256] / 16).astype("float32"), y[:256].astype("int32")

def make():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10)])
    return model, keras.optimizers.Adam(0.01, use_ema=True)

loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
for name in ("fit", "fit_again"):
    model, opt = make()
    model.compile(opt, loss_fn)
    with gradtrace.trace(run=name, project="writes", store=url) as run:
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
                  callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)])
    print("WRITES", name, json.dumps(run.info.weight_writes))

model, opt = make()
with gradtrace.trace(run="loop", project="writes", store=url) as run:
    for epoch in range(2):
        for i in range(0, 256, 32):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[i:i + 32], model(x[i:i + 32], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
print("WRITES loop", json.dumps(run.info.weight_writes))
"""


@pytest.fixture(scope="module", params=["keras3", "tf_keras"])
def traced(request, tmp_path_factory) -> tuple[str, dict[str, list[dict]]]:
    """The three runs traced by a fresh process of the flavour: (store url, writes by run)."""
    if request.param == "tf_keras":
        pytest.importorskip("tf_keras")
    url = f"sqlite:///{tmp_path_factory.mktemp('writes') / 'writes.db'}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GRADTRACE_STRICT="1",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server")))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if request.param == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT, url], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    writes = {}
    for line in out.stdout.splitlines():
        if line.startswith("WRITES "):
            _, name, text = line.split(" ", 2)
            writes[name] = json.loads(text)
    assert sorted(writes) == ["fit", "fit_again", "loop"], out.stdout[-2000:]
    return url, writes


@pytest.mark.slow
def test_the_tracer_records_the_writes_fit_makes_at_its_end(traced):
    _, writes = traced
    # fit() writes the EMA in first (its own end), then EarlyStopping's on_train_end restores.
    assert [(w["how"], w["by"], w["step"]) for w in writes["fit"]] == [
        ("ema", "fit", STEPS), ("set_weights", "EarlyStopping", STEPS)], writes["fit"]
    # both write every trainable weight of the model: two kernels and two biases
    assert all(w["variables"] == [0, 1, 2, 3] for w in writes["fit"]), writes["fit"]
    assert writes["loop"] == [], "a loop that never calls finalize_variable_values writes nothing"


@pytest.mark.slow
def test_the_comparator_names_the_writes_one_run_lacks(traced):
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    url, _ = traced
    with open_store(url) as store:
        report = compare(store, "fit", "loop", project="writes")
        same = compare(store, "fit", "fit_again", project="writes")
    (f,) = [f for f in report.findings if f.kind == "weights_replaced"]
    assert f.severity == "warning" and f.steps == [STEPS], f
    assert [(w["how"], w["by"]) for w in f.evidence["only_in"]["a"]] == [("ema", "fit"),
                                                                      ("set_weights", "EarlyStopping")], f.evidence
    assert "b" not in f.evidence["only_in"], f.evidence
    assert "finalize_variable_values" in f.fix and "restore_best_weights" in f.fix, f.fix
    # every step agrees: the writes are the one thing said
    assert [g.kind for g in report.findings if g.severity != "info"] == ["weights_replaced"], report.findings
    assert report.verdict == "diverged", report.verdict
    # Both runs that write the same way: nothing to say about their ends.
    assert not [f for f in same.findings if f.kind == "weights_replaced"], same.findings
