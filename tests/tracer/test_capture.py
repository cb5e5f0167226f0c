"""Every training path records the values the test computes itself (read back from SQLite)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import assert_grad_stats, data, grads_of, state_rows, var_rows  # noqa: E402

SKETCH = 16


def mlp(kind: str = "sequential", seed: int = 0):
    keras.utils.set_random_seed(seed)
    if kind == "sequential":
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)]
        )
    if kind == "functional":
        inp = keras.Input((8,))
        h = keras.layers.Dense(6, activation="tanh")(inp)
        return keras.Model(inp, keras.layers.Dense(1)(h))

    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.a = keras.layers.Dense(6, activation="tanh")
            self.b = keras.layers.Dense(1)

        def call(self, x, training=None):
            return self.b(self.a(x))

    m = Sub()
    m(np.zeros((1, 8), "float32"))
    return m


def check_step0(run, detail, steps, model, g0, w0, lr, mode):
    assert detail.summary.status == "finished"
    assert not detail.summary.partial
    s0 = steps[0]
    assert s0["step"] == 0 and s0["mode"] == mode
    rows = var_rows(s0)
    for var, g, _w in zip(model.trainable_variables, g0, w0, strict=False):
        idx = run.var_index(var)
        assert detail.variables[idx]["shape"] == list(var.shape)
        rec = rows[idx]
        assert_grad_stats(rec, g, SKETCH)
        assert rec["applied"] is True
        # plain SGD: the update is lr * g
        np.testing.assert_allclose(rec["update_norm"], lr * np.linalg.norm(g), rtol=1e-4)
    np.testing.assert_allclose(s0["lr"], lr, rtol=1e-6)
    assert [s["step"] for s in steps] == list(range(len(steps)))
    assert [s["iterations"] for s in steps] == list(range(1, len(steps) + 1))


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_eager_tape_loop_records_what_the_test_computes(kind, db_url, read_run):
    x, y = data()
    model = mlp(kind)
    g0 = grads_of(model, x, y)
    w0 = [v.numpy() for v in model.trainable_variables]
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()
    losses = []
    with gradtrace.trace(run="eager", store=db_url, sketch_dim=SKETCH) as run:
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
            losses.append(float(loss))
    detail, steps = read_run("eager")
    assert len(steps) == 3
    check_step0(run, detail, steps, model, g0, w0, 0.05, "eager")
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    assert steps[0]["target_shape"] == []
    last = var_rows(steps[-1])
    for var in model.trainable_variables:
        np.testing.assert_allclose(last[run.var_index(var)]["weight_norm"], np.linalg.norm(var.numpy()), rtol=1e-5)


def test_tf_function_tape_loop(db_url, read_run):
    x, y = data()
    model = mlp()
    g0 = grads_of(model, x, y)
    w0 = [v.numpy() for v in model.trainable_variables]
    opt = keras.optimizers.SGD(0.05)

    with gradtrace.trace(run="tff", store=db_url, sketch_dim=SKETCH) as run:

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
            return loss

        losses = [float(step(x, y)) for _ in range(4)]
    detail, steps = read_run("tff")
    assert len(steps) == 4
    check_step0(run, detail, steps, model, g0, w0, 0.05, "tf.function")
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_fit(jit, db_url, read_run):
    x, y = data(n=32)
    model = mlp("functional")
    g0 = grads_of(model, x[:16], y[:16])
    w0 = [v.numpy() for v in model.trainable_variables]
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit)
    # a fit() before entering: its cached train_function must be rebuilt inside the trace
    model.fit(x[:1], y[:1], batch_size=1, epochs=1, verbose=0)
    for v, w in zip(model.trainable_variables, w0, strict=False):
        v.assign(w)
    model.optimizer.iterations.assign(0)
    before = model.train_function
    with gradtrace.trace(run=f"fit-{jit}", store=db_url, sketch_dim=SKETCH) as run:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert model.train_function is before  # restored
    detail, steps = read_run(f"fit-{jit}")
    assert len(steps) == 4
    check_step0(run, detail, steps, model, g0, w0, 0.05, "xla" if jit else "tf.function")
    assert detail.summary.execution_mode == ("xla" if jit else "tf.function")


def test_fit_with_overridden_train_step(db_url, read_run):
    x, y = data(n=16)

    class Custom(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.d = keras.layers.Dense(1)

        def call(self, x, training=None):
            return self.d(x)

        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.abs(yb - self(xb, training=True)))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=False))
            return {"loss": loss}

    keras.utils.set_random_seed(1)
    model = Custom()
    model(x[:1])
    with tf.GradientTape() as tape:
        ref_loss = tf.reduce_mean(tf.abs(y - model(x, training=True)))
    g0 = [g.numpy() for g in tape.gradient(ref_loss, model.trainable_variables)]
    model.compile(keras.optimizers.SGD(0.01))
    with gradtrace.trace(run="custom", store=db_url, sketch_dim=SKETCH) as run:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    detail, steps = read_run("custom")
    assert len(steps) == 3
    np.testing.assert_allclose(steps[0]["loss"], float(ref_loss), rtol=1e-6)
    rows = var_rows(steps[0])
    for var, g in zip(model.trainable_variables, g0, strict=False):
        assert_grad_stats(rows[run.var_index(var)], g, SKETCH)


def test_variable_left_out_of_apply_gradients(db_url, read_run):
    x, y = data()
    model = mlp()
    model(x[:1])
    opt = keras.optimizers.SGD(0.1)
    first = model.layers[0]
    frozen = [first.kernel, first.bias]
    kept = [v for v in model.trainable_variables if all(v is not f for f in frozen)]
    with gradtrace.trace(run="subset", store=db_url) as run:
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - model(x)))
            grads = tape.gradient(loss, kept)
            opt.apply_gradients(zip(grads, kept, strict=False))
    detail, steps = read_run("subset")
    rows = var_rows(steps[1])
    for v in frozen:
        rec = rows[run.var_index(v)]
        assert rec["grad"] is False and rec["norm"] is None
        assert rec["applied"] is False and rec["update_norm"] == 0.0
        np.testing.assert_allclose(rec["weight_norm"], np.linalg.norm(v.numpy()), rtol=1e-5)
    for v in kept:
        assert rows[run.var_index(v)]["applied"] is True


def test_every_optimizer_is_described_with_the_variables_it_steps(db_url, read_run):
    """A GAN-like loop: two models, two optimizers, alternating steps in one tf.function."""
    x, y = data()
    gen, disc = mlp(), mlp()
    gen(x[:1])
    disc(x[:1])
    opt_g, opt_d = keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.SGD(0.01, momentum=0.9)

    with gradtrace.trace(run="two-opts", store=db_url) as run:
        @tf.function
        def step():
            for model, opt in ((disc, opt_d), (gen, opt_g)):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.square(y - model(x)))
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))

        for _ in range(2):
            step()
    detail, steps = read_run("two-opts")
    assert len(steps) == 4
    listed = detail.meta["optimizers"]
    assert [o["class"] for o in listed] == ["SGD", "Adam"]  # in order of first step
    assert listed[0]["variables"] == sorted(run.var_index(v) for v in disc.trainable_variables)
    assert listed[1]["variables"] == sorted(run.var_index(v) for v in gen.trainable_variables)
    assert listed[0]["momentum"] == pytest.approx(0.9) and listed[1]["beta_1"] == pytest.approx(0.5)
    assert detail.meta["optimizer"]["class"] == "SGD"  # the first one, as before
    np.testing.assert_allclose([s["lr"] for s in steps], [0.01, 2e-4, 0.01, 2e-4], rtol=1e-6)


def test_one_optimizer_stepping_halves_in_turn_lists_them_all(db_url, read_run):
    """One optimizer, the first layer's variables at even steps, the second's at odd ones
    (eager): its description lists every variable it stepped, not the first step's."""
    x, y = data()
    model = mlp(seed=6)
    opt = keras.optimizers.SGD(0.01)
    halves = [model.trainable_variables[:2], model.trainable_variables[2:]]
    opt.build(model.trainable_variables)  # Keras 3 steps subsets of the variables it was built with
    with gradtrace.trace(run="halves", store=db_url) as run:
        for i in range(4):
            part = halves[i % 2]
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - model(x, training=True)))
            opt.apply_gradients(zip(tape.gradient(loss, part), part, strict=True))
    detail, steps = read_run("halves")
    assert len(steps) == 4
    assert detail.meta["optimizers"][0]["variables"] == sorted(run.var_index(v) for v in model.trainable_variables)


