# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Hand-written updates (``v.assign_sub(lr * g)`` after ``tape.gradient``) are steps of a
stand-in optimizer, ``ManualUpdate``: eagerly, in a tf.function and under XLA, on a Keras model
and on a tf.Module's own tf.Variables. Each step's gradients are the ones the script wrote
with, its updates what the writes changed; a write after the step (a clip) stays a weight write,
a variable left unwritten is recorded as not applied, and two gradient calls updated in turn (a
GAN's halves) are two optimizers.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data, grads_of, var_rows  # noqa: E402

LR = 0.05
HOWS = ["eager", "function", "xla"]


def net(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)])


def compiled(fn, how: str):
    return fn if how == "eager" else tf.function(fn, jit_compile=how == "xla")


def hand_step(model, x, y, head_only: bool = False, clip: bool = False, decay_then=None):
    """The step function of a loop on Keras' MSE: ``v.assign_sub(LR * g)`` for every variable (the
    last layer's only with ``head_only``), then each weight clipped with ``clip``; with
    ``decay_then`` (an optimizer) each weight is decayed by hand and the optimizer applies."""
    loss_fn = keras.losses.MeanSquaredError()
    head = [id(v) for v in model.layers[-1].trainable_variables]

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if decay_then is not None:
            for v in model.trainable_variables:
                v.assign(v * 0.99)
            decay_then.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        for v, g in zip(model.trainable_variables, grads):
            if not head_only or id(v) in head:
                v.assign_sub(LR * g)
        if clip:
            for v in model.trainable_variables:
                v.assign(tf.clip_by_value(v, -0.3, 0.3))
        return loss

    return step


def manual_optimizers(run) -> list[dict]:
    return [o for o in run.info.optimizers if o["class"] == "ManualUpdate"]


@pytest.mark.parametrize("how", HOWS)
def test_keras_model_updated_by_hand(db_url, read_run, how):
    model = net()
    x, y = data()
    expected = [grads_of(model, x, y)]  # the first step's gradients, before any update
    w0 = [v.numpy().copy() for v in model.trainable_variables]
    fn = compiled(hand_step(model, x, y), how)
    losses = []
    with gradtrace.trace(run=f"hand-{how}", store=db_url, stats_every=1) as run:
        for _ in range(4):
            losses.append(float(fn()))
    detail, steps = read_run(f"hand-{how}")
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    assert [s["iterations"] for s in steps] == [1, 2, 3, 4]  # the stand-in's own counter
    assert [s["mode"] for s in steps] == [how if how != "function" else "tf.function"] * 4
    (opt,) = manual_optimizers(run)
    assert opt["variables"] == sorted(run.var_index(v) for v in model.trainable_variables)
    assert opt["config"]["writes"] == ["assign_sub"] and opt["learning_rate"] is None
    assert run.info.keras_flavour == "keras3"
    rows = var_rows(steps[0])
    for v, g, w in zip(model.trainable_variables, expected[0], w0):
        r = rows[run.var_index(v)]
        assert r["grad"] is True and r["applied"] is True
        np.testing.assert_allclose(r["norm"], np.linalg.norm(g), rtol=1e-4)
        np.testing.assert_allclose(r["update_norm"], LR * np.linalg.norm(g), rtol=1e-3)
        np.testing.assert_allclose(r["weight_norm"], np.linalg.norm(w - LR * g), rtol=1e-4)
    assert not run.info.weight_writes  # the update is the step, not a write outside it
    assert "no_steps" not in run._warned


@pytest.mark.parametrize("how", HOWS)
def test_tf_module_updated_by_hand(db_url, read_run, how):
    """TensorFlow's basic training loop: no Keras at all, two scalar tf.Variables."""

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def __call__(self, x):
            return self.w * x + self.b

    xs = tf.constant(np.linspace(-1, 1, 50, dtype="float32"))
    ys = 3.0 * xs + 2.0
    model = Linear()

    def train():
        with tf.GradientTape() as t:
            loss = tf.reduce_mean(tf.square(ys - model(xs)))
        dw, db = t.gradient(loss, [model.w, model.b])
        model.w.assign_sub(0.1 * dw)
        model.b.assign_sub(0.1 * db)
        return dw, db

    fn = compiled(train, how)
    with gradtrace.trace(run=f"module-{how}", store=db_url, stats_every=1) as run:
        grads = [fn() for _ in range(5)]
    detail, steps = read_run(f"module-{how}")
    assert len(steps) == 5 and len(manual_optimizers(run)) == 1
    for s, (dw, db) in zip(steps, grads):
        rows = var_rows(s)
        for v, g in ((model.w, dw), (model.b, db)):
            r = rows[run.var_index(v)]
            np.testing.assert_allclose(r["norm"], abs(float(g)), rtol=1e-5)
            np.testing.assert_allclose(r["update_norm"], 0.1 * abs(float(g)), rtol=1e-3)
    assert run.info.keras_flavour is None  # no Keras object took part
    # named by their attribute in the module (TensorFlow names both `Variable:0`), also as stored
    names = {v["index"]: v["name"] for v in detail.variables}
    assert names == {run.var_index(model.w): "Linear.w", run.var_index(model.b): "Linear.b"}


