"""Gradients computed in one function and applied in another: the step keeps its loss and data.

``grads, loss = compute_grads(x, y)`` in a ``tf.function``, then ``apply_gradients`` eagerly or
in a second ``tf.function``, or gradients of micro-batches summed in a Python loop and applied
once. Each run is read back from a real SQLite store and checked against the loss computed here
and against the same training written in one function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import gradtrace  # noqa: E402

N, D, STEPS = 16, 5, 3


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)).astype("float32"), rng.normal(size=(N, 1)).astype("float32")


def _model() -> Any:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((D,)), keras.layers.Dense(4, name="hidden"),
                             keras.layers.Dense(1, name="out")])


def _train(style: str, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Train STEPS steps in one of the styles; returns the final weights."""
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables), loss

    def apply(grads: Any) -> None:
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    if style == "one":
        @tf.function
        def step(x: Any, y: Any) -> Any:
            grads, loss = compute_grads(x, y)
            apply(grads)
            return loss
        for x, y in batches:
            step(x, y)
    elif style in ("eager_apply", "function_apply"):
        grads_fn = tf.function(compute_grads)
        apply_fn = apply if style == "eager_apply" else tf.function(apply)
        for x, y in batches:
            grads, _ = grads_fn(x, y)
            apply_fn(grads)
    elif style == "one_accumulate":
        @tf.function
        def acc_step(micro: Any) -> None:
            total = None
            for x, y in micro:
                grads, _ = compute_grads(x, y)
                total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
            apply([g / len(micro) for g in total])
        for i in range(0, len(batches), 2):
            acc_step(batches[i:i + 2])
    elif style == "accumulate":
        grads_fn = tf.function(compute_grads)
        apply_fn = tf.function(apply)
        for i in range(0, len(batches), 2):
            total = None
            for x, y in batches[i:i + 2]:
                grads, _ = grads_fn(x, y)
                total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
            apply_fn([g / 2 for g in total])
    else:  # pragma: no cover
        raise AssertionError(style)
    return [v.numpy() for v in model.trainable_variables]