def test_vector_loss_target_records_its_shape_and_sum(db_url, read_run):
    x, y = data(n=10)
    model = mlp()
    opt = keras.optimizers.SGD(0.01)
    with gradtrace.trace(run="vector", store=db_url):
        with tf.GradientTape() as tape:
            per_sample = tf.reduce_mean(tf.square(y - model(x)), axis=-1)  # (10,) : summed by TF
        grads = tape.gradient(per_sample, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
    _, steps = read_run("vector")
    assert steps[0]["target_shape"] == [10]
    np.testing.assert_allclose(steps[0]["loss"], float(tf.reduce_sum(per_sample)), rtol=1e-6)


def test_gradient_accumulation_reads_as_not_applied(db_url, read_run):
    x, y = data(n=32)
    model = mlp()
    model.compile(keras.optimizers.SGD(0.05, gradient_accumulation_steps=2), "mse")
    with gradtrace.trace(run="accum", store=db_url):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    _, steps = read_run("accum")
    assert len(steps) == 4  # apply() ran every batch ...
    applied = [all(v["applied"] for v in s["vars"]) for s in steps]
    assert applied == [False, True, False, True]  # ... the weights moved every second one
    assert [s["iterations"] for s in steps] == [0, 1, 1, 2]
    for s, a in zip(steps, applied, strict=False):
        assert all(v["grad"] for v in s["vars"])
        if not a:
            assert all(v["update_norm"] == 0.0 for v in s["vars"])


def test_loss_scale_optimizer_skipped_step_is_not_applied(db_url, read_run):
    x, y = data(n=8)
    model = mlp()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    with gradtrace.trace(run="lso", store=db_url):
        for bad in (False, True, False):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - model(x)))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            if bad:
                grads = [g * np.inf for g in grads]
            opt.apply(grads, model.trainable_variables)
    _, steps = read_run("lso")
    applied = [all(v["applied"] for v in s["vars"]) for s in steps]
    assert applied == [True, False, True]
    assert steps[1]["vars"][0]["nonfinite"] > 0


