"""The statistics cadence: warm-up steps full, later steps every N-th, N chosen from measured costs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import gradtrace  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from gradtrace._stats import PROVISIONAL_EVERY, WARMUP_STEPS  # noqa: E402
from tracer_helpers import assert_grad_stats, data, grads_of, state_rows, var_rows  # noqa: E402

SKETCH = 8
PER_VAR = ("norm", "mean", "min", "max", "nonfinite", "sketch", "applied", "update_norm", "weight_norm")


def small_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(1),
    ])


def tape_step(model: keras.Model, opt: keras.optimizers.Optimizer, skip_last: bool = False):
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        tvars = model.trainable_variables
        grads = tape.gradient(loss, tvars)
        n = len(tvars) - 1 if skip_last else len(tvars)
        opt.apply_gradients(zip(grads[:n], tvars[:n], strict=True))
        return loss

    return step


def is_full(step: dict) -> bool:
    """A full step lists every variable with its statistics; a light one lists only the
    variables without a gradient (none here) and counts the others in ``n_grad``."""
    rows = step["vars"]
    full = bool(rows) and rows[0]["norm"] is not None
    if not full:
        assert rows == [] and step["n_grad"] > 0, step
    for r in rows:
        if r["grad"]:
            assert (r["norm"] is not None) == full, r
    return full


def train_until_chosen(run, step, x, y, max_steps: int = 4000) -> int:
    """Train until the cadence has been chosen from measurements (bounded by steps, not time)."""
    n = 0
    while "stats_every_changes" not in run.info.extra and n < max_steps:
        step(x, y)
        n += 1
    for _ in range(3 * WARMUP_STEPS):  # a few steps under the chosen N
        step(x, y)
    run.flush()
    return int(run.info.extra["stats_every"])


def test_budget_sets_the_cadence_and_light_steps_record_none(db_url, read_run):
    x, y = data()
    chosen = {}
    for name, budget in (("tiny", 1e-4), ("large", 10.0)):
        model = small_model()
        with gradtrace.trace(run=name, store=db_url, overhead_budget=budget, sketch_dim=SKETCH) as run:
            step = tape_step(model, keras.optimizers.SGD(0.01))
            chosen[name] = train_until_chosen(run, step, tf.constant(x), tf.constant(y))
        info, steps = read_run(name)
        extra = info.meta["extra"]  # as stored
        assert extra["stats_cadence"] == "auto" and extra["overhead_budget"] == budget
        assert extra["stats_cost_s"] > 0 and extra["step_time_s"] > 0
        # every step is recorded with its loss; per-variable fields only on full steps
        assert [s["step"] for s in steps] == list(range(len(steps)))
        assert all(np.isfinite(s["loss"]) for s in steps)
        full = [is_full(s) for s in steps]
        assert all(full[:WARMUP_STEPS])
        # the history starts with the provisional N at the warm-up's end, then the measured choices
        history = extra["stats_every_changes"]
        assert history[0] == [WARMUP_STEPS, PROVISIONAL_EVERY] and len(history) >= 2, history
        assert [a for a, _ in history] == sorted(a for a, _ in history)
        allowed = {n for _, n in history}
        for s, f in zip(steps, full, strict=True):
            if s["step"] < WARMUP_STEPS:
                continue
            if f:
                assert any(s["step"] % n == 0 for n in allowed), (s["step"], allowed)
            else:
                for r in s["vars"]:
                    assert all(r.get(k) is None for k in PER_VAR), r
                assert s["state"] == []
    assert chosen["large"] < chosen["tiny"], chosen


def test_full_steps_are_exact(db_url, read_run):
    """Warm-up steps carry the exact statistics of the gradient and of the update applied."""
    x, y = data()
    model = small_model(1)
    opt = keras.optimizers.SGD(0.05)
    step = None
    expect = []
    with gradtrace.trace(run="exact", store=db_url, sketch_dim=SKETCH) as run:
        step = tape_step(model, opt, skip_last=True)
        for _ in range(WARMUP_STEPS):
            g = grads_of(model, x, y)
            w0 = [v.numpy().astype(np.float64) for v in model.trainable_variables]
            step(tf.constant(x), tf.constant(y))
            w1 = [v.numpy().astype(np.float64) for v in model.trainable_variables]
            expect.append((g, w0, w1))
    _, steps = read_run("exact")
    assert len(steps) == WARMUP_STEPS
    tvars = model.trainable_variables
    for rec, (g, w0, w1) in zip(steps, expect, strict=True):
        assert is_full(rec)
        rows = var_rows(rec)
        for i, v in enumerate(tvars):
            r = rows[run.var_index(v)]
            np.testing.assert_allclose(r["weight_norm"], np.linalg.norm(w1[i]), rtol=1e-5)
            np.testing.assert_allclose(r["update_norm"], np.linalg.norm(w1[i] - w0[i]), rtol=1e-4, atol=1e-9)
            # every gradient the tape computed, also the one left out of apply_gradients
            assert_grad_stats(r, g[i], SKETCH)
            if i < len(tvars) - 1:
                assert r["applied"] is True
            else:  # left out of apply_gradients: has its gradient, not applied
                assert r["grad"] is True and r["applied"] is False and r["update_norm"] == 0.0
        # BatchNormalization ran in training mode: its moving statistics changed this step
        moving = [s for s in state_rows(rec).values() if not s["rng"]]
        assert moving and all(s["changed"] for s in moving)


def train_every_step(db_url: str, name: str, model: keras.Model, x, y, steps: int, **options):
    """``steps`` tape steps with statistics on every step; returns the run and each step's
    gradients computed here before the step."""
    with gradtrace.trace(run=name, store=db_url, stats_every=1, sketch_dim=0, **options) as run:
        step = tape_step(model, keras.optimizers.SGD(0.01))
        gs = []
        for _ in range(steps):
            gs.append(grads_of(model, x, y))
            step(tf.constant(x), tf.constant(y))
    return run, gs


def test_every_step_when_asked(db_url, read_run):
    x, y = data()
    model = small_model(2)
    run, gs = train_every_step(db_url, "every", model, x, y, 12)
    assert run.info.extra["stats_every"] == 1 and run.info.extra["stats_cadence"] == "fixed"
    _, steps = read_run("every")
    assert len(steps) == 12 and all(is_full(s) for s in steps)
    rows = var_rows(steps[11])
    for v, g in zip(model.trainable_variables, gs[11], strict=True):
        assert_grad_stats(rows[run.var_index(v)], g, 0)


def test_bad_budget_is_refused(db_url):
    with pytest.raises(ValueError, match="overhead_budget"):
        gradtrace.trace(run="bad", store=db_url, overhead_budget=0).__enter__()


def test_statistics_unfused_when_the_process_runs_short_of_memory_mappings(db_url, read_run, monkeypatch):
    """XLA never unmaps compiled code: a process short of mappings (here: the reserve raised
    above what is free) gets unfused statistics for new shapes, with the same values, said
    once on stderr and in the run's metadata."""
    from gradtrace import _stats

    if _stats.mappings_free() is None:
        pytest.skip("no /proc/self/maps")
    monkeypatch.setattr(_stats, "MAPPINGS_RESERVE", 1.0)
    x, y = data(d=11)  # shapes no other test compiles
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((11,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(1)])
    run, gs = train_every_step(db_url, "unfused", model, x, y, 3, stats_jit=True)
    assert run.info.extra["stats_jit"] is False
    assert any("memory mappings" in w for w in run.info.warnings)
    keys = [key for key in _stats._SHARED if key[0] == ((11, 7), (7,), (7, 1), (1,))]
    assert keys and all(key[-1] is False for key in keys), keys
    _, steps = read_run("unfused")
    assert len(steps) == 3 and all(is_full(s) for s in steps)
    for rec, g in zip(steps, gs, strict=True):
        rows = var_rows(rec)
        for v, gv in zip(model.trainable_variables, g, strict=True):
            assert_grad_stats(rows[run.var_index(v)], gv, 0)
