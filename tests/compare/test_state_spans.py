"""Non-trainable state (BatchNormalization's moving statistics) is read on full steps only, so a
recorded change spans the steps since that run's previous full step, and two runs may choose
different cadences. The same training traced at two cadences is equivalent (state compared only
where both spans agree); a loop that updates the statistics twice per step is still caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import compare, render_text  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

BATCH, STEPS = 16, 24


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:BATCH * STEPS] / 16).astype("float32"), y[:BATCH * STEPS].astype("int32")


def _model():  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(11)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(10)])


def _fit(url: str, every: int) -> None:
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=f"fit-every-{every}", project="spans", store=url, stats_every=every):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _loop(url: str, every: int, forward_passes: int) -> None:
    x, y = _data()
    model = _model()
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        for _ in range(forward_passes - 1):  # e.g. a metric's own forward pass in training mode
            model(xb, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run=f"loop-{forward_passes}-every-{every}", project="spans", store=url, stats_every=every):
        for i in range(0, len(x), BATCH):
            step(x[i:i + BATCH], y[i:i + BATCH])


def _report(url: str, a: str, b: str):  # type: ignore[no-untyped-def]
    store = open_store(url)
    try:
        return compare(store, a, b, project="spans")
    finally:
        store.close()


def test_state_read_at_other_cadences_is_compared_over_equal_spans_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spans.db'}"
    _fit(url, every=4)  # full steps 0, 4, 8, ...: a change at 12 spans 4 steps
    _loop(url, every=3, forward_passes=1)  # 0, 3, 6, ...: a change at 12 spans 3 steps
    _loop(url, every=3, forward_passes=2)  # the statistics move twice per optimizer step
    same = _report(url, "fit-every-4", "loop-1-every-3")
    text = render_text(same, verbose=True)
    assert same.verdict == "equivalent", text
    assert not any(f.kind == "state_mismatch" for f in same.findings), text
    twice = _report(url, "fit-every-4", "loop-2-every-3")
    text = render_text(twice, verbose=True)
    # the extra forward pass is the cause; the statistics' departure at step 0 is its evidence
    assert twice.verdict == "diverged" and twice.findings[0].kind == "training_outside_steps", text
    assert twice.findings[0].evidence["state_departs"]["step"] == 0, text
    assert not any(f.kind == "state_mismatch" for f in twice.findings), text