def test_sparse_embedding_gradient_with_repeated_indices(db_url, read_run):
    keras.utils.set_random_seed(3)
    emb = keras.layers.Embedding(10, 4)
    ids = np.array([[1, 1, 1, 2], [2, 5, 1, 1]], dtype="int32")
    target = np.ones((2, 4, 4), "float32")
    emb(ids)
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(emb(ids) * target)
    ref = tape.gradient(loss, emb.embeddings)
    assert isinstance(ref, tf.IndexedSlices)
    dense = tf.convert_to_tensor(ref).numpy()
    with gradtrace.trace(run="sparse", store=db_url, sketch_dim=SKETCH) as run:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(emb(ids) * target)
        g = tape.gradient(loss, [emb.embeddings])
        opt.apply_gradients(zip(g, [emb.embeddings], strict=False))
    _, steps = read_run("sparse")
    rec = var_rows(steps[0])[run.var_index(emb.embeddings)]
    assert_grad_stats(rec, dense, SKETCH)
    # the naive norm of .values is wrong when indices repeat
    assert abs(rec["norm"] - np.linalg.norm(ref.values.numpy())) > 1.0


def test_non_trainable_state_and_rng(db_url, read_run):
    x, y = data(n=16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
         keras.layers.Dropout(0.5), keras.layers.Dense(1)]
    )
    bn = model.layers[1]
    opt = keras.optimizers.SGD(0.01)
    with gradtrace.trace(run="state", store=db_url) as run:
        for training in (True, False):
            mean0 = bn.moving_mean.numpy().copy()
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - model(x, training=training)))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
            if training:
                delta = np.linalg.norm(bn.moving_mean.numpy() - mean0)
                assert delta > 0
    _, steps = read_run("state")
    if not steps[0]["state"]:
        pytest.skip("no root model registered (probes not installed)")
    s0, s1 = state_rows(steps[0]), state_rows(steps[1])
    mm = run.var_index(bn.moving_mean)
    assert s0[mm]["changed"] is True and not s0[mm]["rng"]
    np.testing.assert_allclose(s0[mm]["delta_norm"], delta, rtol=1e-5)
    assert s1[mm]["changed"] is False and s1[mm]["delta_norm"] == 0.0
    rng = [s for s in steps[0]["state"] if s["rng"]]
    assert rng and rng[0]["changed"] is True  # Dropout's seed generator state moved


