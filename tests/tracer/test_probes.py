"""Probes: what a recorded step carries besides gradients, through the real trace().

Every test trains a tiny real model, traces it into a real SQLite file, reads the
records back from the store and checks them against values computed here.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import gradtrace  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

N, D = 16, 5


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'probes.db'}"


def _run(db: str, name: str) -> tuple[list[dict], dict]:
    store = open_store(db)
    runs = [r for r in store.runs().items if r.name == name]
    assert len(runs) == 1, [r.name for r in store.runs().items]
    uid = runs[0].id
    return list(store.steps(uid)), store.run_detail(uid).meta


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)).astype("float32"), rng.normal(size=(N,)).astype("float32")


def _bn_model(seed: int = 1, reg: float | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    kw = {"kernel_regularizer": keras.regularizers.L2(reg)} if reg else {}
    return keras.Sequential(
        [
            keras.Input((D,)),
            keras.layers.Dense(4, name="hidden", **kw),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dropout(0.25, name="drop"),
            keras.layers.Dense(1, name="out"),
        ]
    )


def _tape_steps(model, x, y, steps=2, training=None, loss_fn=None, opt=None):
    opt = opt or keras.optimizers.SGD(0.01)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            pred = model(x) if training is None else model(x, training=training)
            loss = loss_fn(y, pred) if loss_fn else tf.reduce_mean(tf.square(y - pred))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))


def test_modes_tape_without_training_vs_fit(db):
    x, y = _data()
    with gradtrace.trace(run="tape", store=db):
        _tape_steps(_bn_model(), x, y)
    model = _bn_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    with gradtrace.trace(run="fit", store=db):
        model.fit(x, y[:, None], batch_size=8, epochs=1, shuffle=False, verbose=0)

    tape_steps, _ = _run(db, "tape")
    fit_steps, _ = _run(db, "fit")
    assert len(tape_steps) == 2 and len(fit_steps) == 2
    for s in tape_steps:
        # No `training` anywhere: BN receives None (inference), Dropout its default False.
        assert s["modes"]["bn"] is None
        assert s["modes"]["drop"] is False
    for s in fit_steps:
        assert s["modes"]["bn"] is True
        assert s["modes"]["drop"] is True
    # Only leaf layers whose call() takes `training` appear; no container.
    assert "sequential" not in " ".join(fit_steps[0]["modes"])


def test_modes_tensor_training_under_tf_function(db):
    """`training` given as a tensor (tf-keras supports it) is a per-step value."""
    tfk = pytest.importorskip("tf_keras")
    x, y = _data()
    tfk.utils.set_random_seed(1)
    model = tfk.Sequential(
        [
            tfk.Input((D,)),
            tfk.layers.BatchNormalization(name="bn"),
            tfk.layers.Dropout(0.3, name="drop"),
            tfk.layers.Dense(1),
        ]
    )
    opt = tfk.optimizers.SGD(0.01)

    @tf.function
    def step(flag):
        with tf.GradientTape() as tape:
            pred = model(x, training=flag)
            loss = tf.reduce_mean(tf.square(y[:, None] - pred))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run="flag", store=db):
        step(tf.constant(True))
        step(tf.constant(False))
        step(tf.constant(True))
    steps, _ = _run(db, "flag")
    assert [s["modes"]["drop"] for s in steps] == [True, False, True]
    assert [s["modes"]["bn"] for s in steps] == [True, False, True]
    assert not steps[0]["broadcasts"]  # (N,1) against (N,1): nothing broadcast


def test_a_layer_called_in_both_modes_in_one_step_ran_in_training_mode(db):
    """Consistency regularisation calls the model twice under one tape, once with
    ``training=True`` and once (stop-gradient) with ``training=False``: the step ran its
    layers in training mode, whichever call came last (graph and eager, bool and tensor)."""
    x, y = _data()

    def train(name, order, flag_true, wrap, lib=keras):
        if lib is keras:
            model = _bn_model()
        else:  # tf-keras: `training` may be a tensor
            model = lib.Sequential([lib.Input((D,)), lib.layers.Dense(4), lib.layers.BatchNormalization(name="bn"),
                                    lib.layers.Dropout(0.25, name="drop"), lib.layers.Dense(1)])
        opt = lib.optimizers.SGD(0.01)

        def step(xb, yb, on):
            with tf.GradientTape() as tape:
                calls = [lambda: model(xb, training=on), lambda: tf.stop_gradient(model(xb, training=False))]
                outs = [c() for c in (calls if order == "train-first" else calls[::-1])]
                pred = outs[0] if order == "train-first" else outs[1]
                loss = tf.reduce_mean(tf.square(yb[:, None] - pred)) + tf.reduce_mean(outs[0] - outs[1]) ** 2
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        step = wrap(step)
        with gradtrace.trace(run=name, store=db):
            for _ in range(2):
                step(x, y, flag_true)
        steps, _ = _run(db, name)
        assert len(steps) == 2
        for rec in steps:
            assert rec["modes"] == {"bn": True, "drop": True}, (name, rec["modes"])

    for order in ("train-first", "inference-first"):
        train(f"eager-{order}", order, True, lambda f: f)
        train(f"graph-{order}", order, True, tf.function)
        tfk = pytest.importorskip("tf_keras")
        train(f"tensor-{order}", order, tf.constant(True), tf.function, tfk)


class _BranchingNet(keras.Model):
    """A user's model whose own call() branches on `training` (no Dropout/BN leaf)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = keras.layers.Dense(4, activation="relu")
        self.d2 = keras.layers.Dense(1)

    def call(self, inputs, training=None):
        h = self.d1(inputs)
        if training:
            h = h * 0.5
        return self.d2(h)


