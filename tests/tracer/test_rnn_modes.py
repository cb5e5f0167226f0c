"""A recurrent layer's `training` mode is recorded under its cell's name on both Keras
flavours: tf-keras's GRU and LSTM run the cell's computation themselves (dropout masks drawn
by the layer) without calling the cell, Keras 3's call it on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
import gradtrace
from gradtrace.store import open_store

keras = tf.keras
url = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 6, 3)).astype("float32")
y = (x[:, :, 0].sum(1) > 0).astype("int32")
keras.utils.set_random_seed(1)
model = keras.Sequential([keras.Input((6, 3)),
                          keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True)),
                          keras.layers.LSTM(3, dropout=0.2), keras.layers.Dense(2)])
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
opt = keras.optimizers.SGD(0.1)
with gradtrace.trace(run="rnn", store=url, stats_every=1):
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    with tf.GradientTape() as tape:  # an eager step in inference mode
        loss = tf.reduce_mean(model(x[:16], training=False))
    g = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(g, model.trainable_variables))
store = open_store(url)
steps = sorted(store.steps(store.resolve("rnn").id), key=lambda s: s["step"])
for s in steps:
    print("MODES", sorted((s["modes"] or {}).items()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf_keras"])
def test_recurrent_layer_mode_under_its_cell(tmp_path, legacy):
    if legacy:
        pytest.importorskip("tf_keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GRADTRACE_STRICT="1",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server")))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'rnn.db'}"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    modes = [ln[len("MODES "):] for ln in out.stdout.splitlines() if ln.startswith("MODES ")]
    cells = ["gru_cell", "gru_cell#2", "lstm_cell"]
    assert modes == [str([(c, True) for c in cells])] * 2 + [str([(c, False) for c in cells])], modes