def test_stats_every_n_steps(db_url, read_run):
    x, y = data()
    model = mlp()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()
    with gradtrace.trace(run="every", store=db_url, stats_every=3, sketch_dim=SKETCH) as run:

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
            return loss

        losses = []
        for i in range(5):
            if i == 3:
                g3 = grads_of(model, x, y)
            losses.append(float(step(x, y)))
    _, steps = read_run("every")
    assert len(steps) == 5
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)  # every step
    full = [bool(s["vars"]) and s["vars"][0]["norm"] is not None for s in steps]
    assert full == [True, False, False, True, False]
    # light steps: no per-variable entries (every variable had a gradient), counted in n_grad
    nvars = len(model.trainable_variables)
    assert [s["n_grad"] for s in steps] == [nvars] * 5
    assert [len(s["vars"]) for s in steps] == [nvars, 0, 0, nvars, 0]
    rows = var_rows(steps[3])
    for v, g in zip(model.trainable_variables, g3, strict=False):
        assert_grad_stats(rows[run.var_index(v)], g, SKETCH)
    with pytest.raises(ValueError, match="stats_every"):
        gradtrace.trace(run="bad", store=db_url, stats_every=0).__enter__()


def test_init_fingerprint_equal_for_same_seed_and_different_otherwise(db_url, read_run):
    from gradtrace import _meta

    x, y = data(n=16)
    fit_model = mlp(seed=0)
    expected = _meta.weights_fingerprint(fit_model.variables)
    fit_model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="fp-fit", store=db_url):
        fit_model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    def tape_run(name, model, compiled):
        opt = keras.optimizers.SGD(0.05)

        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - model(x, training=True)))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

        fn = tf.function(step) if compiled else step
        with gradtrace.trace(run=name, store=db_url):
            for _ in range(2):
                fn()

    tape_run("fp-tape", mlp(seed=0), compiled=True)
    # built by its first (traced) forward pass: fingerprinted then, before the first update
    twin = mlp("subclassed", seed=1)
    other = _meta.weights_fingerprint(twin.variables)
    keras.utils.set_random_seed(1)
    tape_run("fp-other", type(twin)(), compiled=True)
    fps = {name: read_run(name)[0].meta["init_fingerprint"] for name in ("fp-fit", "fp-tape", "fp-other")}
    assert fps["fp-fit"] == fps["fp-tape"] == expected
    assert fps["fp-other"] == other != expected


