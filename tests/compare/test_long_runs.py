"""Runs long enough for the automatic statistics cadence (per-variable numbers on steps 0-7, then
every N-th step, N chosen per run): the comparator reads the per-variable rows of the first
``HEAD`` steps up front and must not take "not read" or "not recorded" for "not there", and its
tolerance must not let a departure after many identical steps pass as drift. Real trainings on
digits (two epochs of 70 steps), traced into one SQLite file and compared."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import check as check_run  # noqa: E402
from gradtrace.compare import compare, render_text  # noqa: E402
from gradtrace.compare.data import HEAD  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

BATCH, EPOCH = 16, 70  # steps per epoch; the second epoch starts after the first HEAD steps
PROJECT = "long"


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = BATCH * EPOCH
    return (x[:n] / 16).astype("float32"), y[:n].astype("int32")


def _model() -> Any:
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(10)])


def _ce() -> Any:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(url: str, name: str, freeze: int | None = None, unfreeze: int | None = None,
         frozen: int | None = None) -> None:
    """Two fit() calls of one epoch each, compiled again in between: layer ``freeze`` is frozen
    before the second, layer ``unfreeze`` is frozen for the first and unfrozen for the second,
    layer ``frozen`` is frozen for both. The optimizer is kept, except where a layer is unfrozen
    (Keras 3's optimizer steps only the variables it was built with) and in the run it is compared
    with (the same recipe: a new optimizer for the second call)."""
    x, y = _data()
    model = _model()
    for i in (unfreeze, frozen):
        if i is not None:
            model.layers[i].trainable = False
    opt = keras.optimizers.SGD(0.05)
    model.compile(opt, _ce())
    with gradtrace.trace(run=name, project=PROJECT, store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        if freeze is not None:
            model.layers[freeze].trainable = False
        if unfreeze is not None:
            model.layers[unfreeze].trainable = True
        if unfreeze is not None or frozen is not None:
            opt = keras.optimizers.SGD(0.05)
        model.compile(opt, _ce())
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _fit_one_hot(url: str, name: str, smoothing: float) -> None:
    """Two fit() calls on one-hot labels; the second compiled with ``label_smoothing``."""
    x, y = _data()
    y1 = np.eye(10, dtype="float32")[y]
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    model.compile(opt, keras.losses.CategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=name, project=PROJECT, store=url):
        model.fit(x, y1, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        model.compile(opt, keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing))
        model.fit(x, y1, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _loop_one_hot_smoothed_from_epoch_2(url: str) -> None:
    """What ``_fit_one_hot`` trains, as a tape loop that switches its loss to label smoothing
    for the second epoch."""
    x, y = _data()
    y1 = np.eye(10, dtype="float32")[y]
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    plain = keras.losses.CategoricalCrossentropy(from_logits=True)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)

    def step(loss_fn: Any) -> Any:
        @tf.function
        def run(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return run

    steps = (step(plain), step(smoothed))
    with gradtrace.trace(run="loop-one-hot-smoothed-epoch-2", project=PROJECT, store=url):
        for epoch in range(2):
            for i in range(0, len(x), BATCH):
                steps[epoch](x[i:i + BATCH], y1[i:i + BATCH])


def _fit_adam(url: str) -> None:
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.Adam(1e-3), _ce())
    with gradtrace.trace(run="fit-adam", project=PROJECT, store=url):
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)


def _loop_adam(url: str, name: str, decay: float = 0.0, jit: bool = False, twice: bool = False,
               weighted: bool = False, inference: bool = False) -> None:
    """A tape loop; from the second epoch on, with ``decay`` the weights are decayed by hand after
    each step (decoupled weight decay after a warm-up epoch), with ``twice`` the step is called
    again on each batch (to log its loss), with ``weighted`` the loss gets class weights, with
    ``inference`` the model is called with ``training=False`` inside the tape."""
    x, y = _data()
    model = _model()
    ce = _ce()
    opt = keras.optimizers.Adam(1e-3)

    def step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def decayed() -> None:
        for v in model.trainable_variables:
            v.assign(v * (1.0 - decay))

    class_weights = tf.constant([1.0 + 0.1 * k for k in range(10)])

    @tf.function
    def weighted_step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True), sample_weight=tf.gather(class_weights, yb))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def inference_step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=False))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    run = tf.function(step) if jit else step
    with gradtrace.trace(run=name, project=PROJECT, store=url):
        for epoch in range(2):
            for i in range(0, len(x), BATCH):
                this = weighted_step if weighted else inference_step if inference else run
                (this if epoch else run)(x[i:i + BATCH], y[i:i + BATCH])
                if twice and epoch:
                    run(x[i:i + BATCH], y[i:i + BATCH])
                if decay and epoch:
                    decayed()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    assert EPOCH > HEAD  # what happens in the second epoch is past the rows read up front
    u = f"sqlite:///{tmp_path_factory.mktemp('long') / 'long.db'}"
    _fit(u, "fit")
    _fit(u, "fit-bn-frozen-epoch-2", freeze=1)
    _fit(u, "fit-dense-frozen", frozen=0)
    _fit(u, "fit-dense-unfrozen-epoch-2", unfreeze=0)
    _fit_one_hot(u, "fit-one-hot", 0.0)
    _fit_one_hot(u, "fit-one-hot-smoothed-epoch-2", 0.1)
    _loop_one_hot_smoothed_from_epoch_2(u)
    _fit_adam(u)
    _loop_adam(u, "loop-adam")
    _loop_adam(u, "loop-adam-function", jit=True)
    _loop_adam(u, "loop-adam-decayed-from-epoch-2", decay=1e-3, jit=True)
    _loop_adam(u, "loop-adam-twice-from-epoch-2", jit=True, twice=True)
    _loop_adam(u, "loop-adam-weighted-from-epoch-2", jit=True, weighted=True)
    _loop_adam(u, "loop-adam-inference-mode-from-epoch-2", jit=True, inference=True)
    return u


def _compare(url: str, a: str, b: str) -> Any:
    store = open_store(url)
    try:
        return compare(store, a, b, project=PROJECT)
    finally:
        store.close()


def test_a_layer_frozen_after_the_first_steps_read_is_named_with_its_step(url: str) -> None:
    # The other run's gradients from step 70 on are not among the per-variable rows read up
    # front: that it keeps training the layer is read from the whole run's summary.
    r = _compare(url, "fit", "fit-bn-frozen-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "trainable_mismatch", text
    assert top.evidence["stopped_in"] == "b" and top.evidence["step"] == EPOCH, text
    assert sorted(v.rsplit("/", 1)[-1] for v in top.variables) == ["beta", "gamma"], text


def test_a_layer_unfrozen_in_one_run_only_is_named_with_its_step(url: str) -> None:
    r = _compare(url, "fit-dense-frozen", "fit-dense-unfrozen-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "trainable_mismatch", text
    assert top.evidence["unfrozen_in"] == "b" and top.evidence["step"] == top.steps[0] == EPOCH, text
    assert len(top.variables) == 2 and all("dense" in v for v in top.variables), text
    # Both scripts build a new optimizer for the second fit() call: no reset in one run only.
    assert not any(f.kind == "optimizer_mismatch" for f in r.findings), text


def test_a_loss_compiled_again_with_other_arguments_is_named_with_its_step(url: str) -> None:
    # The loss details of each step are read for the first steps only: the loss the second fit()
    # call compiled is read from the run's fit() calls.
    r = _compare(url, "fit-one-hot", "fit-one-hot-smoothed-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "loss_mismatch" and top.steps == [EPOCH], text
    assert top.evidence["differences (a, b)"] == {"label_smoothing": (0.0, 0.1)}, text
    # A loop that switches its own loss object: found in its later steps' loss details.
    r = _compare(url, "fit-one-hot", "loop-one-hot-smoothed-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "loss_mismatch" and top.steps == [EPOCH], text
    assert top.evidence["differences (a, b)"] == {"label_smoothing": (0.0, 0.1)}, text


def test_a_departure_after_many_identical_steps_is_found_where_it_happens(url: str) -> None:
    # Bit-identical for 70 steps, then one run decays its weights by hand: the loss parts by
    # ~7e-4 at step 71 and keeps growing smoothly (to ~10 % at the end). A drift is noise that
    # training amplifies; identical runs have none, so this is a departure at step 71, not drift.
    # The decay is a tf.function assigning the trained weights after step 70: named as the cause,
    # with the departure it explains as its evidence.
    r = _compare(url, "loop-adam-function", "loop-adam-decayed-from-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    assert r.first_divergent_step == EPOCH + 1, text
    top = r.findings[0]
    assert top.kind == "weights_assigned" and top.evidence["assigned_run"] == "b", text
    assert top.evidence["first_step"] == EPOCH + 1 and top.evidence["where"] == "function", text
    assert [e["kind"] for e in top.evidence["step_evidence"]] == ["divergence"], text
    assert top.evidence["step_evidence"][0]["step"] == EPOCH + 1, text


def test_a_step_repeated_on_every_batch_from_the_second_epoch_is_named(url: str) -> None:
    # Batches stepped once for a whole epoch, then twice each: the repetition starts part way.
    r = _compare(url, "loop-adam-function", "loop-adam-twice-from-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "repeated_step" and top.evidence["run"] == "b", text
    assert top.evidence["per_batch"] == 2 and top.steps == [EPOCH + 1], text
    store = open_store(url)
    try:
        rep = check_run(store, "loop-adam-twice-from-epoch-2", project=PROJECT)
    finally:
        store.close()
    assert [f.kind for f in rep.findings] == ["repeated_step"], render_text(rep, verbose=True)


def test_sample_weights_from_the_second_epoch_in_one_run_are_named(url: str) -> None:
    r = _compare(url, "loop-adam-function", "loop-adam-weighted-from-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "sample_weighting" and top.evidence["b"] and not top.evidence["a"], text


def test_a_layer_run_in_inference_mode_from_the_second_epoch_is_named_from_then(url: str) -> None:
    r = _compare(url, "loop-adam-function", "loop-adam-inference-mode-from-epoch-2")
    text = render_text(r, verbose=True)
    assert r.verdict == "diverged", text
    top = r.findings[0]
    assert top.kind == "training_mode_mismatch" and top.steps == [EPOCH], text
    assert r.first_divergent_step == EPOCH, text


def test_the_same_training_over_two_epochs_stays_equivalent(url: str) -> None:
    for a, b in (("fit-adam", "loop-adam"), ("loop-adam", "loop-adam-function"), ("fit-one-hot", "fit")):
        r = _compare(url, a, b)
        text = render_text(r, verbose=True)
        assert r.verdict == "equivalent", text
        assert not [f for f in r.findings if f.severity != "info"], text
    store = open_store(url)
    try:
        for name in ("fit", "fit-bn-frozen-epoch-2", "fit-dense-unfrozen-epoch-2", "fit-one-hot-smoothed-epoch-2",
                     "fit-adam", "loop-adam", "loop-adam-function", "loop-adam-decayed-from-epoch-2"):
            rep = check_run(store, name, project=PROJECT)
            assert rep.verdict == "equivalent", (name, render_text(rep, verbose=True))
    finally:
        store.close()
