"""Keras loss *functions* (``keras.losses.categorical_crossentropy(y, p)``) called in a tape
are recorded in ``loss_info`` like loss objects: which function, from_logits, its arguments,
the label/prediction shapes, the shape it returned and the per-sample statistics."""

from __future__ import annotations

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import gradtrace  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

N, D, C = 16, 5, 3


def _steps(db: str, name: str) -> list[dict]:
    store = open_store(db)
    try:
        uid = next(r.id for r in store.runs().items if r.name == name)
        return sorted(store.steps(uid), key=lambda r: r["step"])
    finally:
        store.close()


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, C, size=(N,)).astype("int32")
    return x, y, np.eye(C, dtype="float32")[y]


def _model(lib=keras, seed: int = 1, activation=None):
    lib.utils.set_random_seed(seed)
    return lib.Sequential([lib.Input((D,)), lib.layers.Dense(4, activation="tanh"),
                           lib.layers.Dense(C, activation=activation)])


def _train(model, loss_of, x, y, opt, compiled: bool, steps: int = 2, reduce: bool = True) -> list[float]:
    """Tape steps whose loss is ``reduce_mean(loss_of(y, model(x)))`` (or the vector)."""
    losses: list[float] = []

    def step(x, y):
        with tf.GradientTape() as tape:
            per_sample = loss_of(y, model(x, training=True))
            loss = tf.reduce_mean(per_sample) if reduce else per_sample
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                strict=True))
        return per_sample

    fn = tf.function(step) if compiled else step
    for _ in range(steps):
        losses.append(float(tf.reduce_mean(fn(x, y))))
    return losses


# (label, the function as the script spells it, one-hot labels, from_logits passed, recorded fn, class)
FUNCTIONS = [
    ("keras.cce_logits", lambda: keras.losses.categorical_crossentropy, True, True,
     "categorical_crossentropy", "CategoricalCrossentropy"),
    ("tf.keras.sparse_cce", lambda: tf.keras.losses.sparse_categorical_crossentropy, False, None,
     "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"),
    ("keras.metrics.cce", lambda: keras.metrics.categorical_crossentropy, True, False,
     "categorical_crossentropy", "CategoricalCrossentropy"),
    ("keras.mse", lambda: keras.losses.mean_squared_error, True, None, "mean_squared_error", "MeanSquaredError"),
    ("tf.keras.mse", lambda: tf.keras.losses.mse, True, None, "mean_squared_error", "MeanSquaredError"),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("case", FUNCTIONS, ids=[c[0] for c in FUNCTIONS])
def test_a_loss_function_called_in_the_tape_is_recorded(tmp_path, case, compiled):
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    _label, get_fn, one_hot, from_logits, fn_name, cls = case
    x, y, y1 = _data()
    labels = y1 if one_hot else y
    kwargs = {} if from_logits is None else {"from_logits": from_logits}
    model = _model(activation=None if from_logits or cls == "MeanSquaredError" else "softmax")
    opt = keras.optimizers.SGD(0.05)
    with gradtrace.trace(run="fn", store=db):
        fn = get_fn()
        losses = _train(model, lambda yt, yp: fn(yt, yp, **kwargs), x, labels, opt, compiled)
    steps = _steps(db, "fn")
    assert len(steps) == 2
    for st, mean in zip(steps, losses, strict=True):
        info = st["loss_info"]
        assert info is not None, st
        assert info["cls"] == cls and info["function"] == fn_name
        # the function's own default when the script passes none (sparse CE: from_logits=False)
        want_logits = from_logits if from_logits is not None else (False if "crossentropy" in fn_name else None)
        assert info["from_logits"] is want_logits
        assert info["y_true_shape"] == list(labels.shape) and info["y_pred_shape"] == [N, C]
        assert info["out_shape"] == [N]  # per sample: the script reduced it itself
        assert info["reduction"] == "none"  # per sample, like reduction="none"
        assert info["per_sample_count"] == N
        assert info["per_sample_mean"] == pytest.approx(mean, rel=1e-5)
        assert st["loss"] == pytest.approx(mean, rel=1e-5)
    if fn_name == "categorical_crossentropy":  # the function's scalar arguments, defaults included
        assert steps[0]["loss_info"]["args"] == {"axis": -1, "label_smoothing": 0.0}


def test_arguments_passed_to_the_function_are_recorded(tmp_path):
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, _, y1 = _data()
    model = _model()
    with gradtrace.trace(run="ls", store=db):
        _train(model, lambda yt, yp: keras.losses.categorical_crossentropy(yt, yp, True, 0.1), x, y1,
               keras.optimizers.SGD(0.05), compiled=False, steps=1)
    (st,) = _steps(db, "ls")
    assert st["loss_info"]["from_logits"] is True  # positional
    assert st["loss_info"]["args"]["label_smoothing"] == 0.1


def test_a_per_sample_vector_handed_to_the_tape_is_seen_as_such(tmp_path):
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, y, _ = _data()
    model = _model()
    with gradtrace.trace(run="vec", store=db):
        _train(model, lambda yt, yp: keras.losses.sparse_categorical_crossentropy(yt, yp, from_logits=True),
               x, y, keras.optimizers.SGD(0.05), compiled=False, steps=1, reduce=False)
    (st,) = _steps(db, "vec")
    assert st["target_shape"] == [N]
    assert st["loss_info"]["out_shape"] == [N] and st["loss_info"]["per_sample_count"] == N
    assert st["loss"] == pytest.approx(st["loss_info"]["per_sample_mean"] * N, rel=1e-5)


def test_a_function_inside_a_loss_object_is_not_a_second_call(tmp_path):
    """compile(loss=my_fn) wraps the user's function in a loss object, which is what ran; the
    Keras function it calls inside is part of it (seed 001's custom loss)."""
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, _, y1 = _data()

    def my_loss(y_true, y_pred):
        return tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True))

    model = _model()
    model.compile(keras.optimizers.SGD(0.05), loss=my_loss)
    with gradtrace.trace(run="wrapped", store=db):
        model.fit(x, y1, batch_size=N, epochs=2, verbose=0)
    steps = _steps(db, "wrapped")
    assert len(steps) == 2
    for st in steps:
        assert st["loss_info"]["cls"] == "MyLoss" and not st["loss_info"].get("calls")
        assert st["loss_info"].get("function") is None


