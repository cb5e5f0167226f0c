"""Same start, decided per variable: a model whose weights were copied with ``set_weights``
starts from the same trainable weights as the original, while its Dropout keeps its own RNG
seed state (``set_weights`` does not copy it). Real trainings: fit() of one model and a tape
loop of the copy, each traced into a SQLite file and compared."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

STEPS = 12
BATCH = 32


def _train(url: str, copy_weights: bool, training_flag: bool = True) -> dict[str, Any]:
    """fit() of a Dense-BN-Dropout model, then a tape loop of a second model of the same
    architecture (its weights copied from the first when ``copy_weights``). Returns the
    initial values of both, by variable path, as the script saw them."""
    import gradtrace
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x[: STEPS * BATCH] / 16).astype("float32"), y[: STEPS * BATCH].astype("int32")
    keras.utils.set_random_seed(7)

    def make() -> Any:
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
                                 keras.layers.Dense(10)])

    m1, m2 = make(), make()
    if copy_weights:
        m2.set_weights(m1.get_weights())
    initial = {"a": [np.array(v.numpy()) for v in m1.variables], "b": [np.array(v.numpy()) for v in m2.variables],
               "trainable": [v.trainable for v in m1.variables]}
    m1.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run="fit", project="init", store=url):
        m1.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    opt = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, m2(xb, training=training_flag))
        grads = tape.gradient(loss, m2.trainable_variables)
        opt.apply_gradients(zip(grads, m2.trainable_variables, strict=True))
        return loss

    with gradtrace.trace(run="tape", project="init", store=url):
        for i in range(0, len(x), BATCH):
            step(x[i : i + BATCH], y[i : i + BATCH])
    return initial


def _report(url: str) -> Any:
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    with open_store(url) as store:
        return compare(store, "fit", "tape", project="init")


@pytest.mark.slow
def test_weights_copied_with_set_weights_are_the_same_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'copied.db'}"
    initial = _train(url, copy_weights=True)
    differ = [not np.array_equal(a, b) for a, b in zip(initial["a"], initial["b"], strict=True)]
    # the premise: every trainable weight equal, the Dropout's seed state not
    assert not any(d for d, t in zip(differ, initial["trainable"], strict=True) if t) and any(differ)
    report = _report(url)
    assert report.verdict == "equivalent", report.findings
    (init,) = [f for f in report.findings if f.kind == "init_mismatch"]
    assert init.severity == "info" and "seed" in init.summary
    assert init.evidence["weights_differ"] == 0
    assert init.evidence["weights_compared"] == sum(initial["trainable"])
    assert init.evidence["rng_state_differs"]
    assert "set_random_seed" in init.fix


@pytest.mark.slow
def test_a_copy_left_in_inference_mode_is_still_named(tmp_path):
    # The step-level numbers are not comparable (other dropout draws), the modes are.
    url = f"sqlite:///{tmp_path / 'mode.db'}"
    _train(url, copy_weights=True, training_flag=False)
    report = _report(url)
    assert report.verdict == "diverged"
    assert report.findings[0].kind == "training_mode_mismatch", report.findings


@pytest.mark.slow
def test_weights_not_copied_name_the_variables_that_differ(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    initial = _train(url, copy_weights=False)
    differ = sum(1 for a, b, t in zip(initial["a"], initial["b"], initial["trainable"], strict=True)
                 if t and not np.array_equal(a, b))
    assert differ  # the premise: a second model drew other initial weights
    report = _report(url)
    assert report.verdict == "not_comparable"
    (init,) = [f for f in report.findings if f.kind == "init_mismatch"]
    assert init.severity == "warning"
    assert init.evidence["variables_differ"] == differ
    assert init.evidence["variables_compared"] == sum(initial["trainable"])
    assert len(init.variables) == min(differ, 6) and all("kernel" in v for v in init.variables)