class _PassingNet(_BranchingNet):
    """Hands `training` on to its layers and does nothing else with it."""

    def call(self, inputs, training=None):
        return self.d2(self.d1(inputs, training=training), training=training)


def test_a_model_branching_on_training_itself_has_its_mode_recorded(db):
    x, y = _data()
    for name, cls, kwargs in (("branch-fit", _BranchingNet, None), ("branch-tape", _BranchingNet, {}),
                              ("pass-fit", _PassingNet, None)):
        keras.utils.set_random_seed(3)
        model = cls(name="net")
        with gradtrace.trace(run=name, store=db):
            if kwargs is None:
                model.compile(keras.optimizers.SGD(0.01), "mse")
                model.fit(x, y[:, None], batch_size=8, epochs=1, shuffle=False, verbose=0)
            else:
                _tape_steps(model, x, y)
    fit_steps, _ = _run(db, "branch-fit")
    tape_steps, _ = _run(db, "branch-tape")
    assert [s["modes"] for s in fit_steps] == [{"net": True}] * 2
    assert [s["modes"] for s in tape_steps] == [{"net": None}] * 2  # called without `training`
    # A model that only hands `training` on behaves as its layers (Dense: no mode).
    assert all(not s["modes"] for s in _run(db, "pass-fit")[0])


def test_layer_configs_are_recorded_for_leaf_layers(db):
    """Each leaf layer's arguments (get_config() without names, dtypes, initializers, seeds),
    keyed by its inventory index: what the comparator diffs between two models."""
    x, y = _data()
    model = _bn_model(reg=0.01)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    with gradtrace.trace(run="configs", store=db):
        model.fit(x, y[:, None], batch_size=8, epochs=1, verbose=0)
    _, meta = _run(db, "configs")
    configs = meta["layer_configs"]
    assert len(configs) == 4  # hidden, bn, drop, out; the Sequential is a container
    bn = next(c for c in configs.values() if "momentum" in c)
    drop = next(c for c in configs.values() if "rate" in c)
    hidden = next(c for c in configs.values() if c.get("units") == 4)
    assert bn["momentum"] == pytest.approx(0.99) and drop["rate"] == pytest.approx(0.25)
    assert hidden["kernel_regularizer"]["config"]["l2"] == pytest.approx(0.01)
    for cfg in configs.values():
        assert "name" not in cfg and "dtype" not in cfg and not any(k.endswith("_initializer") for k in cfg)


