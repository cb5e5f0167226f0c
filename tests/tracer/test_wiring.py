"""Training-loop wiring: gradients handed to the optimizer with the wrong variables.

``grads = tape.gradient(loss, vars_a)`` then ``apply_gradients(zip(grads, vars_b))`` with
vars_b the same variables in another order: TensorFlow raises when the shapes differ and
trains silently wrong when they agree. The tracer matches each applied gradient back to
the source the tape computed it for.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


def square_net(seed: int = 0, bias: bool = True, out: int = 1):
    """Two hidden layers of the same shape: their variables can be swapped without an error."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, activation="tanh", use_bias=bias),
        keras.layers.Dense(8, activation="tanh", use_bias=bias),
        keras.layers.Dense(out, use_bias=bias),
    ])


def layer_by_layer_swapped(model):
    """The variables listed layer by layer, the two hidden layers the wrong way round."""
    a, b, head = model.layers
    return [*b.trainable_variables, *a.trainable_variables, *head.trainable_variables]


def train(model, var_list, steps: int = 3, function: bool = False, clip: bool = False, opt=None):
    x, y = data()
    opt = opt or keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if clip:
            grads, _ = tf.clip_by_global_norm(grads, 0.5)
        opt.apply_gradients(zip(grads, var_list(model), strict=True))

    fn = tf.function(step) if function else step
    for _ in range(steps):
        fn()
    return [v.numpy() for v in model.trainable_variables]


def pairs(run) -> set[tuple[str, str]]:
    """(applied to, computed for) by variable name."""
    names = {v.index: v.name for v in run.info.variables}
    return {(names[m.applied_to], names[m.computed_for]) for m in run.info.misapplied_gradients}


def swapped_names(model) -> set[tuple[str, str]]:
    a, b, _ = model.layers
    out = set()
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        out |= {(va.path, vb.path), (vb.path, va.path)}
    return out


def name_of(run, v) -> str:
    return run.info.variables[run.var_index(v)].name


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_reordered_variable_list_is_recorded_with_both_names(function, db_url, read_run):
    model = square_net()
    with gradtrace.trace(run="swap", store=db_url) as run:
        traced = train(model, layer_by_layer_swapped, function=function)
    untraced = train(square_net(), layer_by_layer_swapped, function=function)
    for a, b in zip(traced, untraced, strict=True):  # the tracer only watches
        assert np.array_equal(a, b)
    a, b, _ = model.layers
    want = set()
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        want |= {(name_of(run, va), name_of(run, vb)), (name_of(run, vb), name_of(run, va))}
    assert pairs(run) == want
    first = run.info.misapplied_gradients[0]
    assert first.step == 0 and first.via == "identical"
    assert first.mode == ("tf.function" if function else "eager")
    warning = [w for w in run.info.warnings if "apply_gradients" in w]
    assert len(warning) == 1, run.info.warnings
    assert name_of(run, a.kernel) in warning[0] and name_of(run, b.kernel) in warning[0]
    detail, _ = read_run("swap")  # stored with the run: `gradtrace check` reads it from there
    assert {(m["applied_to"], m["computed_for"]) for m in detail.meta["misapplied_gradients"]} == {
        (m.applied_to, m.computed_for) for m in run.info.misapplied_gradients}


def test_reversed_list_of_equal_shapes(db_url):
    model = square_net(bias=False, out=8)  # three 8x8 kernels: k3, k2, k1 fit k1, k2, k3
    with gradtrace.trace(run="reversed", store=db_url) as run:
        train(model, lambda m: list(reversed(m.trainable_variables)))
    k1, _k2, k3 = model.trainable_variables
    assert pairs(run) == {(name_of(run, k1), name_of(run, k3)), (name_of(run, k3), name_of(run, k1))}