def _expected_losses(batches: list[tuple[np.ndarray, np.ndarray]], per_step: int) -> list[float]:
    """The MSE of each step's last batch at the weights of that step, recomputed here untraced."""
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    out = []
    for i in range(0, len(batches), per_step):
        total, last = None, None
        for x, y in batches[i:i + per_step]:
            with tf.GradientTape() as tape:
                last = float(tf.reduce_mean(tf.square(y - model(x, training=True))))
                loss = tf.reduce_mean(tf.square(y - model(x, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
        opt.apply_gradients(zip([g / per_step for g in total], model.trainable_variables, strict=True))
        out.append(last)
    return out


def _fp(x: np.ndarray) -> list[float]:
    return [float(x.sum(dtype=np.float64)), float((x.astype(np.float64) ** 2).sum())]


@pytest.mark.parametrize("style", ["eager_apply", "function_apply"])
def test_split_step_records_loss_and_fingerprints_like_one_function(db_url, read_run, style):
    batches = [_data(seed) for seed in range(STEPS)]
    with gradtrace.trace(run="one", store=db_url):
        w_one = _train("one", batches)
    with gradtrace.trace(run="split", store=db_url):
        w_split = _train(style, batches)
    w_plain = _train(style, batches)  # untraced
    for a, b, c in zip(w_one, w_split, w_plain, strict=True):
        np.testing.assert_array_equal(b, c)  # tracing changes nothing
        np.testing.assert_allclose(a, b, rtol=1e-6)

    detail, split = read_run("split")
    _, one = read_run("one")
    assert len(split) == len(one) == STEPS
    expected = _expected_losses(batches, 1)
    for s, o, want, (x, y) in zip(split, one, expected, batches, strict=True):
        assert s["loss"] == pytest.approx(want, rel=1e-5)
        assert s["loss"] == pytest.approx(o["loss"], rel=1e-6, abs=1e-6)
        assert s["target_shape"] == o["target_shape"] == []
        assert s["batch_size"] == o["batch_size"] == N
        np.testing.assert_allclose(s["x_fp"], o["x_fp"], rtol=1e-6)
        np.testing.assert_allclose(s["y_fp"], o["y_fp"], rtol=1e-6)
        np.testing.assert_allclose(s["x_fp"][:2], _fp(x), rtol=1e-5)
        np.testing.assert_allclose(s["y_fp"][:2], _fp(y), rtol=1e-5)
        assert s["loss_info"]["cls"] == o["loss_info"]["cls"]
    assert not detail.meta.get("warnings")
    assert not detail.meta.get("partial")

    from gradtrace.compare import compare, render_text
    from gradtrace.store import open_store

    store = open_store(db_url)
    try:
        report = compare(store, "split", "one")
    finally:
        store.close()
    assert report.verdict == "equivalent", render_text(report, verbose=True)


def test_accumulation_over_micro_batches_records_the_last_micro_batch(db_url, read_run):
    """Two micro-batches' gradients summed in Python and applied once: the step's loss and
    fingerprints are those of the last gradient call before the apply, as in one function."""
    batches = [_data(seed) for seed in range(2 * STEPS)]
    with gradtrace.trace(run="one", store=db_url):
        w_one = _train("one_accumulate", batches)
    with gradtrace.trace(run="split", store=db_url):
        w_split = _train("accumulate", batches)
    w_plain = _train("accumulate", batches)
    for a, b, c in zip(w_one, w_split, w_plain, strict=True):
        np.testing.assert_array_equal(b, c)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    _, split = read_run("split")
    _, one = read_run("one")
    assert len(split) == len(one) == STEPS
    expected = _expected_losses(batches, 2)
    for i, (s, o, want) in enumerate(zip(split, one, expected, strict=True)):
        x, y = batches[2 * i + 1]
        assert s["loss"] == pytest.approx(want, rel=1e-5)
        assert s["loss"] == pytest.approx(o["loss"], rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(s["x_fp"], o["x_fp"], rtol=1e-6)
        np.testing.assert_allclose(s["y_fp"], o["y_fp"], rtol=1e-6)
        np.testing.assert_allclose(s["x_fp"][:2], _fp(x), rtol=1e-5)
        assert s["batch_size"] == N

    from gradtrace.compare import compare, render_text
    from gradtrace.store import open_store

    store = open_store(db_url)
    try:
        report = compare(store, "split", "one")
    finally:
        store.close()
    assert report.verdict == "equivalent", render_text(report, verbose=True)


def test_applying_the_same_gradients_twice_records_no_loss_the_second_time(db_url, read_run):
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    want = float(loss_fn(y, model(x, training=True)))
    with gradtrace.trace(run="twice", store=db_url):
        grads = compute_grads(x, y)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    _, steps = read_run("twice")
    assert len(steps) == 2
    assert steps[0]["loss"] == pytest.approx(want, rel=1e-5)
    assert steps[0]["x_fp"] is not None
    # The second apply found no gradient call since the first took it: no loss, no data.
    assert steps[1]["loss"] is None or np.isnan(steps[1]["loss"])
    assert steps[1]["x_fp"] is None and steps[1]["y_fp"] is None


def test_gan_two_gradient_functions_two_applies(db_url, read_run):
    """Two gradient functions of disjoint variables, applied by two optimizers eagerly: each step
    records its own loss."""
    x, _ = _data()
    keras.utils.set_random_seed(3)
    gen = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D, name="g")])
    disc = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, name="d")])
    g_opt, d_opt = keras.optimizers.SGD(0.01), keras.optimizers.SGD(0.01)

    @tf.function
    def d_grads(x: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(disc(gen(x))) - tf.reduce_mean(disc(x))
        return tape.gradient(loss, disc.trainable_variables), loss

    @tf.function
    def g_grads(x: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(disc(gen(x))) * 2.0
        return tape.gradient(loss, gen.trainable_variables), loss

    losses = []
    with gradtrace.trace(run="gan", store=db_url):
        for _ in range(2):
            dg, dl = d_grads(x)
            gg, gl = g_grads(x)
            d_opt.apply_gradients(zip(dg, disc.trainable_variables, strict=True))
            g_opt.apply_gradients(zip(gg, gen.trainable_variables, strict=True))
            losses += [float(dl), float(gl)]
    detail, steps = read_run("gan")
    assert [s["loss"] for s in steps] == pytest.approx(losses, rel=1e-6)
    assert not detail.meta.get("warnings")


@pytest.mark.parametrize("legacy", [False, True], ids=["optimizer", "legacy_optimizer"])
def test_tf_keras_split_step(db_url, read_run, legacy):
    tfk = pytest.importorskip("tf_keras")
    x, y = _data()
    tfk.utils.set_random_seed(1)
    model = tfk.Sequential([tfk.Input((D,)), tfk.layers.Dense(4), tfk.layers.Dense(1)])
    opt = (tfk.optimizers.legacy.SGD if legacy else tfk.optimizers.SGD)(0.05)
    loss_fn = tfk.losses.MeanSquaredError()

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables), loss

    want = []
    with gradtrace.trace(run="tfk", store=db_url):
        for _ in range(2):
            grads, loss = compute_grads(x, y)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            want.append(float(loss))
    _, steps = read_run("tfk")
    assert [s["loss"] for s in steps] == pytest.approx(want, rel=1e-6)
    assert [s["batch_size"] for s in steps] == [N, N]
    np.testing.assert_allclose(steps[0]["x_fp"][:2], _fp(x), rtol=1e-5)
    assert steps[0]["loss_info"]["cls"] == "MeanSquaredError"


def test_gradient_function_called_inside_the_applying_function(db_url, read_run):
    """``compute_grads`` a tf.function of its own, called from the tf.function that applies."""
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables), loss

    @tf.function
    def step(x: Any, y: Any) -> Any:
        grads, loss = compute_grads(x, y)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    with gradtrace.trace(run="nested", store=db_url):
        want = [float(step(x, y)) for _ in range(2)]
    _, steps = read_run("nested")
    assert [s["loss"] for s in steps] == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(steps[1]["y_fp"][:2], _fp(y), rtol=1e-5)