def test_keras_loss_records_reduction_shapes_and_per_sample_stats(db):
    x, y = _data()
    model = _bn_model()
    loss_fn = keras.losses.MeanSquaredError(reduction="sum")
    with gradtrace.trace(run="loss", store=db):
        _tape_steps(model, x, y[:, None], steps=1, training=True, loss_fn=loss_fn)
    (step,), _ = _run(db, "loss")
    info = step["loss_info"]
    assert info["cls"] == "MeanSquaredError"
    assert info["reduction"] == "sum"
    assert info["y_true_shape"] == [N, 1] and info["y_pred_shape"] == [N, 1]
    assert info["sample_weight"] is False
    assert info["per_sample_count"] == N
    # sum reduction: the step's loss is the per-sample mean times the count.
    assert step["loss"] == pytest.approx(info["per_sample_mean"] * N, rel=1e-5)
    assert info["per_sample_min"] <= info["per_sample_mean"] <= info["per_sample_max"]
    assert step["y_pred_shape"] == [N, 1]


def _two_heads() -> keras.Model:
    keras.utils.set_random_seed(2)
    inp = keras.Input((D,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    return keras.Model(inp, [keras.layers.Dense(3, name="cls")(h), keras.layers.Dense(1, name="reg")(h)])


def test_every_keras_loss_call_of_a_multi_output_step_is_listed(db):
    """fit() of a two-output model calls one Keras loss per output: loss_info.calls lists both
    in order (the record's own fields are the last); a loss computed outside the tape before
    an eager step (a validation print) is not one of the step's calls."""
    x, _ = _data()
    rng = np.random.default_rng(4)
    y1 = rng.integers(0, 3, size=(N,)).astype("int32")
    y2 = rng.normal(size=(N, 1)).astype("float32")
    model = _two_heads()
    model.compile(keras.optimizers.SGD(0.01),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()])
    with gradtrace.trace(run="fit2", store=db):
        model.fit(x, [y1, y2], batch_size=N, epochs=2, verbose=0)
    steps, _ = _run(db, "fit2")
    assert len(steps) == 2
    for s in steps:
        info = s["loss_info"]
        assert [c["cls"] for c in info["calls"]] == ["SparseCategoricalCrossentropy", "MeanSquaredError"]
        assert [c["from_logits"] for c in info["calls"]] == [True, None]
        assert [c["y_pred_shape"] for c in info["calls"]] == [[N, 3], [N, 1]]
        assert info["cls"] == "MeanSquaredError" and info["per_sample_count"] == N

    model = _two_heads()
    opt = keras.optimizers.SGD(0.01)
    l1 = keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    l2 = keras.losses.MeanAbsoluteError()
    with gradtrace.trace(run="eager2", store=db):
        for _ in range(2):
            float(keras.losses.Huber()(y2, model(x)[1]))  # outside the tape: not the step's
            with tf.GradientTape() as tape:
                o1, o2 = model(x, training=True)
                loss = l1(y1, o1) + l2(y2, o2)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                    strict=True))
    steps, _ = _run(db, "eager2")
    assert [[(c["cls"], c["from_logits"]) for c in s["loss_info"]["calls"]] for s in steps] == [
        [("SparseCategoricalCrossentropy", False), ("MeanAbsoluteError", None)]] * 2


def _train_hand_written(db, name, model, loss_fn, x, y, compiled, steps=3):
    """``steps`` tape steps (eager, or one ``tf.function``) with a loss written by hand."""
    opt = keras.optimizers.SGD(0.01)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    fn = tf.function(step) if compiled else step
    with gradtrace.trace(run=name, store=db):
        for _ in range(steps):
            fn(x, y)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_broadcast_in_hand_written_mse(db, compiled):
    x, y = _data()
    # (N,) - (N,1) -> (N,N)
    _train_hand_written(db, "bc", _bn_model(), lambda y, pred: tf.reduce_mean(tf.square(y - pred)), x, y, compiled)
    steps, _ = _run(db, "bc")
    assert len(steps) == 3
    for s in steps:
        assert s["y_pred_shape"] == [N, 1]
        assert {"op": "Sub", "a_shape": [N], "b_shape": [N, 1], "out_shape": [N, N]} in s[
            "broadcasts"
        ]
        # The gradient of the loss broadcasts too; none of it may be reported.
        assert len(s["broadcasts"]) == 1


