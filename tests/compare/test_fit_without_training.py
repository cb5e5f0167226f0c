"""fit() of a subclassed Keras 3 model whose ``call`` takes no ``training`` argument calls it
without one (keras/src/backend/tensorflow/trainer.py, ``train_step``), so its Dropout never
drops: the run is the one in inference mode, and the fix is the model's signature, not the
tape. A custom ``train_step`` calling ``self(x)`` is named as such, with its own fix, under Keras 3
and tf-keras alike. A tape loop that forgets ``training=True`` keeps the usual fix. Real trainings
on digits."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import check, compare, render_text  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

BATCH, STEPS = 32, 6


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:BATCH * STEPS] / 16).astype("float32"), y[:BATCH * STEPS].astype("int32")


def _model(takes_training: bool):  # type: ignore[no-untyped-def]
    class WithTraining(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.drop = keras.layers.Dropout(0.3)
            self.head = keras.layers.Dense(10)

        def call(self, x, training=None):  # type: ignore[no-untyped-def]
            return self.head(self.drop(self.hidden(x), training=training))

    class WithoutTraining(WithTraining):
        def call(self, x):  # type: ignore[no-untyped-def, override]
            return self.head(self.drop(self.hidden(x)))

    keras.utils.set_random_seed(31)
    model = WithTraining() if takes_training else WithoutTraining()
    model(np.zeros((1, 64), "float32"))
    return model


def _fit(url: str, name: str, takes_training: bool) -> None:
    x, y = _data()
    model = _model(takes_training)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=name, project="fitmode", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _fit_custom_step(url: str, name: str) -> None:
    """A Sequential model (its call takes `training`) fit() with a train_step that calls `self(x)`."""

    class Stepped(keras.Sequential):
        def train_step(self, data):  # type: ignore[no-untyped-def]
            xb, yb = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=xb, y=yb, y_pred=self(xb))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
            return {"loss": loss}

    x, y = _data()
    keras.utils.set_random_seed(31)
    model = Stepped([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(0.3),
                     keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=name, project="fitmode", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _loop(url: str, name: str, training: bool | None) -> None:
    x, y = _data()
    model = _model(True)
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=training))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run=name, project="fitmode", store=url):
        for i in range(0, len(x), BATCH):
            step(x[i:i + BATCH], y[i:i + BATCH])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('fitmode') / 'runs.db'}"
    _fit(url, "fit-no-training-arg", takes_training=False)
    _fit(url, "fit", takes_training=True)
    _loop(url, "loop", training=True)
    _loop(url, "loop-no-flag", training=None)
    _fit_custom_step(url, "custom-step-no-flag")
    return url


def test_fit_of_a_model_without_training_argument_is_the_inference_run(url: str) -> None:
    with open_store(url) as store:
        report = compare(store, "fit-no-training-arg", "loop", project="fitmode")
        single = check(store, "fit-no-training-arg", project="fitmode")
    text = render_text(report, verbose=True)
    top = report.findings[0]
    assert top.kind == "training_mode_mismatch" and top.evidence["inference_run"] == "a", text
    assert top.evidence.get("fit_without_training") is True and "`training=None` argument" in str(top.fix), text
    text = render_text(single, verbose=True)
    mode = next(f for f in single.findings if f.kind == "training_mode_mismatch")
    assert mode.severity == "warning" and mode.evidence.get("fit_without_training") is True, text


def test_a_loop_without_the_flag_keeps_the_tape_fix(url: str) -> None:
    with open_store(url) as store:
        report = compare(store, "fit", "loop-no-flag", project="fitmode")
    text = render_text(report, verbose=True)
    top = report.findings[0]
    assert top.kind == "training_mode_mismatch" and top.evidence["inference_run"] == "b", text
    assert "fit_without_training" not in top.evidence and "inside the tape" in str(top.fix), text


def test_a_custom_train_step_without_the_flag_is_named(url: str) -> None:
    with open_store(url) as store:
        report = compare(store, "loop", "custom-step-no-flag", project="fitmode")
        single = check(store, "custom-step-no-flag", project="fitmode")
    text = render_text(report, verbose=True)
    top = report.findings[0]
    assert top.kind == "training_mode_mismatch" and top.evidence["inference_run"] == "b", text
    assert top.evidence.get("fit_without_training") is True, text
    assert "custom `train_step`" in top.summary and "self(x, training=True)" in str(top.fix), text
    mode = next(f for f in single.findings if f.kind == "training_mode_mismatch")
    assert "custom `train_step`" in mode.summary and "self(x, training=True)" in str(mode.fix), render_text(single)
