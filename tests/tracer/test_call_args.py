"""The optional arguments layers are called with, recorded in ``RunInfo.extra["call_args"]``:
static values as they are, tensors only as given, arguments at their default left out, calls a
Keras layer makes to its own sublayers not recorded. Real trainings into a real SQLite file."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import gradtrace  # noqa: E402

B, T, D = 8, 5, 6


class AttentionNet(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="att")
        self.rnn = keras.layers.GRU(4, name="rnn")
        self.plain = keras.layers.MultiHeadAttention(num_heads=1, key_dim=2, name="plain")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x, training=None):  # type: ignore[no-untyped-def]
        mask = tf.ones((tf.shape(x)[0], T, T), dtype="bool")
        h = self.att(x, x, attention_mask=mask, use_causal_mask=True, training=training)
        h = self.plain(h, h, use_causal_mask=False, training=training)  # the default: not recorded
        state = tf.zeros((tf.shape(x)[0], 4))
        return self.head(self.rnn(h, initial_state=state, training=training))


@pytest.mark.parametrize("compiled", [True, False], ids=["tf.function", "eager"])
def test_call_arguments_are_recorded_per_layer(db_url, read_run, compiled):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B * 2, T, D)).astype("float32")
    y = rng.normal(size=(B * 2, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    model = AttentionNet()
    model(x[:1])
    opt = keras.optimizers.SGD(0.01)

    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    fn = tf.function(step) if compiled else step
    with gradtrace.trace(run="calls", store=db_url):
        for i in range(0, len(x), B):
            fn(x[i:i + B], y[i:i + B])
    detail, steps = read_run("calls")
    assert len(steps) == 2
    calls = detail.meta["extra"]["call_args"]
    assert calls["att"]["class"] == "MultiHeadAttention"
    assert calls["att"]["calls"] == [{"attention_mask": "<tensor>", "use_causal_mask": True}]
    assert calls["att"]["defaults"]["use_causal_mask"] is False
    assert calls["att"]["defaults"]["attention_mask"] is None
    assert calls["rnn"]["calls"] == [{"initial_state": "<tensor>"}]
    # At its default (use_causal_mask=False), a layer is not listed; the Softmax and Dropout
    # MultiHeadAttention calls itself (with the attention mask) are its implementation.
    assert set(calls) == {"att", "rnn"}, calls


def test_a_run_with_every_layer_at_its_defaults_says_so(db_url, read_run):  # type: ignore[no-untyped-def]
    """An empty record (not a missing one): the comparator reads it as every call at its defaults."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.zeros((B, D), "float32")
    with gradtrace.trace(run="defaults", store=db_url):
        model.fit(x, x[:, :1], batch_size=B, epochs=1, verbose=0)
    detail, _ = read_run("defaults")
    assert detail.meta["extra"]["call_args"] == {}
