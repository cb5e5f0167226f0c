# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Pairs whose loop updates the weights by hand (see scripts.py for the conventions): the
``v.assign_sub(lr * g)`` of TensorFlow's basic training loops, eagerly, in a tf.function and under
XLA, momentum written by hand, a tf.Module with plain tf.Variables, and a hand-written loop that
forgets ``training=True``. The tracer records such steps as a ``ManualUpdate`` optimizer's.
"""

from __future__ import annotations

from . import data
from .scripts import BATCH, STEPS, _bn_dropout_net, _digits_slice, _keras, _mlp


def _sparse_ce():
    return _keras().losses.SparseCategoricalCrossentropy(from_logits=True)


def _digits_by_hand(lr: float = 0.1, how: str = "function", write: str = "assign_sub",
                    momentum: float = 0.0):
    """The digits MLP of ``fit_digits_sgd_sparse`` trained by hand: ``how`` is ``"eager"``,
    ``"function"`` or ``"xla"``; ``write`` ``"assign_sub"`` or ``"assign"`` (``v.assign(v - lr * g)``);
    ``momentum`` > 0 keeps a velocity per variable, as Keras' SGD does
    (``m = momentum * m - lr * g; v += m``)."""
    import tensorflow as tf

    x, y = _digits_slice()
    model = _mlp(64, 10)
    loss_fn = _sparse_ce()
    velocity = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g, m in zip(model.trainable_variables, grads, velocity):
            if momentum:
                m.assign(momentum * m - lr * g)
                v.assign_add(m)
            elif write == "assign":
                v.assign(v - lr * g)
            else:
                v.assign_sub(lr * g)
        return loss

    if how != "eager":
        step = tf.function(step, jit_compile=how == "xla")
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_digits_by_hand():
    _digits_by_hand()


def tape_digits_by_hand_eager():
    _digits_by_hand(how="eager", write="assign")


def tape_digits_by_hand_xla():
    _digits_by_hand(how="xla")


def tape_digits_by_hand_half_rate():
    _digits_by_hand(lr=0.05)


def tape_digits_momentum_by_hand():
    _digits_by_hand(momentum=0.9)


def tape_digits_adam_by_hand():
    """Keras 3's Adam written out (keras/src/optimizers/adam.py ``update_step``): moments in
    variables of their own, bias correction from a step counter, then ``assign_sub``."""
    import tensorflow as tf

    x, y = _digits_slice()
    model = _mlp(64, 10)
    loss_fn = _sparse_ce()
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    ms = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]
    vs = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]
    t = tf.Variable(0.0, trainable=False)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        t.assign_add(1.0)
        alpha = lr * tf.sqrt(1 - b2**t) / (1 - b1**t)
        for w, g, m, v in zip(model.trainable_variables, grads, ms, vs):
            m.assign_add((g - m) * (1 - b1))
            v.assign_add((tf.square(g) - v) * (1 - b2))
            w.assign_sub((m * alpha) / (tf.sqrt(v) + eps))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def _bn_dropout_by_hand(training: bool | None):
    import tensorflow as tf

    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    loss_fn = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb) if training is None else model(xb, training=training)
            loss = loss_fn(yb, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(0.1 * g)

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def fit_bn_dropout_sgd():
    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_bn_dropout_by_hand():
    _bn_dropout_by_hand(True)


def tape_bn_dropout_by_hand_no_training_flag():
    _bn_dropout_by_hand(None)


def _module_regression(how: str, lr: float = 0.1):
    """TensorFlow's basic training loop: ``y = w x + b`` as a tf.Module of two scalar tf.Variables,
    the mean squared error written by hand, each variable updated with ``assign_sub``."""
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def __call__(self, x):
            return self.w * x + self.b

    import numpy as np

    x = tf.constant(np.random.default_rng(3).normal(size=200).astype("float32"))
    y = x * 3.0 + 2.0
    model = Linear()

    def train(x, y):
        with tf.GradientTape() as t:
            loss = tf.reduce_mean(tf.square(y - model(x)))
        dw, db = t.gradient(loss, [model.w, model.b])
        model.w.assign_sub(lr * dw)
        model.b.assign_sub(lr * db)

    if how != "eager":
        train = tf.function(train)
    for _ in range(10):
        train(x, y)


def tape_module_regression_eager():
    _module_regression("eager")


def tape_module_regression_function():
    _module_regression("function")


def tape_module_regression_other_rate():
    _module_regression("function", lr=0.02)
