"""Several fit() calls in one run (train the head on a frozen base, unfreeze, recompile, train
again): ``RunInfo.fit_calls`` keeps each call's arguments and the step it started at;
``RunInfo.fit`` stays the last call's. The comparator reads every call."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data  # noqa: E402


def test_each_fit_call_is_kept_with_the_step_it_started_at(db_url, read_run):
    from gradtrace.compare.detect_pair import _lr_callbacks, _weighted
    from gradtrace.compare.reader import read_run as read_data
    from gradtrace.store import open_store

    x, y = data(n=48)
    keras.utils.set_random_seed(5)
    base = keras.layers.Dense(8, activation="relu")
    model = keras.Sequential([keras.Input((8,)), base, keras.layers.Dense(1)])
    base.trainable = False
    model.compile(keras.optimizers.SGD(0.05), "mse")
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    with gradtrace.trace(run="two-fits", store=db_url, stats_every=1):
        model.fit(x, y, batch_size=8, epochs=2, shuffle=True, callbacks=[schedule], verbose=0)
        first_steps = int(model.optimizer.iterations.numpy())
        base.trainable = True
        model.compile(keras.optimizers.SGD(0.01), "mae", metrics=["mse"])
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  sample_weight=np.linspace(0.5, 1.5, len(x)).astype("float32"))
        second_steps = int(model.optimizer.iterations.numpy())
    detail, steps = read_run("two-fits")
    assert len(steps) == first_steps + second_steps == 12 + 3
    calls = detail.meta["fit_calls"]
    assert [c["first_step"] for c in calls] == [0, first_steps]
    assert [(c["epochs"], c["batch_size"], c["shuffle"]) for c in calls] == [(2, 8, True), (1, 16, False)]
    assert calls[0]["callbacks"] == ["LearningRateScheduler"] and calls[1]["callbacks"] == []
    assert [c["sample_weight"] for c in calls] == [False, True]
    assert detail.meta["fit"] == {k: v for k, v in calls[1].items() if k not in ("first_step", "loss", "metrics")}
    # each call with the compile() it trained with; RunInfo.loss/metrics are the latest
    assert [c["loss"]["class"] for c in calls] == ["MeanSquaredError", "MeanAbsoluteError"], calls
    assert "metrics" not in calls[0] and [m["class"] for m in calls[1]["metrics"]] == ["MeanSquaredError"]
    assert detail.meta["loss"] == calls[1]["loss"] and detail.meta["metrics"] == calls[1]["metrics"]
    # the base was frozen at registration and unfrozen before the second call
    inventory = {v["index"]: v for v in detail.variables}
    changes = detail.meta["trainable_changes"]
    assert [(c["at"], c["step"], c["frozen"]) for c in changes] == [("fit", first_steps, [])], changes
    base_paths = {v.path for v in base.weights}
    assert {inventory[i]["name"] for i in changes[0]["trainable"]} == base_paths, (changes, inventory)
    assert not any(inventory[i]["trainable"] for i in changes[0]["trainable"])
    # measured as state while frozen, as trained weights once unfrozen (not both)
    unfrozen = set(changes[0]["trainable"])
    for k, st in enumerate(steps):
        state = {x["v"] for x in st["state"]} & unfrozen
        grads = {x["v"] for x in st["vars"] if x["grad"]} & unfrozen
        assert (state, grads) == ((set(), unfrozen) if k >= first_steps else (unfrozen, set())), (k, st)
    # the comparator sees the first call's callback and the second call's weights
    with open_store(db_url) as store:
        run = read_data(store, "two-fits")
    assert _lr_callbacks(run) == ["LearningRateScheduler"]
    assert _weighted(run).get("sample_weight") is True
