"""``RunInfo.init_fingerprints``: one fingerprint per inventory variable of its value before
the first step, so two runs can tell which variables started equal. Checked against the
values the test saved itself: equal initial values, equal fingerprints, and only those."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


def _model(lazy: bool) -> Any:
    layers = [keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization(),
              keras.layers.Dropout(0.25), keras.layers.Dense(1)]
    return keras.Sequential(layers if lazy else [keras.Input((8,)), *layers])


def _initial(model: Any) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in model.variables}


def _fingerprints(read_run: Any, name: str) -> dict[str, str | None]:
    detail, _ = read_run(name)
    fps = detail.meta["init_fingerprints"]
    assert len(fps) == len(detail.variables)
    return {v["name"]: fps[v["index"]] for v in detail.variables}


def test_per_variable_fingerprints_follow_the_initial_values(db_url, read_run):
    x, y = data(n=32)
    keras.utils.set_random_seed(3)
    first, copy = _model(lazy=False), _model(lazy=False)
    copy.set_weights(first.get_weights())  # the weights, not the Dropout's seed state
    values = {}
    for name, model in (("first", first), ("copy", copy)):
        values[name] = _initial(model)
        model.compile(keras.optimizers.SGD(0.05), "mse")
        with gradtrace.trace(run=name, store=db_url):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    fa, fb = _fingerprints(read_run, "first"), _fingerprints(read_run, "copy")
    va, vb = values["first"], values["copy"]
    # layer names differ between the two models: pair the variables by position
    assert len(fa) == len(fb) == len(va) == len(vb)
    pairs = list(zip(fa.items(), fb.items(), va.values(), vb.values(), strict=True))
    assert all(x is not None and y is not None for (_, x), (_, y), _, _ in pairs)
    equal = [np.array_equal(a, b) for _, _, a, b in pairs]
    assert [x == y for (_, x), (_, y), _, _ in pairs] == equal
    assert any(equal) and not all(equal)  # the premise: the seed state alone differs
    assert [n for ((n, _), _, _, _), e in zip(pairs, equal, strict=True) if not e] == [
        p for p, v in va.items() if "seed" in p]


def test_a_model_built_by_its_first_traced_call_is_fingerprinted_before_it_trains(db_url, read_run):
    # The same seeded architecture twice: built eagerly before the run, and built by the first
    # call inside a traced tf.function step. Both start from the same values (checked on an
    # untraced probe), so every variable's fingerprint must agree.
    x, y = data(n=32)

    def seeded(build: bool) -> Any:
        keras.utils.set_random_seed(4)
        model = _model(lazy=True)
        if build:
            model(x[:1])  # an inference-mode call: builds without moving any state
        return model

    probe, eager = seeded(build=True), seeded(build=True)
    assert all(np.array_equal(a, b) for a, b in zip(_initial(probe).values(), _initial(eager).values(), strict=True))

    def train(name: str, model: Any) -> None:
        opt = keras.optimizers.SGD(0.05)

        @tf.function
        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

        with gradtrace.trace(run=name, store=db_url):
            for i in range(0, 32, 8):
                step(x[i : i + 8], y[i : i + 8])

    train("eager", eager)
    lazy = seeded(build=False)
    train("lazy", lazy)
    fe, fl = _fingerprints(read_run, "eager"), _fingerprints(read_run, "lazy")
    assert len(fe) == len(fl) == len(probe.variables)
    assert all(fp is not None for fp in [*fe.values(), *fl.values()])
    # the inventories may list the variables in another order (a lazy build meets them later):
    # compare them as sets of (path without the models' numbering, fingerprint)
    def keyed(fps: dict[str, str | None]) -> list[tuple[str, str | None]]:
        return sorted((re.sub(r"_\d+", "", path), fp) for path, fp in fps.items())

    assert keyed(fl) == keyed(fe)