class _Linear(tf.Module):
    """TensorFlow's "basic training loops" model: raw variables, no Keras layer."""

    def __init__(self) -> None:
        self.w = tf.Variable(np.linspace(-1.0, 1.0, D, dtype="float32")[:, None])
        self.b = tf.Variable([0.0])

    def __call__(self, x, training=None):
        return x @ self.w + self.b  # (N, 1)


def _train_module(db, name, loss_fn, y, compiled):
    x, _ = _data()
    _train_hand_written(db, name, _Linear(), loss_fn, x, y, compiled)
    return _run(db, name)[0]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_broadcast_in_a_module_loss(db, compiled):
    """No Keras model returns under the tape: the ops between the tape's variables and the
    labels are watched for the same (N,) against (N, 1) broadcast."""
    _, y = _data()
    mse = lambda y, pred: tf.reduce_mean(tf.square(y - pred))  # noqa: E731
    steps = _train_module(db, "module-bc", mse, y, compiled)
    assert len(steps) == 3
    for s in steps:
        assert s["broadcasts"] == [{"op": "Sub", "a_shape": [N], "b_shape": [N, 1], "out_shape": [N, N]}]
    # the same loss on (N, 1) labels broadcasts nothing
    assert not any(s["broadcasts"] for s in _train_module(db, "module-ok", mse, y[:, None], compiled))

    def pairwise(y, pred):
        # a term pairing predictions with predictions (a ranking or contrastive loss) is
        # computed from the variables on both sides: an outer broadcast on purpose
        diff = pred - tf.transpose(pred)  # (N, 1) - (1, N) -> (N, N)
        return tf.reduce_mean(tf.square(pred - y[:, None])) + 1e-3 * tf.reduce_mean(tf.nn.relu(diff))

    assert not any(s["broadcasts"] for s in _train_module(db, "module-pairwise", pairwise, y, compiled))


def test_fingerprints_fit_vs_tape_same_batch_and_different_batches(db):
    x, y = _data()
    x2, _ = _data(seed=5)
    model = _bn_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.MeanSquaredError())
    with gradtrace.trace(run="fit", store=db):
        model.fit(x, y[:, None], batch_size=N, epochs=2, shuffle=False, verbose=0)
    loss_fn = keras.losses.MeanSquaredError()
    with gradtrace.trace(run="tape", store=db):
        model2 = _bn_model()
        opt = keras.optimizers.SGD(0.01)
        for batch in (x, x2):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[:, None], model2(batch, training=True))
            grads = tape.gradient(loss, model2.trainable_variables)
            opt.apply_gradients(zip(grads, model2.trainable_variables, strict=True))

    fit_steps, _ = _run(db, "fit")
    tape_steps, _ = _run(db, "tape")
    assert [s["batch_size"] for s in fit_steps + tape_steps] == [N] * 4
    # Same batch, two training paths: equal fingerprints.
    np.testing.assert_allclose(fit_steps[0]["x_fp"], tape_steps[0]["x_fp"], rtol=1e-6)
    np.testing.assert_allclose(fit_steps[1]["x_fp"], fit_steps[0]["x_fp"], rtol=1e-6)
    np.testing.assert_allclose(fit_steps[0]["y_fp"], tape_steps[0]["y_fp"], rtol=1e-6)
    assert fit_steps[0]["x_fp"][0] == pytest.approx(float(x.sum()), rel=1e-5)
    assert fit_steps[0]["x_fp"][3] == N * D
    # A different batch: a different fingerprint.
    assert not np.allclose(tape_steps[1]["x_fp"], tape_steps[0]["x_fp"], rtol=1e-3)
    # Same values in another order (a shuffle): the projection still tells them apart.
    assert tape_steps[1]["y_fp"] == tape_steps[0]["y_fp"]  # labels were the same