def test_fit_records_learning_rate_constant_and_schedule(db_url, read_run):
    x, y = data(n=16)
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    for name, opt in (("lr-const", keras.optimizers.SGD(0.05)), ("lr-sched", keras.optimizers.SGD(sched))):
        model = mlp()
        model.compile(opt, "mse")
        with gradtrace.trace(run=name, store=db_url):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    const, _ = read_run("lr-const")
    np.testing.assert_allclose(const.meta["optimizer"]["learning_rate"], 0.05, rtol=1e-6)
    scheduled, steps = read_run("lr-sched")
    opt = scheduled.meta["optimizer"]
    assert opt["learning_rate_schedule"]["class"] == "ExponentialDecay"
    assert opt["learning_rate_schedule"]["config"]["decay_rate"] == 0.5
    np.testing.assert_allclose(opt["learning_rate"], 0.1, rtol=1e-6)  # its value at step 0
    np.testing.assert_allclose([s["lr"] for s in steps], [0.1, 0.05], rtol=1e-6)


def test_tf_keras_fit_records_learning_rate(db_url, read_run):
    """The rate each step used: tf-keras' new optimizer caches it during the update, the
    legacy OptimizerV2 derives it from ``iterations`` (schedule or ``decay=``), which the
    update increments. Checked against the rate the update itself implies (SGD: Δw = -lr·g)."""
    tf_keras = pytest.importorskip("tf_keras")
    x, y = data(n=24)
    sched = tf_keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    inverse = tf_keras.optimizers.schedules.InverseTimeDecay(0.1, decay_steps=1, decay_rate=0.5)
    expected = {
        "tk-const": [0.05] * 3,
        "tk-sched": [0.1, 0.05, 0.025],
        "tk-new-sched": [0.1, 0.1 / 1.5, 0.05],
        "tk-legacy-decay": [0.1, 0.1 / 1.5, 0.05],
    }
    for name, opt in (("tk-const", tf_keras.optimizers.SGD(0.05)),
                      ("tk-sched", tf_keras.optimizers.legacy.SGD(sched)),
                      ("tk-new-sched", tf_keras.optimizers.SGD(inverse)),
                      ("tk-legacy-decay", tf_keras.optimizers.legacy.SGD(0.1, decay=0.5))):
        model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(8,))])
        model.compile(opt, "mse")
        with gradtrace.trace(run=name, store=db_url, stats_every=1):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        _, steps = read_run(name)
        np.testing.assert_allclose([s["lr"] for s in steps], expected[name], rtol=1e-5, err_msg=name)
        # The update applied: |Δw| / |g| of plain SGD is the rate itself.
        for s in steps:
            v = s["vars"][0]
            np.testing.assert_allclose(v["update_norm"] / v["norm"], s["lr"], rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(read_run("tk-const")[0].meta["optimizer"]["learning_rate"], 0.05, rtol=1e-6)
    opt = read_run("tk-sched")[0].meta["optimizer"]
    assert opt["learning_rate_schedule"]["class"] == "ExponentialDecay"
    np.testing.assert_allclose(opt["learning_rate"], 0.1, rtol=1e-6)


def test_tf_keras_model_built_by_fit_is_traced_whole(db_url, read_run):
    """An unbuilt tf-keras model (no input shape) raises when asked for its variables
    (tf_keras ``Model._assert_weights_created``): registering it at fit() start failed and the
    run was marked partial; its variables now join the inventory once fit() builds it."""
    tf_keras = pytest.importorskip("tf_keras")
    x, y = data(n=24)
    model = tf_keras.Sequential([tf_keras.layers.Dense(5), tf_keras.layers.BatchNormalization(),
                                 tf_keras.layers.Dense(1)])
    model.compile(tf_keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="tk-lazy", store=db_url) as run:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert not run.info.partial, run.info.warnings
    detail, steps = read_run("tk-lazy")
    assert len(steps) == 3
    assert len(detail.variables) == len(model.variables) == 8
    assert all(not v["struct_key"].startswith("?") for v in detail.variables)
    assert len(var_rows(steps[0])) == 6 and len(state_rows(steps[0])) == 2


def test_light_steps_list_the_variables_without_a_gradient(db_url, read_run):
    """Between two full steps a record lists only the variables that got no gradient."""
    x, y = data()
    model = mlp()
    opt = keras.optimizers.SGD(0.05)
    head = model.layers[-1].trainable_variables
    with gradtrace.trace(run="head", store=db_url, stats_every=2) as run:

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xb) - yb))
            grads = tape.gradient(loss, head)  # only the head is differentiated
            grads += [None] * (len(model.trainable_variables) - len(head))
            variables = head + [v for v in model.trainable_variables if all(v is not h for h in head)]
            opt.apply_gradients(zip(grads, variables, strict=True))

        for _ in range(4):
            step(x, y)
    _, steps = read_run("head")
    frozen = {run.var_index(v) for v in model.trainable_variables if all(v is not h for h in head)}
    assert frozen
    for s in steps:
        assert s["n_grad"] == len(head)
        if s["step"] % 2:  # light
            assert {r["v"] for r in s["vars"]} == frozen and not any(r["grad"] for r in s["vars"])
        else:
            assert len(s["vars"]) == len(model.trainable_variables)


