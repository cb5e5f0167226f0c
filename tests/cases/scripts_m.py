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


# --- a GAN's two halves updated by hand, against two SGDs -------------------------------------


def _gan(by_hand: bool, g_lr: float = 0.05, d_lr: float = 0.1):
    """A 2-d GAN (generator and discriminator MLPs), one tf.function step: the discriminator's
    gradient call then the generator's, each half stepped by its SGD or written by hand."""
    import numpy as np
    import tensorflow as tf

    keras = _keras()
    real = (np.random.default_rng(11).normal(size=(256, 2)) * [0.5, 1.5] + [2.0, -1.0]).astype("float32")
    keras.utils.set_random_seed(11)
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    opts = (keras.optimizers.SGD(d_lr), keras.optimizers.SGD(g_lr))
    noise = tf.random.stateless_normal((STEPS, BATCH, 4), seed=[1, 2])

    def update(opt, lr, variables, grads):
        if by_hand:
            for v, g in zip(variables, grads):
                v.assign_sub(lr * g)
        else:
            opt.apply_gradients(zip(grads, variables))

    @tf.function
    def step(real_b, z):
        with tf.GradientTape() as tape:
            d_real, d_fake = disc(real_b, training=True), disc(gen(z, training=True), training=True)
            d_loss = bce(tf.ones_like(d_real), d_real) + bce(tf.zeros_like(d_fake), d_fake)
        update(opts[0], d_lr, disc.trainable_variables, tape.gradient(d_loss, disc.trainable_variables))
        with tf.GradientTape() as tape:
            g_loss = bce(tf.ones((BATCH, 1)), disc(gen(z, training=True), training=True))
        update(opts[1], g_lr, gen.trainable_variables, tape.gradient(g_loss, gen.trainable_variables))

    for k in range(STEPS):
        step(real[k * BATCH:(k + 1) * BATCH], noise[k])


def tape_gan_two_sgds():
    _gan(False)


def tape_gan_by_hand():
    _gan(True)


def tape_gan_by_hand_generator_rate_wrong():
    _gan(True, g_lr=0.1)


# --- SGD settings a hand-written update leaves out, and a schedule ----------------------------


def fit_digits_sgd_clipnorm():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1, clipnorm=0.5), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_digits_sgd_exponential_decay():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _digits_by_hand_decayed(staircase: int):
    """``lr = 0.1 * 0.9 ** (step // staircase)`` computed by hand from a step counter."""
    import tensorflow as tf

    x, y = _digits_slice()
    model = _mlp(64, 10)
    loss_fn = _sparse_ce()
    count = tf.Variable(0, dtype=tf.int64, trainable=False)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        lr = 0.1 * tf.pow(0.9, tf.cast(count // staircase, tf.float32))
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(lr * g)
        count.assign_add(1)

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_digits_by_hand_decayed():
    _digits_by_hand_decayed(1)


def tape_digits_by_hand_staircase():
    _digits_by_hand_decayed(4)


# --- decoupled weight decay written beside Adam, against AdamW ----------------------------------


def fit_digits_adamw_decay_05():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _digits_adam_decay_by_hand(wd: float):
    """``v.assign_sub(v * wd * lr)`` before ``Adam.apply_gradients``, in the step function: AdamW
    decays so before its update (keras/src/optimizers/base_optimizer.py ``apply`` calls
    ``_apply_weight_decay`` first)."""
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v in model.trainable_variables:
            v.assign_sub(v * wd * 1e-3)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_digits_adam_decay_by_hand():
    _digits_adam_decay_by_hand(0.05)


def tape_digits_adam_decay_by_hand_too_strong():
    _digits_adam_decay_by_hand(50.0)
