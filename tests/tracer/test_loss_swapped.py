"""A Keras loss called as ``loss(pred, y)`` (PyTorch's ``loss(input, target)`` order): the
model's output reaches the loss as ``y_true`` and the labels as ``y_pred``. The tracer marks
that call ``swapped`` in the step's ``loss_info`` (eager and in a tf.function, Keras 3), and
not a correct call, a distillation loss between two models' outputs (whichever model is
called last) or a loss outside any tape. Real trainings, read back from a SQLite file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def _steps(url: str, name: str) -> list[dict[str, Any]]:
    from gradtrace.store import open_store

    with open_store(url) as store:
        return list(store.steps(store.resolve(name).id))


def _train(url: str, name: str, loss_of: Any, graph: bool, teacher: bool = False) -> None:
    import gradtrace
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 32), 3).astype("float32")
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    opt = keras.optimizers.SGD(0.1)

    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_of(student, other, xb, yb)
        grads = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    with gradtrace.trace(run=name, store=url):
        fn = tf.function(step) if graph else step
        for _ in range(3):
            fn(tf.constant(x), tf.constant(y))


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_a_loss_given_the_output_as_labels_is_marked_swapped(tmp_path, graph):
    import keras

    url = f"sqlite:///{tmp_path / 'swapped.db'}"
    cce = keras.losses.CategoricalCrossentropy()
    kld = keras.losses.KLDivergence()
    runs = {
        "swapped": lambda s, o, x, y: cce(s(x, training=True), y),
        "right": lambda s, o, x, y: cce(y, s(x, training=True)),
        # distillation: both arguments are model outputs, the student's called first or last
        "teacher-last": lambda s, o, x, y: (lambda p: kld(o(x), p))(s(x, training=True)),
        "teacher-first": lambda s, o, x, y: (lambda t: kld(t, s(x, training=True)))(o(x)),
        # the function form, keras.losses.categorical_crossentropy(pred, y)
        "function": lambda s, o, x, y: keras.ops.mean(
            keras.losses.categorical_crossentropy(s(x, training=True), y)),
        # symmetric: the same loss either way round
        "mse": lambda s, o, x, y: keras.losses.MeanSquaredError()(s(x, training=True), y),
    }
    for name, loss_of in runs.items():
        _train(url, name, loss_of, graph)
    swapped = {name: [(r.get("loss_info") or {}).get("swapped") for r in _steps(url, name)] for name in runs}
    assert swapped == {"swapped": [True] * 3, "right": [None] * 3, "teacher-last": [None] * 3,
                       "teacher-first": [None] * 3, "function": [True] * 3, "mse": [True] * 3}, swapped
    # y_fp fingerprints the labels wherever they were passed: the same batch in every run
    fps = {name: [r.get("y_fp") for r in _steps(url, name)] for name in ("swapped", "right", "function")}
    assert fps["swapped"] == fps["right"] == fps["function"] and fps["right"][0] is not None, fps

    # gradtrace check: a loss_mismatch for the asymmetric losses only
    from gradtrace.compare import check
    from gradtrace.store import open_store

    with open_store(url) as store:
        said = {name: [f for f in check(store, name).findings if f.kind == "loss_mismatch"] for name in runs}
    assert {name: len(fs) for name, fs in said.items()} == {
        "swapped": 1, "right": 0, "teacher-last": 0, "teacher-first": 0, "function": 1, "mse": 0}, said
    (f,) = said["swapped"]
    assert f.severity == "error" and "CategoricalCrossentropy got the model's output as y_true" in f.summary, f