def _bn_net(with_input: bool, seed: int = 0):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(6), keras.layers.BatchNormalization(), keras.layers.Dropout(0.2), keras.layers.Dense(1)]
    return keras.Sequential(([keras.Input((8,))] if with_input else []) + layers)


class _Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(6, activation="relu")
        self.d2 = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.d2(self.d1(x))


def test_weights_set_after_building_inside_trace_are_the_initial_weights(db_url, read_run):
    """A model built by a call inside ``trace`` and then given other weights (set_weights, a
    checkpoint) starts training from those: the fingerprint is taken at the first step."""
    x, y = data()
    keras.utils.set_random_seed(1)
    reference = _Net()
    reference(x[:1])
    weights = [w * 0 + np.float32(0.05) * (i + 1) for i, w in enumerate(reference.get_weights())]

    def train(name, build_inside, set_after):
        keras.utils.set_random_seed(2)
        net = _Net()
        if not build_inside:
            net(x[:1])
            net.set_weights(weights)
        opt = keras.optimizers.SGD(0.01)
        with gradtrace.trace(run=name, store=db_url):
            if build_inside:
                net(x[:1])
                if set_after:
                    net.set_weights(weights)
            for _ in range(2):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.square(net(x, training=True) - y))
                grads = tape.gradient(loss, net.trainable_variables)
                opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))

    train("set-before", False, True)
    train("set-inside", True, True)
    train("not-set", True, False)
    fps = {n: read_run(n)[0].meta["init_fingerprint"] for n in ("set-before", "set-inside", "not-set")}
    assert fps["set-inside"] == fps["set-before"], fps
    assert fps["not-set"] != fps["set-before"], fps


def test_model_built_lazily_by_fit_is_inventoried_tracked_and_fingerprinted(db_url, read_run):
    """A Sequential without Input is built by fit()'s first (traced) step: its variables
    still get their layers, BatchNormalization's moving statistics are tracked from step 0,
    and the initial-weight fingerprint is the one of the same model built up front."""
    from gradtrace import _meta

    x, y = data(n=32)
    built = _bn_net(with_input=True)
    expected = _meta.weights_fingerprint(built.variables)
    model = _bn_net(with_input=False)
    assert not model.built
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="lazy-fit", store=db_url):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    detail, steps = read_run("lazy-fit")
    assert len(steps) == 4
    inventory = {v["name"]: v for v in detail.variables}
    assert len(inventory) == len(model.variables)
    for v in model.variables:
        info = inventory[v.path]
        assert info["layer"] is not None and not info["struct_key"].startswith("?"), info
    moving = {info["index"] for name, info in inventory.items() if "moving_" in name}
    assert len(moving) == 2
    step0 = state_rows(steps[0])
    assert moving <= set(step0) and all(step0[i]["changed"] for i in moving)  # training=True in fit()
    assert detail.meta["init_fingerprint"] == expected
    assert not detail.meta["partial"]