def test_gradient_penalty_is_not_taken_for_the_loss(db_url, read_run):
    """A gradient of the inputs (a penalty) computed in the gradient function is no candidate."""
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                inner.watch(x)
                pred = model(x, training=True)
            gp = tf.reduce_mean(tf.square(inner.gradient(pred, x)))
            loss = tf.reduce_mean(tf.square(y - pred)) + 0.1 * gp
        return tape.gradient(loss, model.trainable_variables), loss

    with gradtrace.trace(run="gp", store=db_url):
        grads, loss = compute_grads(tf.constant(x), y)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    detail, steps = read_run("gp")
    assert steps[0]["loss"] == pytest.approx(float(loss), rel=1e-6)
    assert not detail.meta.get("warnings")


def test_two_gradient_functions_of_overlapping_variables_record_no_loss_and_say_so(db_url, read_run):
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def all_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def head_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = 3.0 * loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.layers[-1].trainable_variables)

    with gradtrace.trace(run="amb", store=db_url):
        grads = all_grads(x, y)
        head_grads(x, y)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    detail, steps = read_run("amb")
    assert steps[0]["loss"] is None or np.isnan(steps[0]["loss"])
    assert any("several gradient calls" in w for w in detail.meta["warnings"])


def test_a_function_that_applies_its_own_gradients_gets_no_stash_ops(db_url):
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    with gradtrace.trace(run="same", store=db_url) as run:
        step(x, y)
        same_ops = len(step.get_concrete_function(x, y).graph.get_operations())
        assert getattr(run, "_gradtrace_split_stashes", None) is None  # no side variables either
        split_ops = len(compute_grads.get_concrete_function(x, y).graph.get_operations())
        assert getattr(run, "_gradtrace_split_stashes", None) is not None
    plain_split_ops = len(compute_grads.get_concrete_function(x, y).graph.get_operations())
    assert split_ops > plain_split_ops  # the stash writes, in the function whose gradients leave it

    @tf.function
    def step2(x: Any, y: Any) -> None:
        step.python_function(x, y)

    # The same step traced in another run with the stash hook removed: as many ops.
    from gradtrace import _hooks

    with gradtrace.trace(run="same2", store=db_url):
        original = _hooks._stash_unapplied
        _hooks._stash_unapplied = lambda run: None
        try:
            ops2 = len(step2.get_concrete_function(x, y).graph.get_operations())
        finally:
            _hooks._stash_unapplied = original
    assert same_ops == ops2


@pytest.mark.parametrize("apply_in_function", [False, True], ids=["eager_apply", "function_apply"])
def test_last_partial_batch_retraces_the_gradient_function(db_url, read_run, apply_in_function):
    """The gradient function traced again for a last partial batch: an eager apply records that
    batch's loss and size; a tf.function apply traced before records none and says so."""
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def compute_grads(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables), loss

    def apply(grads: Any) -> None:
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    apply_fn = tf.function(apply) if apply_in_function else apply
    want = []
    with gradtrace.trace(run="partial", store=db_url):
        for n in (N, N, 12):
            grads, loss = compute_grads(x[:n], y[:n])
            apply_fn(grads)
            want.append(float(loss))
    detail, steps = read_run("partial")
    assert [s["loss"] for s in steps[:2]] == pytest.approx(want[:2], rel=1e-6)
    assert [s["batch_size"] for s in steps[:2]] == [N, N]
    if apply_in_function:
        assert steps[2]["loss"] is None or np.isnan(steps[2]["loss"])
        assert steps[2]["batch_size"] is None and steps[2]["x_fp"] is None
        assert any("traced again" in w for w in detail.meta["warnings"])
    else:
        assert steps[2]["loss"] == pytest.approx(want[2], rel=1e-6)
        assert steps[2]["batch_size"] == 12
        np.testing.assert_allclose(steps[2]["x_fp"][:2], _fp(x[:12]), rtol=1e-5)
        assert steps[2]["loss_info"]["y_true_shape"] == [12, 1]
        assert not detail.meta.get("warnings")