def test_clipped_gradients_are_traced_back_in_a_tf_function(db_url):
    # tf.clip_by_global_norm returns new tensors (each gradient times one scalar): in a
    # graph the tracer follows such ops back to the tape's output.
    model = square_net()
    with gradtrace.trace(run="clip-swap", store=db_url) as run:
        train(model, layer_by_layer_swapped, function=True, clip=True)
    a, b, _ = model.layers
    assert (name_of(run, a.kernel), name_of(run, b.kernel)) in pairs(run)
    assert {m.via for m in run.info.misapplied_gradients} == {"derived"}


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("clip", [False, True], ids=["plain", "clipped"])
def test_correct_loops_record_nothing(function, clip, db_url):
    model = square_net()
    with gradtrace.trace(run="ok", store=db_url) as run:
        train(model, lambda m: m.trainable_variables, function=function, clip=clip)
    assert run.info.misapplied_gradients == []
    assert not [w for w in run.info.warnings if "apply_gradients" in w]


def test_fit_records_nothing(db_url, read_run):
    x, y = data()
    model = square_net()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="fit", store=db_url) as run:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert run.info.misapplied_gradients == []
    _, steps = read_run("fit")
    assert len(steps) == 4


def test_one_gradient_object_for_two_sources_is_not_a_swap(db_url):
    # loss = sum(b1 + b2): TensorFlow hands the same upstream gradient to both addends, so
    # one tensor is the tape's answer for two sources; applying it to either is right.
    keras.utils.set_random_seed(0)
    b1 = tf.Variable(tf.ones([4]))
    b2 = tf.Variable(tf.zeros([4]))
    opt = keras.optimizers.SGD(0.1)
    with gradtrace.trace(run="shared", store=db_url) as run:
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(b1 + b2 - 3.0))
            g = tape.gradient(loss, [b1, b2])
            opt.apply_gradients(zip(g, [b1, b2], strict=True))
    assert run.info.misapplied_gradients == []


def test_gradient_of_a_copy_applied_to_the_original_is_not_a_swap(db_url):
    # Meta-learning / lookahead style: differentiate a working copy, update the original.
    x, y = data()
    model, copy = square_net(), square_net()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.MeanSquaredError()
    with gradtrace.trace(run="copy", store=db_url) as run:
        for _ in range(2):
            copy.set_weights(model.get_weights())
            with tf.GradientTape() as tape:
                loss = loss_fn(y, copy(x, training=True))
            grads = tape.gradient(loss, copy.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    assert run.info.misapplied_gradients == []


def test_keras3_loss_scale_optimizer_loop_records_nothing(db_url):
    x, y = data()
    model = square_net()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05))
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = opt.scale_loss(loss_fn(y, model(x, training=True)))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    with gradtrace.trace(run="lso", store=db_url) as run:
        for _ in range(2):
            step()
    assert run.info.misapplied_gradients == []


def test_run_info_without_the_field_still_reads():
    from gradtrace.schema import RunInfo

    old = RunInfo.model_validate({"run_id": "r1", "name": "old"})
    assert old.misapplied_gradients == []


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_zeros_put_in_place_of_none_gradients_are_recorded(function, db_url):
    """tf.stop_gradient cuts the first layer off; the script hands zeros for its None
    gradients. Zeroing real gradients by hand (a layer "frozen" that way) is not this."""
    x, y = data()
    loss_fn = keras.losses.MeanSquaredError()

    def run_with(cut: bool, name: str):
        model = square_net()
        first = model.layers[0]
        opt = keras.optimizers.SGD(0.05)

        def step():
            with tf.GradientTape() as tape:
                h = first(x)
                if cut:
                    h = tf.stop_gradient(h)
                out = model.layers[2](model.layers[1](h))
                loss = loss_fn(y, out)
            grads = tape.gradient(loss, model.trainable_variables)
            if cut:
                grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables,
                                                                               strict=True)]
            else:
                grads = [tf.zeros_like(g) if i < 2 else g for i, g in enumerate(grads)]
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        fn = tf.function(step) if function else step
        with gradtrace.trace(run=name, store=db_url) as run:
            for _ in range(2):
                fn()
        return run, model

    run, model = run_with(True, "cut")
    assert sorted(run.info.replaced_none_gradients) == sorted(run.var_index(v) for v in model.layers[0].trainable_variables)
    assert run.info.misapplied_gradients == []
    run, _ = run_with(False, "zeroed")
    assert run.info.replaced_none_gradients == []