@pytest.mark.parametrize("extra", ["aux_gradient", "jacobian"])
def test_the_step_loss_is_the_gradient_call_whose_gradients_are_applied(db_url, read_run, extra):
    """After its loss the step differentiates something else (an auxiliary term, a Jacobian)
    and then applies the first call's gradients: the recorded loss is that first target."""
    x, y = data()
    model = mlp(seed=4)
    opt = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape(persistent=True) as tape:
            out = model(xb, training=True)
            loss = loss_fn(yb, out)
            aux = tf.add_n([tf.reduce_sum(tf.abs(v)) for v in model.trainable_variables])
        grads = tape.gradient(loss, model.trainable_variables)
        if extra == "aux_gradient":
            tape.gradient(aux, model.trainable_variables)
        else:
            tape.jacobian(out, model.trainable_variables[-1])
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    losses = []
    with gradtrace.trace(run=extra, store=db_url):
        for i in range(3):
            losses.append(float(step(tf.constant(x[i * 8:(i + 1) * 8]), tf.constant(y[i * 8:(i + 1) * 8]))))
    detail, steps = read_run(extra)
    assert not detail.summary.partial
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    assert all(s["target_shape"] == [] for s in steps)


def test_step_traced_with_unknown_feature_dimensions_is_recorded(db_url, read_run):
    """input_signature=[None, None]: the gradients have no static shape, the variables do."""
    x, y = data()
    model = mlp(seed=5)
    opt = keras.optimizers.SGD(0.01)
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
        return loss

    with gradtrace.trace(run="unknown-dims", store=db_url, stats_every=1, sketch_dim=SKETCH) as run:
        g0 = None
        for i in range(3):
            xb, yb = x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]
            if i == 0:
                with tf.GradientTape() as t:
                    l0 = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
                g0 = [g.numpy() for g in t.gradient(l0, model.trainable_variables)]
            step(tf.constant(xb), tf.constant(yb))
    detail, steps = read_run("unknown-dims")
    assert not detail.summary.partial and len(steps) == 3
    rows = var_rows(steps[0])
    for v, g in zip(model.trainable_variables, g0, strict=True):
        assert_grad_stats(rows[run.var_index(v)], g, SKETCH)


def test_a_run_whose_updates_no_hook_sees_says_so(db_url, read_run):
    """An update through a raw op (what tf.compat.v1.train optimizers run) is no optimizer step
    and no write the assign hooks see: the run says that nothing was recorded and why, instead of
    finishing silently empty. (Writes by ``assign_sub`` are steps: tests/tracer/test_manual.py.)"""
    x, y = data()
    w = tf.Variable(tf.zeros([x.shape[1], 1]))
    with gradtrace.trace(run="by-hand", store=db_url) as run:
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - x @ w))
            g = tape.gradient(loss, w)
            tf.raw_ops.ResourceApplyGradientDescent(var=w.handle, alpha=tf.constant(0.01), delta=g)
    assert float(tf.reduce_sum(tf.abs(w))) > 0  # it did train
    assert any("no optimizer step was recorded" in w for w in run.info.warnings), run.info.warnings
    assert any("an update through raw ops" in w for w in run.info.warnings), run.info.warnings
    detail, steps = read_run("by-hand")
    assert not steps and any("no optimizer step" in w for w in detail.meta["warnings"])


def test_an_optimizer_created_every_step_gets_no_retracing_warning_for_the_tracer(db_url, read_run, caplog):
    """Each new optimizer gets a statistics writer of its own (a tf.function): TensorFlow's
    frequent-retracing warning must not name the tracer's functions to the user as theirs."""
    import logging

    model = mlp()
    x, y = data()
    with caplog.at_level(logging.WARNING, logger="tensorflow"), gradtrace.trace(run="fresh-opt", store=db_url):
        for _ in range(8):
            opt = keras.optimizers.SGD(0.01)
            with tf.GradientTape() as tape:
                loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    _, steps = read_run("fresh-opt")
    assert len(steps) == 8
    assert not [r for r in caplog.records if "retracing" in r.getMessage()], [r.getMessage() for r in caplog.records]