def test_string_inputs_are_fingerprinted_by_their_hashes(db):
    """Text fed to a StringLookup inside the model: the batch fingerprint covers the strings
    (FarmHash, the same in every process), so fit() and a tape loop on the same sentences
    agree and other sentences differ."""
    words = np.array([["red", "green", "blue"], ["blue", "blue", "red"], ["green", "red", "red"],
                      ["red", "red", "red"]], dtype=object)
    other = words[:, ::-1].copy()  # the same words per row, another order
    labels = np.array([[1.0], [0.0], [1.0], [0.0]], "float32")

    def model():
        keras.utils.set_random_seed(5)
        inp = keras.Input((3,), dtype="string")
        ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue"])(inp)
        h = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(ids))
        return keras.Model(inp, keras.layers.Dense(1)(h))

    m = model()
    m.compile(keras.optimizers.SGD(0.1), "mse")
    with gradtrace.trace(run="text-fit", store=db):
        m.fit(tf.constant(words), labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    with gradtrace.trace(run="text-tape", store=db):
        m2, opt = model(), keras.optimizers.SGD(0.1)
        for batch in (words, other):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(m2(tf.constant(batch), training=True) - labels))
            grads = tape.gradient(loss, m2.trainable_variables)
            opt.apply_gradients(zip(grads, m2.trainable_variables, strict=True))
    fit_steps, _ = _run(db, "text-fit")
    tape_steps, _ = _run(db, "text-tape")
    expected = tf.cast(tf.strings.to_hash_bucket_fast(tf.constant(words), 1 << 24), tf.float64).numpy()
    assert fit_steps[0]["x_fp"][0] == pytest.approx(float(expected.sum()), rel=1e-6)
    assert fit_steps[0]["x_fp"][3] == words.size
    np.testing.assert_allclose(fit_steps[0]["x_fp"], tape_steps[0]["x_fp"], rtol=1e-6)
    assert tape_steps[1]["x_fp"][0] == pytest.approx(tape_steps[0]["x_fp"][0], rel=1e-6)  # same words
    assert not np.allclose(tape_steps[1]["x_fp"], tape_steps[0]["x_fp"], rtol=1e-6)  # another order


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("loss_kind", ["mse", "sparse_ce"])
def test_label_fingerprint_of_a_hand_written_loss(db, compiled, loss_kind):
    """No Keras loss object sees the labels: the loss window finds them as the operand
    combined with the model's output, and y_fp is their fingerprint (under tf.function
    on every step; eagerly on the first step, the one the window watches)."""
    x, _ = _data()
    rng = np.random.default_rng(3)
    if loss_kind == "mse":
        y = rng.normal(size=(N, 1)).astype("float32")
        model = _bn_model()
    else:
        y = rng.integers(0, 3, size=(N,)).astype("int32")
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(3)])

    def loss(y, pred):
        if loss_kind == "mse":
            return tf.reduce_mean(tf.square(y - pred))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=pred))

    _train_hand_written(db, "labels", model, loss, x, y, compiled)
    steps, meta = _run(db, "labels")
    assert len(steps) == 3
    assert meta["extra"]["labels_inferred"] is True  # the comparator weighs such labels apart
    y64 = y.astype(np.float64).reshape(-1)
    want = [y64.sum(), (y64 * y64).sum(), float(y64.size)]
    with_fp = [s for s in steps if s["y_fp"] is not None]
    assert len(with_fp) == (3 if compiled else 1)
    assert with_fp[0]["step"] == 0
    for s in with_fp:
        got = s["y_fp"]
        np.testing.assert_allclose([got[0], got[1], got[3]], want, rtol=1e-5)
        # and not the inputs' fingerprint
        assert got[3] != s["x_fp"][3]


def test_fingerprint_sees_a_permutation():
    from gradtrace._probes import fingerprint

    x, _ = _data()
    a = fingerprint(x).numpy()
    b = fingerprint(x[::-1].copy()).numpy()
    np.testing.assert_allclose(a[:2], b[:2], rtol=1e-5)  # sums cannot tell
    assert abs(a[2] - b[2]) > 1e-3 * (abs(a[2]) + 1e-6)