# --- gradients computed in the step and never used --------------------------------------------------


def _two_loss_step(use: str, model, opt):
    """A step differentiating a second loss (an output penalty) apart from the first, whose
    gradients are: dropped, added to the applied ones, accumulated into variables, returned,
    or logged (a tf.print of their norm)."""
    x, y = data()
    loss_fn = keras.losses.MeanSquaredError()
    acc = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]

    def step():
        with tf.GradientTape(persistent=True) as tape:
            out = model(x, training=True)
            l1 = loss_fn(y, out)
            l2 = 0.01 * tf.reduce_mean(tf.square(out))
        g1 = tape.gradient(l1, model.trainable_variables)
        g2 = tape.gradient(l2, model.trainable_variables)
        if use == "added":
            g1 = [a + b for a, b in zip(g1, g2, strict=True)]
        elif use == "accumulated":
            for a, g in zip(acc, g2, strict=True):
                a.assign_add(g)
        elif use == "logged":
            tf.print(tf.linalg.global_norm(g2), output_stream="file:///dev/null")
        opt.apply_gradients(zip(g1, model.trainable_variables, strict=True))
        if use == "returned":
            return g2
        return None

    return step


@pytest.mark.parametrize("use", ["dropped", "added", "accumulated", "returned", "logged"])
def test_gradient_computed_and_never_used_is_recorded(db_url, read_run, use):
    model = square_net()
    opt = keras.optimizers.SGD(0.05)
    with gradtrace.trace(run=f"second-loss-{use}", store=db_url) as run:
        fn = tf.function(_two_loss_step(use, model, opt))
        for _ in range(3):
            fn()
    found = run.info.discarded_gradients
    if use != "dropped":
        assert found == [], found
        return
    assert len(found) == 1, found
    assert found[0].variables == sorted(run.var_index(v) for v in model.trainable_variables)
    assert found[0].target_shape == [] and found[0].step == 0
    assert any("nothing uses" in w for w in run.info.warnings)
    detail, _ = read_run("second-loss-dropped")  # stored with the run: `gradtrace check` reads it there
    assert detail.meta["discarded_gradients"] == [d.model_dump() for d in found]


def test_dropped_gradients_of_an_eager_step_are_not_claimed(db_url):
    """Eagerly there is no graph to follow: nothing is recorded (and nothing is guessed)."""
    model = square_net()
    opt = keras.optimizers.SGD(0.05)
    with gradtrace.trace(run="second-loss-eager", store=db_url) as run:
        step = _two_loss_step("dropped", model, opt)
        for _ in range(2):
            step()
    assert run.info.discarded_gradients == []
    assert run.steps_so_far() == 2  # both steps recorded


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_untrainable_variable_asked_for_is_named(tmp_path, function):
    """A raw variable created with ``trainable=False`` and listed for training: the tape does not
    watch it, its gradient is None, and the script drops it; the run names it. A model's own
    non-trainable state handed over with ``model.variables`` (BatchNormalization's statistics) is
    not named."""
    from gradtrace.store import open_store

    x, y = data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    scale = tf.Variable(1.0, trainable=False, name="scale")
    params = [*model.variables, scale]
    opt = keras.optimizers.SGD(0.05)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(scale * model(x, training=True) - y))
        grads = tape.gradient(loss, params)
        opt.apply_gradients([(g, v) for g, v in zip(grads, params, strict=True) if g is not None])

    fn = tf.function(step) if function else step
    url = f"sqlite:///{tmp_path / 'u.db'}"
    with gradtrace.trace(run="untrainable", store=url):
        for _ in range(2):
            fn()
    store = open_store(url)
    try:
        uid = store.runs().items[0].id
        extra = store.run_detail(uid).meta["extra"]
    finally:
        store.close()
    assert extra.get("untrainable_sources") == ["scale:0"], extra.get("untrainable_sources")
