"""Mixed precision: the loss scale, skipped steps and the unscaled loss are recorded."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


@pytest.fixture
def mixed_policy():
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def mp_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(6, activation="tanh"),
        keras.layers.Dense(1, dtype="float32"),
    ])


def test_fit_under_mixed_float16_records_scale_and_unscaled_loss(mixed_policy, db_url, read_run):
    x, y = data(n=16)
    ref = mp_model()
    with tf.GradientTape() as tape:
        ref_loss_t = keras.losses.MeanSquaredError()(y[:8], ref(x[:8], training=True))
    ref_loss = float(ref_loss_t)
    ref_norms = [float(tf.norm(tf.cast(g, tf.float32))) for g in tape.gradient(ref_loss_t, ref.trainable_variables)]
    model = mp_model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    with gradtrace.trace(run="mp-fit", store=db_url) as run:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert run.info.warnings == []  # the wrapped optimizer's steps are all accounted for
    detail, steps = read_run("mp-fit")
    assert len(steps) == 4
    assert detail.meta["dtype_policy"] == "mixed_float16"
    assert detail.meta["optimizer"]["class"] == "LossScaleOptimizer"
    scales = [s["loss_scale"] for s in steps]
    skipped = [s["skipped"] for s in steps]
    assert scales[0] == 2.0**15
    # dynamic loss scaling: a step with non-finite scaled gradients is skipped (the weights
    # do not move) and the scale halves; otherwise it stays (growth comes after 2000 steps)
    for k in range(3):
        assert scales[k + 1] == (scales[k] / 2 if skipped[k] else scales[k])
    assert [all(v["applied"] for v in s["vars"]) for s in steps] == [not k for k in skipped]
    assert not all(skipped)
    # the loss before scaling (what a float32 run of the same model would show)
    np.testing.assert_allclose(steps[0]["loss"], ref_loss, rtol=1e-3)
    # and the gradients' statistics without the 2**15 the optimizer divides out itself
    k = skipped.index(False)  # the first step whose scaled gradients were finite
    if k == 0:
        got = [v["norm"] for v in sorted(steps[0]["vars"], key=lambda v: v["v"])]
        np.testing.assert_allclose(got, ref_norms, rtol=2e-2)
    else:  # an overflow first: the finite step's norms are of another scale than 2**15 x them
        assert all(v["norm"] < 1e3 for v in steps[k]["vars"])


def test_tape_loop_with_loss_scale_optimizer_overflow_is_skipped(mixed_policy, db_url, read_run):
    x, y = data(n=8)
    model = mp_model()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05))
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(factor):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            scaled = opt.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        opt.apply([g * tf.cast(factor, g.dtype) for g in grads], model.trainable_variables)
        return loss

    losses, scales = [], []
    with gradtrace.trace(run="mp-tape", store=db_url) as run:
        for factor in (1.0, np.inf, 1.0):
            scales.append(float(opt.dynamic_scale) if opt.built else opt.initial_scale)
            losses.append(float(step(tf.constant(factor))))
    assert run.info.warnings == []
    _, steps = read_run("mp-tape")
    assert [s["skipped"] for s in steps] == [False, True, False]
    assert [s["loss_scale"] for s in steps] == scales == [2.0**15, 2.0**15, 2.0**14]
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    assert [all(v["applied"] for v in s["vars"]) for s in steps] == [True, False, True]


def test_tf_keras_fit_under_mixed_float16(db_url, read_run):
    tf_keras = pytest.importorskip("tf_keras")
    x, y = data(n=16)
    before = tf_keras.mixed_precision.global_policy().name
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        tf.random.set_seed(0)
        model = tf_keras.Sequential([tf_keras.layers.Dense(6, activation="tanh", input_shape=(8,)),
                                     tf_keras.layers.Dense(1, dtype="float32")])
        model.compile(tf_keras.optimizers.SGD(0.05), "mse")
        ref_loss = float(tf_keras.losses.MeanSquaredError()(y[:8], model(x[:8], training=True)))
        scale = float(model.optimizer.loss_scale)

        class Moved(tf_keras.callbacks.Callback):
            """Whether each batch changed the weights: a skipped (overflowed) step does not."""

            def __init__(self):
                super().__init__()
                self.moved: list[bool] = []

            def on_train_batch_begin(self, batch, logs=None):
                self.w = [w.copy() for w in self.model.get_weights()]

            def on_train_batch_end(self, batch, logs=None):
                after = self.model.get_weights()
                self.moved.append(any(not np.array_equal(a, b) for a, b in zip(after, self.w, strict=True)))

        moved = Moved()
        with gradtrace.trace(run="tfk-mp", store=db_url) as run:
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[moved])
    finally:
        tf_keras.mixed_precision.set_global_policy(before)
    assert run.info.warnings == []
    _, steps = read_run("tfk-mp")
    assert len(steps) == 2
    # Skipped exactly where the weights did not move; the dynamic scale halves after a skip.
    assert [s["skipped"] for s in steps] == [not m for m in moved.moved]
    assert steps[0]["loss_scale"] == scale
    assert steps[1]["loss_scale"] == (scale / 2 if steps[0]["skipped"] else scale)
    np.testing.assert_allclose(steps[0]["loss"], ref_loss, rtol=1e-3)