def test_reg_loss_equals_sum_of_model_losses(db):
    x, y = _data()
    model = _bn_model(reg=0.05)
    expected0 = float(tf.add_n(model.losses))  # weights before step 0 update
    with gradtrace.trace(run="reg", store=db):
        _tape_steps(model, x, y[:, None], steps=2, training=True)
    expected_end = float(tf.add_n(model.losses))
    steps, _ = _run(db, "reg")
    assert steps[0]["reg_loss"] == pytest.approx(expected0, rel=1e-6)
    assert steps[1]["reg_loss"] != pytest.approx(expected0, rel=1e-9)
    assert expected_end != pytest.approx(steps[1]["reg_loss"], rel=1e-9)  # after the last update
    plain = _bn_model()
    with gradtrace.trace(run="noreg", store=db):
        _tape_steps(plain, x, y[:, None], steps=1, training=True)
    (s,), _ = _run(db, "noreg")
    assert s["reg_loss"] is None


@pytest.mark.parametrize(
    "labels,expected",
    [("sparse", "SparseCategoricalAccuracy"), ("onehot", "CategoricalAccuracy")],
)
def test_fit_meta_and_resolved_accuracy(db, labels, expected):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, 3, size=(N,))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(3, activation="softmax")])
    if labels == "sparse":
        loss, yy = "sparse_categorical_crossentropy", y
    else:
        loss, yy = "categorical_crossentropy", np.eye(3, dtype="float32")[y]
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    with gradtrace.trace(run="fit", store=db):
        model.fit(
            x,
            yy,
            batch_size=8,
            epochs=1,
            verbose=0,
            class_weight={0: 1.0, 1: 2.0, 2: 1.0},
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
    steps, meta = _run(db, "fit")
    assert len(steps) == 2
    assert [(m["name"], m["class"]) for m in meta["metrics"]] == [("accuracy", expected)]
    cls = "SparseCategoricalCrossentropy" if labels == "sparse" else "CategoricalCrossentropy"
    assert meta["loss"]["class"] == cls and meta["loss"]["from_logits"] is False
    fit = meta["fit"]
    assert fit["class_weight"] == {"0": 1.0, "1": 2.0, "2": 1.0}
    assert fit["callbacks"] == ["TerminateOnNaN"]
    assert fit["epochs"] == 1 and fit["batch_size"] == 8 and fit["steps_per_execution"] == 1
    assert fit["jit_compile"] is bool(model.jit_compile)
    assert fit["run_eagerly"] is False
    assert meta["strategy"] == type(tf.distribute.get_strategy()).__name__
    assert meta["replicas"] == 1
    assert meta["dtype_policy"] == "float32"
    # class_weight reaches the compiled loss as per-sample weights.
    assert steps[0]["loss_info"]["sample_weight"] is True


def test_probes_are_undone_exactly(db):
    from keras.src.layers.layer import Layer
    from keras.src.losses.loss import Loss
    from keras.src.models.model import Model

    before = (
        Layer.__dict__["__call__"],
        Layer.__dict__["_resolve_and_populate_arg"],
        Loss.__dict__["__call__"],
        "fit" in Model.__dict__,
    )
    x, y = _data()
    model = _bn_model()
    model.compile(optimizer="sgd", loss="mse")
    with gradtrace.trace(run="undo", store=db):
        assert Layer.__dict__["__call__"] is not before[0]
        model.fit(x, y, batch_size=N, verbose=0)
        assert "train_step" in vars(model)
    after = (
        Layer.__dict__["__call__"],
        Layer.__dict__["_resolve_and_populate_arg"],
        Loss.__dict__["__call__"],
        "fit" in Model.__dict__,
    )
    assert after == before
    assert "train_step" not in vars(model)
    from tensorflow.python.eager import context

    assert not context.context().op_callbacks


def test_frozen_bn_via_install_and_decode():
    """install()/decode() on their own: a BN with trainable=False is reported frozen."""
    from gradtrace import _probes, _scope

    class FakeRun:
        strict = True

        def __init__(self):
            self.models, self.meta = [], {}

        def register_model(self, model):
            self.models.append(model)

        def update_meta(self, **fields):
            self.meta.update(fields)

        def internal_error(self, exc):
            raise exc

    x, y = _data()
    model = _bn_model()
    model.get_layer("bn").trainable = False
    run = FakeRun()
    undo = _probes.install(run)
    try:
        _scope.reset()
        with tf.GradientTape():
            model(x, training=True)
        values, statics = _scope.current().take()
    finally:
        undo()
    rec = _probes.decode({k: np.asarray(v) for k, v in values.items()}, statics)
    assert run.models == [model]
    assert rec["modes"]["bn"] is True  # as passed ...
    assert rec["frozen"] == ["bn"]  # ... but the layer ran frozen (inference)
    assert rec["batch_size"] == N


@pytest.mark.skipif(os.environ.get("GRADTRACE_SKIP_TF_KERAS") == "1", reason="tf-keras off")
def test_tf_keras_modes_and_loss(db):
    tfk = pytest.importorskip("tf_keras")
    x, y = _data()
    tfk.utils.set_random_seed(1)
    model = tfk.Sequential(
        [
            tfk.Input((D,)),
            tfk.layers.Dense(4),
            tfk.layers.BatchNormalization(name="bn"),
            tfk.layers.Dropout(0.25, name="drop"),
            tfk.layers.Dense(1),
        ]
    )
    opt = tfk.optimizers.SGD(0.01)
    loss_fn = tfk.losses.MeanSquaredError()
    with gradtrace.trace(run="tfk", store=db):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        model.compile(optimizer=tfk.optimizers.SGD(0.01), loss="mse", metrics=["accuracy"])
        model.fit(x, y[:, None], batch_size=N, epochs=1, verbose=0)
    steps, meta = _run(db, "tfk")
    assert len(steps) == 2
    # tf-keras passes None down when nobody says `training` (its layers then infer).
    assert steps[0]["modes"]["bn"] is None and steps[0]["modes"]["drop"] is None
    assert steps[1]["modes"]["bn"] is True and steps[1]["modes"]["drop"] is True
    assert steps[0]["loss_info"]["y_true_shape"] == [N]
    assert steps[0]["loss_info"]["reduction"] == "auto"
    assert steps[1]["loss_info"]["cls"] == "MeanSquaredError"
    # A (N, 1) output: tf-keras resolves "accuracy" to binary accuracy (compile() got the string).
    assert meta["metrics"] == [
        {"name": "accuracy", "class": "BinaryAccuracy", "fn": "binary_accuracy", "given": "string"}
    ]


def test_loss_denominators_sample_weight_and_mask(db):
    """The sum of the sample weights and the mask's valid entries a Keras loss divided by."""
    rng = np.random.default_rng(3)
    x, y = _data()
    w = rng.uniform(0.1, 3.0, size=(N,)).astype("float32")
    w[2] = 0.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with gradtrace.trace(run="weighted", store=db):
        model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, shuffle=False, verbose=0)
    steps, _ = _run(db, "weighted")
    assert len(steps) == 2
    for k, st in enumerate(steps):
        info = st["loss_info"]
        wb = w[8 * k: 8 * (k + 1)]
        assert info["weight_sum"] == pytest.approx(float(wb.sum()), rel=1e-6)
        assert info["weight_count"] == 8 and info["weight_nonzero"] == int(np.count_nonzero(wb))
        assert info.get("mask_valid") is None

    tokens = np.zeros((N, 6), dtype="int32")
    lengths = rng.integers(1, 7, size=N)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 9, size=n)
    tags = (tokens % 2).astype("int32")
    keras.utils.set_random_seed(0)
    tagger = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(9, 4, mask_zero=True),
        keras.layers.Dense(2),
    ])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)
    with gradtrace.trace(run="masked", store=db):
        for k in range(2):
            xb, yb = tokens[8 * k: 8 * (k + 1)], tags[8 * k: 8 * (k + 1)]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, tagger(xb, training=True))
            grads = tape.gradient(loss, tagger.trainable_variables)
            opt.apply_gradients(zip(grads, tagger.trainable_variables, strict=True))
    steps, _ = _run(db, "masked")
    assert [st["loss_info"]["mask_valid"] for st in steps] == [
        int(np.count_nonzero(tokens[8 * k: 8 * (k + 1)])) for k in range(2)]
    assert all(st["loss_info"]["mask_count"] == 48 for st in steps)
    assert all(st["loss_info"].get("weight_sum") is None for st in steps)