@pytest.mark.parametrize("how", ["eager", "function"])
def test_variables_left_unwritten_are_not_applied(db_url, read_run, how):
    """Only the head is written: the step closes at the next gradient call (eagerly) or at the
    end of the trace, with the other variables' gradients recorded and not applied."""
    model = net()
    x, y = data()
    head = model.layers[-1].trainable_variables
    fn = compiled(hand_step(model, x, y, head_only=True), how)
    with gradtrace.trace(run=f"head-{how}", store=db_url, stats_every=1) as run:
        for _ in range(3):
            fn()
    _, steps = read_run(f"head-{how}")
    assert len(steps) == 3
    heads = {run.var_index(v) for v in head}
    for s in steps:
        for i, r in var_rows(s).items():
            assert r["grad"] is True
            assert r["applied"] is (i in heads), (i, r)


@pytest.mark.parametrize("how", ["eager", "function"])
def test_clip_after_the_update_is_a_weight_write(db_url, read_run, how):
    model = net()
    x, y = data()
    fn = compiled(hand_step(model, x, y, clip=True), how)
    with gradtrace.trace(run=f"clip-{how}", store=db_url) as run:
        for _ in range(3):
            fn()
    _, steps = read_run(f"clip-{how}")
    assert len(steps) == 3 and len(manual_optimizers(run)) == 1
    (w,) = [w for w in run.info.weight_writes if w["how"] == "assign"]
    assert w["variables"] == sorted(run.var_index(v) for v in model.trainable_variables)


def test_two_halves_updated_in_turn_are_two_optimizers(db_url, read_run):
    """A GAN-like loop: two gradient calls, each half written by hand after both were taken."""
    keras.utils.set_random_seed(3)
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    disc = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    z = tf.random.stateless_normal([16, 4], seed=[1, 2])

    @tf.function
    def step():
        with tf.GradientTape(persistent=True) as tape:
            score = tf.reduce_mean(disc(gen(z)))
            g_loss, d_loss = -score, score
        gg = tape.gradient(g_loss, gen.trainable_variables)
        dg = tape.gradient(d_loss, disc.trainable_variables)
        for v, g in zip(disc.trainable_variables, dg):
            v.assign_sub(0.01 * g)
        for v, g in zip(gen.trainable_variables, gg):
            v.assign_sub(0.01 * g)

    with gradtrace.trace(run="halves", store=db_url) as run:
        for _ in range(3):
            step()
    _, steps = read_run("halves")
    opts = manual_optimizers(run)
    assert len(steps) == 6 and len(opts) == 2
    assert sorted(tuple(o["variables"]) for o in opts) == sorted(
        tuple(sorted(run.var_index(v) for v in m.trainable_variables)) for m in (gen, disc))


def test_an_optimizer_loop_makes_no_hand_written_steps(db_url, read_run):
    """Metrics and the optimizer's own writes are not hand-written updates."""
    model = net()
    x, y = data()
    opt = keras.optimizers.SGD(LR)
    mean = keras.metrics.Mean()
    loss_fn = keras.losses.MeanSquaredError()
    with gradtrace.trace(run="opt", store=db_url) as run:
        for v in model.trainable_variables:  # a write before the first gradient: set-up
            v.assign(v * 0.5)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            mean.update_state(loss)
            opt.apply_gradients(zip(grads, model.trainable_variables))
    _, steps = read_run("opt")
    assert len(steps) == 3 and not manual_optimizers(run)
    assert [o["class"] for o in run.info.optimizers] == ["SGD"]


@pytest.mark.parametrize("how", HOWS)
def test_weights_decayed_between_gradient_and_apply_are_no_step(db_url, read_run, how):
    """A write computed from the variable alone (a decay by hand between tape.gradient and
    apply_gradients) is a weight write, not a hand-written update: one step per iteration, the
    optimizer's. Inside a tf.function the written value does not derive from the gradients;
    eagerly its change is aligned with the weights, not with the gradient."""
    model = net()
    x, y = data()
    fn = compiled(hand_step(model, x, y, decay_then=keras.optimizers.SGD(LR)), how)
    with gradtrace.trace(run=f"decay-{how}", store=db_url) as run:
        for _ in range(3):
            fn()
    _, steps = read_run(f"decay-{how}")
    assert len(steps) == 3 and [o["class"] for o in run.info.optimizers] == ["SGD"]
    (w,) = [w for w in run.info.weight_writes if w["how"] == "assign"]
    assert w["variables"] == sorted(run.var_index(v) for v in model.trainable_variables)


def test_an_update_by_hand_then_by_an_optimizer_is_said(db_url, read_run):
    """Eagerly, writes that move the weights along the gradient before an optimizer applies the
    same gradients (the update done twice) are a hand-written step, and the run says so."""
    model = net()
    x, y = data()
    opt = keras.optimizers.SGD(LR)
    loss_fn = keras.losses.MeanSquaredError()
    with gradtrace.trace(run="twice-eager", store=db_url) as run:
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            for v, g in zip(model.trainable_variables, grads):
                v.assign_sub(LR * g)
            opt.apply_gradients(zip(grads, model.trainable_variables))
    _, steps = read_run("twice-eager")
    assert len(steps) == 3 and len(manual_optimizers(run)) == 1
    assert any("between tape.gradient and this optimizer's apply" in w for w in run.info.warnings)
