"""Layers run in training mode outside the optimizer steps: a validation pass
``model(x_val, training=True)`` each epoch (BatchNormalization folds the validation batches into
its moving statistics, Dropout drops units of the predictions), or a BatchNormalization hard-wired
to ``training=True`` in a tf-keras functional model that evaluate() and predict() then run in
training mode. Every step agrees with a correct run; the evaluated models differ. Real trainings
on digits, into a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import check, compare, render_text  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BATCH, STEPS, EPOCHS = 32, 4, 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = BATCH * (STEPS + 1)
    return (x[:n] / 16).astype("float32"), y[:n].astype("int32")


def _model():  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(41)
    return keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(32), keras.layers.BatchNormalization(name="bn"),
        keras.layers.Activation("relu"), keras.layers.Dropout(0.2, name="drop"), keras.layers.Dense(10)])


def _fit(url: str) -> None:
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run="fit", project="outside", store=url):
        model.fit(x[:-BATCH], y[:-BATCH], batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  validation_data=(x[-BATCH:], y[-BATCH:]))


def _loop(url: str, name: str, val_training: bool) -> None:
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run=name, project="outside", store=url):
        for _ in range(EPOCHS):
            for i in range(STEPS):
                step(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH])
            ce(y[-BATCH:], model(x[-BATCH:], training=val_training))  # the epoch's validation


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('outside') / 'runs.db'}"
    _fit(url)
    _loop(url, "loop", val_training=False)
    _loop(url, "loop-val-training", val_training=True)
    return url


def test_tracer_counts_the_eager_validation_calls(url: str) -> None:
    store = open_store(url)
    try:
        bad = store.run_detail(store.resolve("loop-val-training", "outside").id).meta
        good = store.run_detail(store.resolve("loop", "outside").id).meta
        fit = store.run_detail(store.resolve("fit", "outside").id).meta
    finally:
        store.close()
    rows = {r["layer"]: r for r in bad["training_outside_steps"]}
    assert {r["calls"] for r in rows.values()} == {EPOCHS}, rows
    assert {r["how"] for r in rows.values()} == {"eager"}
    assert sorted(rows) == ["bn", "drop"]
    assert rows["bn"]["first_step"] == STEPS  # after the first epoch's steps
    assert bad["layer_models"] == {"bn": 0, "drop": 0}  # the tracked layers' root model, the only one
    # fit()'s validation runs with training=False; the correct loop's too: nothing outside.
    assert not good.get("training_outside_steps") and not fit.get("training_outside_steps")


def test_compare_names_the_validation_in_training_mode(url: str) -> None:
    store = open_store(url)
    try:
        same = compare(store, "fit", "loop", project="outside")
        bad = compare(store, "fit", "loop-val-training", project="outside")
    finally:
        store.close()
    assert same.verdict == "equivalent", render_text(same)
    assert "training_outside_steps" not in {f.kind for f in same.findings}
    f = bad.findings[0]
    assert f.kind == "training_outside_steps", render_text(bad)
    assert "run b ran BatchNormalization 'bn' 3 time(s)" in f.summary, f.summary
    assert "moving statistics" in f.summary and "Run a's layers never did" in f.summary
    assert f.steps[0] == STEPS and "training=False" in (f.fix or "")
    assert bad.verdict == "diverged" and bad.first_divergent_step == STEPS
    # The validation's Dropout draws move run b's generator: its next steps' masks differ. That
    # departure is this finding's evidence, not a divergence of unknown cause.
    assert f.severity == "error" and f.evidence["random_layers"] == ["drop"]
    assert [e["kind"] for e in f.evidence["step_evidence"]] == ["divergence"]
    assert "divergence" not in {g.kind for g in bad.findings}, render_text(bad)


def test_check_warns_about_one_run(url: str) -> None:
    store = open_store(url)
    try:
        bad = check(store, "loop-val-training", project="outside")
        good = check(store, "loop", project="outside")
    finally:
        store.close()
    assert [f.kind for f in bad.findings if f.kind == "training_outside_steps"], render_text(bad)
    f = next(f for f in bad.findings if f.kind == "training_outside_steps")
    assert f.layers[0] == "bn"  # the layer with moving statistics first
    assert "training_outside_steps" not in {f.kind for f in good.findings}


def test_tf_keras_hard_wired_training_in_evaluate_and_predict_is_counted(tmp_path: Path) -> None:
    """tf-keras keeps ``training=True`` set in a functional model's layer call when evaluate()
    and predict() run it (Keras 3 lets the outer call's ``training=False`` win). The counter in
    their graphs counts each batch; fit()'s own steps are under a tape and do not count, and a
    SavedModel export (which traces the layers' calls again) neither counts nor fails."""
    pytest.importorskip("tf_keras")
    db = tmp_path / "legacy.db"
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf, gradtrace
        from gradtrace.compare import check
        from gradtrace.store import open_store
        x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
        for name, hard in (("hard", True), ("plain", False)):
            tf.keras.utils.set_random_seed(1)
            i = tf.keras.Input((8,)); h = tf.keras.layers.Dense(8)(i)
            h = tf.keras.layers.BatchNormalization()(h, training=True if hard else None)
            m = tf.keras.Model(i, tf.keras.layers.Dense(2)(h))
            m.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            with gradtrace.trace(run=name, store="sqlite:///{db}"):
                m.fit(x, y, batch_size=16, epochs=1, verbose=0)
                m.evaluate(x, y, batch_size=16, verbose=0)
                m.predict(x[:32], batch_size=16, verbose=0)
                m.save("{tmp_path}/saved-" + name)  # a SavedModel traces the calls: no counter of ours in it
        s = open_store("sqlite:///{db}")
        meta = s.run_detail(s.resolve("hard").id).meta
        assert [(r["calls"], r["how"]) for r in meta["training_outside_steps"]] == [(6, "graph")], meta
        assert not s.run_detail(s.resolve("plain").id).meta.get("training_outside_steps")
        assert "training_outside_steps" in [f.kind for f in check(s, "hard").findings]
        print("OK")
        """
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", GRADTRACE_STRICT="1",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server", ".")))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