def test_loss_sample_weight_flag_is_what_the_loss_call_received(db):
    """fit(sample_weight=w) with a train_step whose compute_loss leaves the weights out: the
    loss record says the loss got none (fit()'s own weights are in RunInfo.fit); the stock
    train step passes them on and the loss says so."""

    class DropsWeights(keras.Model):
        def train_step(self, data):
            x, y, _w = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    x, y = _data()
    w = np.linspace(0.5, 1.5, N).astype("float32")
    for name, cls in (("drops", DropsWeights), ("stock", keras.Model)):
        keras.utils.set_random_seed(3)
        inp = keras.Input((D,))
        model = cls(inp, keras.layers.Dense(1)(inp))
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        with gradtrace.trace(run=name, store=db):
            model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for name, received in (("drops", False), ("stock", True)):
        steps, meta = _run(db, name)
        assert len(steps) == 2 and meta["fit"]["sample_weight"] is True
        assert all(s["loss_info"]["sample_weight"] is received for s in steps), (name, steps[0]["loss_info"])


def test_keras3_reduction_none_is_recorded_as_none(db):
    """Keras 3 spells "no reduction" ``reduction=None``; it is recorded as tf-keras's ``"none"``,
    so the checks that read per-example losses (a partial batch divided by the full batch's
    size) see it."""
    x, y = _data()
    model = _bn_model()
    per_example = keras.losses.MeanSquaredError(reduction=None)
    opt = keras.optimizers.SGD(0.01)
    with gradtrace.trace(run="red-none", store=db):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(per_example(y[:, None], model(x, training=True))) / 32.0
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    steps, _ = _run(db, "red-none")
    assert steps[0]["loss_info"]["reduction"] == "none"
    assert steps[0]["loss_info"]["per_sample_count"] == N


