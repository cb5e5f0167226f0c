"""A variable whose gradient is dropped at some steps: a two-headed model whose tape loop
adds the second head's loss every third step only, so that head's gradients are None at the
other steps (Keras's optimizer skips them). ``gradtrace check`` names the head, how many
steps it missed and the first of them; the run that adds both losses at every step gets no
such finding. Real eager tape loops on digits, traced into a SQLite file."""

from __future__ import annotations

from typing import Any

import pytest

BATCH = 32
STEPS = 9


def _train(url: str, run: str, every: int) -> None:
    import gradtrace
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x[: STEPS * BATCH] / 16).astype("float32"), y[: STEPS * BATCH].astype("int32")
    y2 = (y % 2).astype("float32")[:, None]
    keras.utils.set_random_seed(11)
    inp = keras.Input((64,))
    trunk = keras.layers.Dense(16, activation="relu", name="trunk")(inp)
    model = keras.Model(inp, [keras.layers.Dense(10, name="digit")(trunk),
                              keras.layers.Dense(1, name="parity")(trunk)])
    opt = keras.optimizers.Adam(1e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    with gradtrace.trace(run=run, project="part", store=url):
        for k in range(STEPS):
            sl = slice(k * BATCH, (k + 1) * BATCH)
            with tf.GradientTape() as tape:
                digit, parity = model(x[sl], training=True)
                loss = ce(y[sl], digit)
                if k % every == 0:
                    loss = loss + bce(y2[sl], parity)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))


def _check(url: str, run: str) -> Any:
    from gradtrace.compare import check
    from gradtrace.store import open_store

    with open_store(url) as store:
        return check(store, run, project="part")


@pytest.mark.slow
def test_check_names_a_head_whose_gradient_is_dropped_at_some_steps(tmp_path):
    url = f"sqlite:///{tmp_path / 'part.db'}"
    _train(url, "every-third", every=3)
    _train(url, "every-step", every=1)
    report = _check(url, "every-third")
    (f,) = [f for f in report.findings if f.kind == "missing_gradient"]
    assert f.severity == "warning" and report.verdict == "diverged", report.findings
    missed = STEPS - len(range(0, STEPS, 3))
    assert {r["variable"]: (r["steps_without"], r["steps"], r["first_step"]) for r in f.evidence["variables"]} == {
        "parity/kernel": (missed, STEPS, 1), "parity/bias": (missed, STEPS, 1)}, f.evidence
    assert f.steps == [1] and f"none at {missed} of {STEPS} steps, first at step 1" in f.summary, f.summary
    clean = _check(url, "every-step")
    assert not [f for f in clean.findings if f.kind == "missing_gradient"], clean.findings
    # against the run that trains the head at every step: dropped now and then, not frozen part way
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    with open_store(url) as store:
        pair = compare(store, "every-step", "every-third", project="part")
    top = pair.findings[0]
    assert (top.kind, top.severity, pair.verdict) == ("missing_gradient", "error", "diverged"), pair.findings
    assert {r["run"] for r in top.evidence["variables"]} == {"b"} and top.steps == [1], top.evidence
    assert not [f for f in pair.findings if f.kind == "trainable_mismatch"], pair.findings
    # the label fingerprints differ where one run leaves the parity loss out: the same inputs, said so
    (data,) = [f for f in pair.findings if f.kind == "data_mismatch"]
    assert data.severity == "info" and "same inputs" in data.summary, data
