"""Trained weights written by the script outside the optimizer's steps (``RunInfo.weight_writes``
entries of ``how="assign"``): weights clipped by hand after ``apply_gradients``, in the step
function, in a function of their own or eagerly. Writes the optimizer makes (its update, a
layer's constraint), set_weights, weights of a model no optimizer trains and writes before the
first step are not such writes.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


def net(seed: int = 0, constraint=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, activation="tanh", kernel_constraint=constraint),
        keras.layers.Dense(1),
    ])


def clip(variables, c: float = 0.2) -> None:
    for v in variables:
        v.assign(tf.clip_by_value(v, -c, c))


def loop(model, opt, where: str | None, steps: int = 3, teacher=None) -> None:
    x, y = data()
    loss_fn = keras.losses.MeanSquaredError()
    clip_fn = tf.function(lambda: clip(model.trainable_variables))

    def step():
        if where in ("before_apply", "eager_before_apply"):  # at the top of the step, before its apply
            clip(model.trainable_variables)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        if where in ("step_function", "eager"):
            clip(model.trainable_variables)
        if teacher is not None:  # a mean teacher: written by assign, trained by no optimizer
            for t, s in zip(teacher.trainable_variables, model.trainable_variables, strict=True):
                t.assign(0.9 * t + 0.1 * s)

    fn = step if where in ("eager", "eager_before_apply") else tf.function(step)
    for _ in range(steps):
        fn()
        if where == "function":
            clip_fn()


def assigns(run) -> list[dict]:
    return [w for w in run.info.weight_writes if w["how"] == "assign"]


@pytest.mark.parametrize("where", ["step_function", "eager", "function", "before_apply", "eager_before_apply"])
def test_weights_clipped_by_hand_are_recorded(db_url, read_run, where):
    model = net()
    with gradtrace.trace(run=f"clip-{where}", store=db_url) as run:
        loop(model, keras.optimizers.SGD(0.5), where)
    found = assigns(run)
    assert len(found) == 1, run.info.weight_writes  # one entry, every variable merged into it
    w = found[0]
    assert w["variables"] == sorted(run.var_index(v) for v in model.trainable_variables), w
    if where == "before_apply":  # seen at the end of the trace: it precedes step 0's forward pass
        assert w["step"] == 0 and w["where"] == "step_function", w
    elif where == "eager_before_apply":  # the write before step 0 came through the same lines as step 1's
        assert w["step"] == 0 and w["where"] == "eager", w
    else:  # after step 0's update: the first step that starts from the clipped weights is step 1
        assert w["step"] == 1 and w["where"] == where, w
    detail, _ = read_run(f"clip-{where}")  # stored with the run
    assert [x for x in detail.meta["weight_writes"] if x["how"] == "assign"] == found


def test_writes_that_are_not_the_scripts_own_are_not_recorded(db_url):
    """A layer constraint (applied by the optimizer), the optimizer's own update, set_weights
    between steps (recorded as set_weights), a teacher no optimizer trains, the learning rate
    assigned, and weights copied in before the first step."""
    model = net(constraint=keras.constraints.MaxNorm(0.5))
    teacher = net(seed=1)
    opt = keras.optimizers.Adam(0.05)
    with gradtrace.trace(run="no-assign", store=db_url) as run:
        for v, w in zip(model.trainable_variables, net(seed=2).get_weights(), strict=True):
            v.assign(w)  # before any step: the start, not a write between steps
        loop(model, opt, None, teacher=teacher)
        model.set_weights(model.get_weights())
        opt.learning_rate.assign(0.01)
        loop(model, opt, None, steps=1)
    assert assigns(run) == [], run.info.weight_writes
    assert [w["how"] for w in run.info.weight_writes] == ["set_weights"]


def test_an_eager_write_before_the_first_step_is_dated_by_the_lines_that_made_it(db_url):
    """Before the first step an eager write is set-up; the loop's own writes, through the same
    helper but called from another line, are dated from the step they follow (step 1)."""
    model = net()
    opt = keras.optimizers.SGD(0.5)
    with gradtrace.trace(run="setup-then-loop", store=db_url) as run:
        clip(model.trainable_variables, 0.3)  # set-up: the same helper, called from here
        loop(model, opt, "eager")
    found = assigns(run)
    assert len(found) == 1 and found[0]["step"] == 1 and found[0]["where"] == "eager", found


def test_tf_keras_weights_clipped_by_hand_are_recorded(db_url):
    """tf-keras weights are tf.Variables: their own assign is hooked."""
    tf_keras = pytest.importorskip("tf_keras")
    x, y = data()
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="tanh", input_shape=(8,)),
                                 tf_keras.layers.Dense(1)])
    opt = tf_keras.optimizers.SGD(0.5)
    loss_fn = tf_keras.losses.MeanSquaredError()
    with gradtrace.trace(run="clip-tf-keras", store=db_url) as run:
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            clip(model.trainable_variables[:1])
    found = assigns(run)
    assert len(found) == 1 and found[0]["step"] == 1 and found[0]["where"] == "eager", run.info.weight_writes
    assert found[0]["variables"] == [run.var_index(model.trainable_variables[0])], found