def test_loss_details_the_schema_does_not_take_are_dropped_not_the_step():
    """A detail the schema does not know (a probe newer than the schema it is decoded with), or a
    value of a type it does not take, is left out; the rest of the loss details, and the step, are kept."""
    from gradtrace._trace import _loss_info

    info = _loss_info({"cls": "MeanSquaredError", "reduction": "none", "per_sample_count": 8, "unknown": 1,
                       "calls": [{"cls": "MeanSquaredError", "also_unknown": True}]})
    assert info is not None and info.cls == "MeanSquaredError" and info.per_sample_count == 8
    assert info.calls is not None and info.calls[0].cls == "MeanSquaredError"
    other = _loss_info({"cls": "MeanSquaredError", "per_sample_count": "many"})  # a value of another type
    assert other is not None and other.cls == "MeanSquaredError" and other.per_sample_count is None


@pytest.mark.parametrize("compiled", [False, True])
def test_gradients_clipped_by_hand_are_recorded(db, compiled):
    """``tf.clip_by_global_norm`` called on the gradients (eagerly: the patched function; inside a
    tf.function also read from the name scopes between the tape and the apply, which catches
    ``tf.clip_by_value`` too)."""
    x, y = _data()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True)[:, 0] - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        grads = [tf.clip_by_value(g, -5.0, 5.0) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    run = tf.function(step) if compiled else step
    with gradtrace.trace(run="clip", store=db):
        for _ in range(2):
            run(x, y)
    _steps, meta = _run(db, "clip")
    want = ["clip_by_global_norm", "clip_by_value"] if compiled else ["clip_by_global_norm"]
    assert meta["extra"].get("hand_clipping") == want, meta["extra"]


@pytest.mark.parametrize("setting", ["global_clipnorm", "clipnorm"])
def test_an_optimizers_own_clipping_is_not_clipping_by_hand(db, setting):
    """A Keras optimizer clipping with ``global_clipnorm``/``clipnorm`` may call TensorFlow's clipping
    functions itself (keras/src/backend/tensorflow/optimizer.py): not the script's hand."""
    x, y = _data()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01, **{setting: 1.0})
    with gradtrace.trace(run="own-clip", store=db):
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - y))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    _steps, meta = _run(db, "own-clip")
    assert "hand_clipping" not in meta["extra"], meta["extra"]
