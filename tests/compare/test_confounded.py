"""Two mistakes at once, as users make them: a tape loop that calls the model without
``training=True`` (Dropout off) *and* sums the per-sample losses over the batch (or leaves
``model.losses`` out, which each run's own loss measures). The training
mode makes step 0 incomparable number by number, yet the factor every gradient shares is still
visible beneath it and is reported beside the mode; a loop with the mode wrong alone gets no
such claim. The same loss written for the other label encoding (integer labels with the sparse
cross-entropy, one-hot labels with the categorical one) is not a cause even where the steps
cannot be compared. Real trainings on digits, traced into a SQLite file."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import compare, render_text  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

BATCH, STEPS = 32, 12


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:BATCH * STEPS] / 16).astype("float32"), y[:BATCH * STEPS].astype("int32")


def _model(l2: float = 0.0):  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(21)
    reg = keras.regularizers.L2(l2) if l2 else None
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu", kernel_regularizer=reg),
                             keras.layers.Dropout(0.25), keras.layers.Dense(10)])


def _fit(url: str, name: str = "fit", l2: float = 0.0) -> None:
    x, y = _data()
    model = _model(l2)
    model.compile(keras.optimizers.RMSprop(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=name, project="confounded", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _loop(url: str, name: str, loss_of, l2: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    x, y = _data()
    model = _model(l2)
    opt = keras.optimizers.RMSprop(1e-3)

    @tf.function
    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = loss_of(yb, model(xb))  # training=True forgotten: Dropout is off
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run=name, project="confounded", store=url):
        for i in range(0, len(x), BATCH):
            step(x[i:i + BATCH], y[i:i + BATCH])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('confounded') / 'runs.db'}"
    per_sample = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    mean = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    onehot = keras.losses.CategoricalCrossentropy(from_logits=True)
    _fit(url)
    _loop(url, "summed", lambda y, logits: tf.reduce_sum(per_sample(y, logits)))
    _loop(url, "mean", mean)
    _loop(url, "onehot", lambda y, logits: onehot(tf.one_hot(y, 10), logits))
    # a kernel regularizer that fit() adds and the loop leaves out, beside the training mode
    _fit(url, "fit-l2", l2=1e-2)
    _loop(url, "no-model-losses", mean, l2=1e-2)
    return url


def _report(url: str, b: str, a: str = "fit"):  # type: ignore[no-untyped-def]
    store = open_store(url)
    try:
        return compare(store, a, b, project="confounded")
    finally:
        store.close()


def test_a_scale_beneath_another_training_mode_is_reported_beside_it(url: str) -> None:
    report = _report(url, "summed")
    text = render_text(report, verbose=True)
    assert report.verdict == "diverged" and report.findings[0].kind == "training_mode_mismatch", text
    scale = [f for f in report.findings if f.kind == "loss_scale"]
    assert len(scale) == 1 and scale[0].severity == "warning", text
    ev = scale[0].evidence
    assert str(ev["matches"]).startswith("the batch size"), text
    # factor: run a's over run b's, measured through the mode's noise; the match is the count itself
    assert ev["larger_loss"] == "b" and ev["matched_value"] == 1 / BATCH and abs(ev["factor"] * BATCH - 1) < 0.3, text


def test_no_scale_is_claimed_when_only_the_training_mode_differs(url: str) -> None:
    report = _report(url, "mean")
    text = render_text(report, verbose=True)
    assert report.verdict == "diverged" and report.findings[0].kind == "training_mode_mismatch", text
    assert not any(f.kind in ("loss_scale", "gradient_scale") for f in report.findings), text


def test_the_loss_for_the_other_label_encoding_is_not_a_cause(url: str) -> None:
    report = _report(url, "onehot")
    text = render_text(report, verbose=True)
    assert report.findings[0].kind == "training_mode_mismatch", text
    loss = [f for f in report.findings if f.kind == "loss_mismatch"]
    assert len(loss) == 1 and loss[0].severity == "info", text
    assert "label encoding" in loss[0].summary, text
    assert not any(f.kind in ("loss_scale", "gradient_scale") for f in report.findings), text


def test_regularization_left_out_beneath_another_training_mode_is_reported(url: str) -> None:
    report = _report(url, "no-model-losses", a="fit-l2")
    text = render_text(report, verbose=True)
    assert report.findings[0].kind == "training_mode_mismatch", text
    reg = [f for f in report.findings if f.kind == "regularization_mismatch"]
    assert len(reg) == 1 and reg[0].severity == "error", text
    assert reg[0].evidence["count_a"] == 1 and reg[0].evidence["count_b"] == 0 and reg[0].evidence["run"] == "b", text