def test_a_function_called_outside_the_tape_is_not_the_steps_loss(tmp_path):
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, y, y1 = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with gradtrace.trace(run="outside", store=db):
        for _ in range(2):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, logits)
            grads = tape.gradient(loss, model.trainable_variables)
            # a metric computed after the tape, before the update
            float(tf.reduce_mean(keras.losses.mean_squared_error(y1, tf.nn.softmax(logits))))
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    for st in _steps(db, "outside"):
        assert st["loss_info"]["cls"] == "SparseCategoricalCrossentropy"
        assert st["loss_info"].get("function") is None and not st["loss_info"].get("calls")


def test_functions_are_restored_after_the_trace(tmp_path):
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    before = (keras.losses.categorical_crossentropy, tf.keras.losses.mse,
              keras.metrics.sparse_categorical_crossentropy)
    with gradtrace.trace(run="undo", store=db):
        assert keras.losses.categorical_crossentropy is not before[0]
        with gradtrace.trace(run="nested", store=db):
            pass
        assert keras.losses.categorical_crossentropy is not before[0]
    assert (keras.losses.categorical_crossentropy, tf.keras.losses.mse,
            keras.metrics.sparse_categorical_crossentropy) == before


@pytest.mark.skipif(os.environ.get("GRADTRACE_SKIP_TF_KERAS") == "1", reason="tf-keras off")
def test_tf_keras_loss_function(tmp_path):
    tfk = pytest.importorskip("tf_keras")
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, _, y1 = _data()
    model = _model(tfk)
    before = tfk.losses.categorical_crossentropy
    with gradtrace.trace(run="tfk", store=db):
        _train(model, lambda yt, yp: tfk.losses.categorical_crossentropy(yt, yp, from_logits=True), x, y1,
               tfk.optimizers.SGD(0.05), compiled=True)
    assert tfk.losses.categorical_crossentropy is before
    steps = _steps(db, "tfk")
    assert len(steps) == 2
    info = steps[0]["loss_info"]
    assert (info["cls"], info["function"], info["from_logits"]) == (
        "CategoricalCrossentropy", "categorical_crossentropy", True)
    assert info["out_shape"] == [N] and info["per_sample_count"] == N


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("total", [False, True], ids=["one-output-loss", "total"])
def test_a_loss_left_out_of_the_differentiated_total_is_marked(tmp_path, total, compiled):
    """Each Keras loss call of the step says whether its value reaches the tensor handed to
    tape.gradient: an output's loss computed but left out trains nothing. Inside a tf.function
    the graph says; eagerly only a target that *is* one loss's output says anything."""
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, y, _ = _data()
    keras.utils.set_random_seed(2)
    inp = keras.Input((D,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    model = keras.Model(inp, [keras.layers.Dense(C)(h), keras.layers.Dense(1)(h)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.05)
    score = x[:, :1]

    def step():
        with tf.GradientTape() as tape:
            logits, pred = model(x, training=True)
            label_loss = ce(y, logits)
            score_loss = tf.reduce_mean(keras.losses.mean_squared_error(score, pred))
            loss = label_loss + score_loss
        target = loss if total else label_loss
        opt.apply_gradients(zip(tape.gradient(target, model.trainable_variables), model.trainable_variables,
                                strict=True))

    with gradtrace.trace(run="reach", store=db):
        for _ in range(2):
            (tf.function(step) if compiled else step)()
    # eagerly a sum of the two is not followed: nothing is claimed
    want = total if compiled else (None if total else False)
    steps = _steps(db, "reach")
    assert len(steps) == 2
    for st in steps:
        calls = st["loss_info"]["calls"]
        assert [(c["cls"], c.get("in_target")) for c in calls] == [
            ("SparseCategoricalCrossentropy", True if (compiled or not total) else None), ("MeanSquaredError", want)]
        assert st["loss_info"].get("in_target") is want  # the record's own fields: the last call


def test_eager_steps_do_not_claim_reachability_of_a_reduced_loss(tmp_path):
    # tape.gradient(reduce_mean(function output)): the target is not the loss call's output
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, _, y1 = _data()
    with gradtrace.trace(run="eager", store=db):
        _train(_model(), lambda yt, yp: keras.losses.categorical_crossentropy(yt, yp, from_logits=True), x, y1,
               keras.optimizers.SGD(0.05), compiled=False, steps=1)
    (st,) = _steps(db, "eager")
    assert st["loss_info"].get("in_target") is None


def test_two_losses_each_differentiated_by_its_own_call_are_both_trained(tmp_path):
    """One persistent tape, two losses, two gradient calls, then two updates (GAN style): the
    first loss is not the last call's target, yet it is differentiated."""
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x, y, _ = _data()
    keras.utils.set_random_seed(2)
    inp = keras.Input((D,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    model = keras.Model(inp, [keras.layers.Dense(C)(h), keras.layers.Dense(1)(h)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()
    opt_a, opt_b = keras.optimizers.SGD(0.05), keras.optimizers.SGD(0.01)
    va, vb = model.trainable_variables[:4], model.trainable_variables[4:]

    @tf.function
    def step():
        with tf.GradientTape(persistent=True) as tape:
            logits, pred = model(x, training=True)
            loss_a = ce(y, logits)
            loss_b = mse(x[:, :1], pred)
        ga = tape.gradient(loss_a, va)
        gb = tape.gradient(loss_b, vb)
        opt_a.apply_gradients(zip(ga, va, strict=True))
        opt_b.apply_gradients(zip(gb, vb, strict=True))

    with gradtrace.trace(run="two", store=db):
        step()
    steps = _steps(db, "two")
    assert len(steps) == 2
    calls = steps[0]["loss_info"]["calls"]
    assert [(c["cls"], c["in_target"]) for c in calls] == [
        ("SparseCategoricalCrossentropy", True), ("MeanSquaredError", True)]


@pytest.mark.parametrize("how", ["eager", "function", "xla"])
def test_gradients_of_two_losses_added_record_the_sum_as_the_loss(tmp_path, how):
    """A data loss and the regularization losses differentiated by calls of their own (a
    persistent tape) and their gradients added before one apply train the sum: the step's loss
    is data + penalty, as for one gradient of the sum. A second call whose gradients are not
    added (a norm for logging) leaves the loss alone."""
    db = f"sqlite:///{tmp_path / 'sum.db'}"
    x, y, _ = _data()
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(4, activation="tanh",
                                                                    kernel_regularizer=keras.regularizers.L2(0.1)),
                              keras.layers.Dense(C, kernel_regularizer=keras.regularizers.L2(0.1))])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.05)
    seen = []

    def step(add):
        with tf.GradientTape(persistent=True) as tape:
            data = ce(y, model(x, training=True))
            reg = tf.add_n(model.losses)
        v = model.trainable_variables
        g1, g2 = tape.gradient(data, v), tape.gradient(reg, v)
        grads = [a if b is None else a + b for a, b in zip(g1, g2, strict=True)] if add else g1
        opt.apply_gradients(zip(grads, v, strict=True))
        return data, reg

    fns = {add: step if how == "eager" else tf.function(lambda add=add: step(add), jit_compile=how == "xla")
           for add in (True, False)}
    with gradtrace.trace(run="sum", store=db):
        for add in (True, True, False):
            d, r = fns[add]() if how != "eager" else step(add)
            seen.append((float(d), float(r)))
    steps = _steps(db, "sum")
    assert len(steps) == 3
    for st, (d, r), add in zip(steps, seen, (True, True, False), strict=True):
        np.testing.assert_allclose(st["loss"], d + r if add else d, rtol=1e-6)
        np.testing.assert_allclose(st["reg_loss"], r, rtol=1e-6)


def test_gradients_of_other_tapes_added_keep_the_steps_own_loss(tmp_path):
    """Micro-batches accumulated by hand (a tape each, their gradients summed before one apply)
    are other batches: the step's loss stays the last call's, not their sum."""
    db = f"sqlite:///{tmp_path / 'acc.db'}"
    x, y, _ = _data()
    model = _model()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.05)
    with gradtrace.trace(run="acc", store=db):
        acc, losses = None, []
        for xb, yb in ((x[:8], y[:8]), (x[8:], y[8:])):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            acc = grads if acc is None else [a + g for a, g in zip(acc, grads, strict=True)]
            losses.append(float(loss))
        opt.apply_gradients(zip(acc, model.trainable_variables, strict=True))
    (st,) = _steps(db, "acc")
    np.testing.assert_allclose(st["loss"], losses[-1], rtol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "function"])
def test_the_mask_of_the_output_a_function_gets_is_recorded(tmp_path, compiled):
    """A loss function applies no mask: the one its y_pred carries (Embedding(mask_zero=True))
    is recorded as output_mask_valid/count; a loss object applies it (mask_valid/count)."""
    db = f"sqlite:///{tmp_path / 'fn.db'}"
    x = np.array([[3, 1, 0, 0], [2, 0, 0, 0]] * 4, dtype="int32")  # 3 valid of 8 entries a pair
    y = (x % 2).astype("int32")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(5, 4, mask_zero=True),
                              keras.layers.Dense(2)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fn = lambda t, p: keras.losses.sparse_categorical_crossentropy(t, p, from_logits=True)  # noqa: E731
    for name, loss_of in (("function", fn), ("object", ce)):
        with gradtrace.trace(run=name, store=db):
            _train(model, loss_of, x, y, keras.optimizers.SGD(0.1), compiled)
    info = _steps(db, "function")[0]["loss_info"]
    assert (info["output_mask_valid"], info["output_mask_count"], info["mask_valid"]) == (12, 32, None)
    info = _steps(db, "object")[0]["loss_info"]
    assert (info["mask_valid"], info["mask_count"], info["output_mask_valid"]) == (12, 32, None)


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus", "sigmoid", None])
def test_the_output_activation_of_a_regression_step_is_recorded(tmp_path, activation):
    """Inside tf.function the activation that computed y_pred is read from the graph, bounded ones
    included (a relu or tanh output under an mse): the loss details are kept, not dropped."""
    db = f"sqlite:///{tmp_path / 'act.db'}"
    x, _, y1 = _data()
    model = _model(activation=activation)
    with gradtrace.trace(run="act", store=db):
        _train(model, keras.losses.MeanSquaredError(), x, y1, keras.optimizers.SGD(0.05), True)
    steps = _steps(db, "act")
    assert len(steps) == 2
    for st in steps:
        assert st["loss_info"] is not None and st["loss_info"]["cls"] == "MeanSquaredError", st
        assert st["loss_info"]["pred_activation"] == (activation or "linear"), st


def test_a_loss_detail_the_schema_does_not_take_is_left_out_alone():
    """A value of a type the schema does not take drops that field only: the rest of the step's loss
    details stay (the field of one call of several, likewise)."""
    from gradtrace._trace import _loss_info

    call = {"cls": "MeanSquaredError", "reduction": "sum_over_batch_size", "pred_activation": "gelu",
            "y_true_shape": [4, 1]}
    got = _loss_info({**call, "calls": [dict(call), {**call, "pred_activation": "sigmoid"}]})
    assert got is not None and got.cls == "MeanSquaredError" and got.y_true_shape == [4, 1]
    assert got.pred_activation is None and got.reduction == "sum_over_batch_size"
    assert [c.pred_activation for c in got.calls] == [None, "sigmoid"]
    assert [c.cls for c in got.calls] == ["MeanSquaredError", "MeanSquaredError"]
