"""Run lifecycle: numerics untouched, failures recorded, nesting, restoration, threads, flavours."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from tracer_helpers import data, var_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def fingerprint_reference(a: np.ndarray) -> list[float]:
    """gradtrace._probes.fingerprint on the host: sum, sum of squares, fixed projection, count."""
    v = np.asarray(a, np.float64).reshape(-1)
    w = ((np.arange(v.size) * 7919 + 13) % 10007) / 10007.0 - 0.5
    return [v.sum(), (v * v).sum(), (v * w).sum(), float(v.size)]


def model_and_opt(seed: int = 0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
         keras.layers.Dropout(0.3), keras.layers.Dense(1)]
    )
    return m, keras.optimizers.Adam(0.01)


def tape_train(model, opt, x, y, steps: int, fn: bool = False):
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))
        return loss

    f = tf.function(step) if fn else step
    for _ in range(steps):
        f(x, y)


@pytest.mark.parametrize("path", ["tape-fn", "fit-xla"])
def test_traced_and_untraced_weights_are_bit_identical(path, db_url):
    x, y = data(n=32)
    finals = []
    for traced in (False, True):
        model, opt = model_and_opt(7)
        keras.utils.set_random_seed(11)
        if traced:
            scope = gradtrace.trace(run=f"bits-{path}", store=db_url)
        else:
            scope = _Null()
        with scope:
            if path == "tape-fn":
                tape_train(model, opt, x, y, 5, fn=True)
            else:
                model.compile(opt, "mse", jit_compile=True)
                model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        finals.append([v.numpy() for v in model.weights])
    for a, b in zip(*finals, strict=False):
        assert np.array_equal(a, b)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_exception_marks_run_failed_and_keeps_records(db_url, read_run):
    x, y = data()
    model, opt = model_and_opt()

    @gradtrace.trace(run="boom", store=db_url)
    def train():
        tape_train(model, opt, x, y, 3)
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged") as info:
        train()
    assert info.traceback[-1].name == "train"  # the user's own traceback, untouched
    detail, steps = read_run("boom")
    assert detail.summary.status == "failed"
    assert detail.meta["error"].startswith("RuntimeError")
    assert [s["step"] for s in steps] == [0, 1, 2]


def test_keyboard_interrupt_is_recorded(db_url, read_run):
    x, y = data()
    model, opt = model_and_opt()
    with pytest.raises(KeyboardInterrupt):
        with gradtrace.trace(run="ctrl-c", store=db_url):
            tape_train(model, opt, x, y, 2)
            raise KeyboardInterrupt
    detail, steps = read_run("ctrl-c")
    assert detail.summary.status == "failed" and detail.meta["error"] == "KeyboardInterrupt"
    assert len(steps) == 2


def _patched_attributes():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    from keras.src.optimizers.base_optimizer import BaseOptimizer
    from keras.src.optimizers.loss_scale_optimizer import LossScaleOptimizer

    return {
        "gradient": tf.GradientTape.__dict__["gradient"],
        "apply": BaseOptimizer.__dict__["apply"],
        "lso.apply": LossScaleOptimizer.__dict__["apply"],
        "adam.apply": keras.optimizers.Adam.__dict__.get("apply", "missing"),
        "make_train_function": TensorFlowTrainer.__dict__["make_train_function"],
        "tape.__enter__": tf.GradientTape.__dict__["__enter__"],
        "clip_by_global_norm": vars(tf)["clip_by_global_norm"],
        "clip_by_norm": vars(tf)["clip_by_norm"],
    }


def test_nested_scopes_and_exact_restoration(db_url, read_run):
    x, y = data()
    model, opt = model_and_opt()
    before = _patched_attributes()
    with gradtrace.trace(run="outer", store=db_url) as outer:
        tape_train(model, opt, x, y, 2)
        inside = _patched_attributes()
        assert inside["gradient"] is not before["gradient"]
        assert inside["clip_by_global_norm"] is not before["clip_by_global_norm"]
        with gradtrace.trace(run="inner", store=db_url) as inner:
            tape_train(model, opt, x, y, 3)
        assert _patched_attributes() == inside  # the inner exit did not unpatch the outer
        tape_train(model, opt, x, y, 1)
    assert _patched_attributes() == before
    assert "apply" not in keras.optimizers.Adam.__dict__
    _, outer_steps = read_run("outer")
    _, inner_steps = read_run("inner")
    assert len(outer_steps) == 3 and len(inner_steps) == 3
    assert outer.info.status == inner.info.status == "finished"
    # after the runs, training is not traced any more
    tape_train(model, opt, x, y, 1)
    _, outer_again = read_run("outer")
    assert len(outer_again) == 3


def _fit_mlp(seed: int, x: np.ndarray, y: np.ndarray) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(6, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    return model


def test_nested_traces_around_fit_keep_every_op_callback_working(db_url, read_run):
    """Each run watches the loss through an op callback, and TensorFlow hands a callback's
    return value to the next one as the op's outputs (op_callbacks.invoke_op_callbacks):
    nested runs, and a callback of the user's registered beside them, get the real outputs.
    Steps of the inner run are the outer run's too: no "ran without being recorded"."""
    from tensorflow.python.framework import op_callbacks

    x, y = data()
    got_none = []

    def users_callback(op_type, inputs, attrs, outputs, op_name=None, graph=None):  # noqa: ANN001
        got_none.append(outputs is None)

    with gradtrace.trace(run="outer-fit", store=db_url) as outer:
        _fit_mlp(1, x, y)
        with gradtrace.trace(run="inner-fit", store=db_url) as inner:
            op_callbacks.add_op_callback(users_callback)
            try:
                _fit_mlp(2, x, y)
            finally:
                op_callbacks.remove_op_callback(users_callback)
        inner_model = _fit_mlp(3, x, y)  # the outer run records again after the inner one ends
    assert got_none and not any(got_none)
    assert outer.nested == [] and inner.parent is None  # a finished nested run is not kept alive
    for run in (outer, inner):
        assert not run.info.partial, run.info.warnings
        assert run.info.warnings == []
    assert len(read_run("outer-fit")[1]) == 4 and len(read_run("inner-fit")[1]) == 2
    assert int(inner_model.optimizer.iterations) == 2


def test_check_numerics_sees_the_training_and_not_the_tracer(db_url, read_run):
    """``tf.debugging.enable_check_numerics()`` is an op callback too: the tracer's own ops
    (NaN stands for "not recorded" in a step's row) are hidden from it, so a healthy traced
    training runs, while a NaN the training itself makes is still caught."""
    x, y = data()
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)

    @tf.function
    def step(xb, yb, shift):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb)) + tf.math.log(shift)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    tf.debugging.enable_check_numerics()
    try:
        with gradtrace.trace(run="checked", store=db_url, stats_every=2) as run:
            for _ in range(3):
                step(x, y, tf.constant(1.0))
            with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
                step(x, y, tf.constant(-1.0))  # log(-1): the training's own NaN
            tape_updates = int(opt.iterations)  # the aborted call may have applied its update
            model.compile(keras.optimizers.SGD(0.01), "mse")
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    finally:
        tf.debugging.disable_check_numerics()
    assert not run.info.partial, run.info.warnings
    _, steps = read_run("checked")
    tape, fit = steps[:-2], steps[-2:]
    assert [s["iterations"] for s in fit] == [1, 2]
    assert all(np.isfinite(s["loss"]) for s in tape[:3] + fit)
    # The step check_numerics aborted is recorded when its row was written before the abort.
    assert len(tape) in (3, tape_updates)
    assert all(np.isnan(s["loss"]) for s in tape[3:])


def test_saved_model_of_a_training_module_saved_inside_trace(db_url, read_run, tmp_path):
    """``tf.saved_model.save`` of a module whose training functions were traced (and so
    instrumented) inside ``trace``: the artifact holds plain graphs and none of the tracer's
    variables, loads and trains; the run goes on recording after the save."""
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])

    class Trainer(tf.Module):
        def __init__(self):
            super().__init__()
            self.model, self.opt = model, keras.optimizers.SGD(0.01)

        def _step(self, x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self.model(x, training=True) - y))
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.opt.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
            return loss

        # autograph=False: AutoGraph's conversion cache once handed this test-local class's
        # converted __init__ for _step late in a long test process (not what is tested here).
        @tf.function(input_signature=[tf.TensorSpec([None, 8]), tf.TensorSpec([None, 1])], autograph=False)
        def train(self, x, y):
            return self._step(x, y)

        @tf.function(autograph=False)  # no signature: saved with the shapes it was traced for
        def train_any(self, x, y):
            return self._step(x, y)

    x, y = data()
    trainer = Trainer()
    with gradtrace.trace(run="saving", store=db_url) as run:
        trainer.train(x, y)
        trainer.train_any(x, y)
        tf.saved_model.save(trainer, str(tmp_path / "sm"))
        trainer.train(x, y)
        trainer.train_any(x, y)
    assert not run.info.partial, run.info.warnings
    assert len(read_run("saving")[1]) == 4  # recording goes on after the save
    saved = [name for name, _ in tf.train.list_variables(str(tmp_path / "sm" / "variables" / "variables"))]
    assert saved and not [n for n in saved if "gradtrace" in n], saved
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    losses = [float(loaded.train(tf.constant(x), tf.constant(y))),
              float(loaded.train_any(tf.constant(x), tf.constant(y))),
              float(loaded.train(tf.constant(x), tf.constant(y)))]
    assert all(np.isfinite(losses)) and losses[2] < losses[0]  # it trains


def test_other_threads_are_not_captured(db_url, read_run):
    x, y = data()
    m1, o1 = model_and_opt(1)
    m2, o2 = model_and_opt(2)
    started, done = threading.Event(), threading.Event()

    def other():
        started.wait(30)
        tape_train(m2, o2, x, y, 4)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with gradtrace.trace(run="mine", store=db_url) as run:
        started.set()
        tape_train(m1, o1, x, y, 2)
        assert done.wait(60)
    t.join()
    _, steps = read_run("mine")
    assert len(steps) == 2
    mine = {run.var_index(v) for v in m1.trainable_variables}
    assert all(set(var_rows(s)) <= mine | {v["v"] for v in s["vars"] if not v["grad"]} for s in steps)
    assert all(v["grad"] for s in steps for v in s["vars"] if v["v"] in mine)


def test_function_traced_before_entering_is_reported(db_url, read_run):
    x, y = data()
    model, opt = model_and_opt()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=False))

    step(x, y)  # traced without hooks
    with gradtrace.trace(run="stale", store=db_url) as run:
        for _ in range(3):
            step(x, y)
    assert any("without being recorded" in w for w in run.info.warnings)
    detail, steps = read_run("stale")
    assert steps == []
    assert any("3 steps" in w for w in detail.meta["warnings"])


def test_tf_keras_in_process(db_url, read_run):
    tf_keras = pytest.importorskip("tf_keras")
    x, y = data(n=16)
    tf.random.set_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", input_shape=(8,)),
                                 tf_keras.layers.Dense(1)])
    model.compile(tf_keras.optimizers.SGD(0.05), "mse")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - model(x, training=True)))
    g0 = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    with gradtrace.trace(run="tfk", store=db_url) as run:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    detail, steps = read_run("tfk")
    assert len(steps) == 3
    assert detail.summary.keras_flavour == "tf_keras"
    rows = var_rows(steps[0])
    for v, g in zip(model.trainable_variables, g0, strict=False):
        np.testing.assert_allclose(rows[run.var_index(v)]["norm"], np.linalg.norm(g), rtol=1e-5)
    np.testing.assert_allclose(steps[0]["lr"], 0.05, rtol=1e-6)
    assert [s["iterations"] for s in steps] == [1, 2, 3]
    # fit's batch, seen in tf-keras' train_step: inputs, labels and batch size
    for s in steps:
        assert s["batch_size"] == 16
        np.testing.assert_allclose(s["x_fp"], fingerprint_reference(x), rtol=1e-5)
        np.testing.assert_allclose(s["y_fp"], fingerprint_reference(y), rtol=1e-5)


def test_legacy_keras_env_subprocess(tmp_path):
    """TF_USE_LEGACY_KERAS=1: tf.keras is tf-keras; fit and a tape loop both recorded."""
    pytest.importorskip("tf_keras")
    db = tmp_path / "legacy.db"
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf, gradtrace
        from gradtrace.store import open_store
        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
        x = np.random.rand(16, 8).astype("float32"); y = np.random.rand(16, 1).astype("float32")
        m = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(8,))])
        m.compile(tf.keras.optimizers.Adam(0.01), "mse")
        with gradtrace.trace(run="legacy-fit", store="sqlite:///{db}"):
            m.fit(x, y, batch_size=8, epochs=1, verbose=0)
        opt = tf.keras.optimizers.legacy.SGD(0.1)
        with gradtrace.trace(run="legacy-tape", store="sqlite:///{db}"):
            for _ in range(2):
                with tf.GradientTape() as t:
                    loss = tf.reduce_mean((m(x) - y) ** 2)
                opt.apply_gradients(zip(t.gradient(loss, m.trainable_variables), m.trainable_variables))
        s = open_store("sqlite:///{db}")
        for name, n in (("legacy-fit", 2), ("legacy-tape", 2)):
            r = s.resolve(name)
            steps = list(s.steps(r.id))
            assert len(steps) == n and r.status == "finished", (name, len(steps), r.status)
            assert all(v["grad"] and v["norm"] > 0 for st in steps for v in st["vars"])
        print("OK")
        """
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", GRADTRACE_STRICT="1",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server", ".")))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts Linux memory mappings")
@pytest.mark.parametrize("every", [1, None], ids=["every-step", "auto-cadence"])
def test_many_traced_runs_compile_the_statistics_once(tmp_path, every):
    """XLA never frees a compiled function and its code stays mapped: a statistics function
    per run made a process abort after a few hundred traced runs (vm.max_map_count). Runs
    of the same shapes share one function: traced once, compiled once, no mappings added
    (with the automatic cadence, its timing calls the same compiled function)."""
    db = tmp_path / "many.db"
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf, keras, gradtrace
        from gradtrace import _stats
        from gradtrace.store import open_store

        def maps():
            with open("/proc/self/maps") as f:
                return sum(1 for _ in f)

        x = np.random.rand(16, 8).astype("float32"); y = np.random.rand(16, 1).astype("float32")
        counts = []
        for r in range(4):
            m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(5, activation="relu"),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
            opt = keras.optimizers.Adam(0.01)

            @tf.function
            def step(xb, yb):
                with tf.GradientTape() as t:
                    loss = tf.reduce_mean((m(xb, training=True) - yb) ** 2)
                opt.apply_gradients(zip(t.gradient(loss, m.trainable_variables), m.trainable_variables))

            with gradtrace.trace(run=f"r{{r}}", store="sqlite:///{db}", stats_every={every}, stats_jit=True):
                for _ in range(3):
                    step(x, y)
            counts.append(maps())
        s = open_store("sqlite:///{db}")
        for r in range(4):
            steps = list(s.steps(s.resolve(f"r{{r}}").id))
            assert len(steps) == 3 and all(v["norm"] > 0 for st in steps for v in st["vars"]), r
        fns = [f for key, (f, _, _) in _stats._SHARED.items() if key[-1]]
        print("TRACES", [f.experimental_get_tracing_count() for f in fns])
        print("MAPS", counts)
        """
    )
    env = dict(os.environ, GRADTRACE_STRICT="1",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server", ".")))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line[:5] in ("TRACE", "MAPS "))
    assert eval(lines["TRACES"]) == [1], out.stdout  # one shape signature, traced once
    counts = eval(lines["MAPS"])
    # One compile of these statistics maps ~100 regions; later runs must add none of them.
    assert counts[-1] - counts[0] < 30, counts


def test_a_tf_function_traced_in_one_run_is_recorded_in_the_next_and_plain_after(db_url, read_run):
    """A notebook: one tf.function, two trace cells. Its graph instrumented by the first run
    is dropped when that run ends, so a call outside trace writes nothing into the finished
    run's ring, and the second run records its steps although the function was called
    (plain) in between (it used to record none)."""
    x, y = data(n=16)
    model, opt = model_and_opt(3)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                strict=True))

    with gradtrace.trace(run="cell1", store=db_url) as first:
        for _ in range(3):
            step(x, y)
    rings = first._poller.rings
    written = [int(r.count.numpy()) for r in rings]
    assert written == [3]
    step(x, y)  # outside any trace: the plain graph again
    assert [int(r.count.numpy()) for r in rings] == written
    with gradtrace.trace(run="cell2", store=db_url) as second:
        for _ in range(4):
            step(x, y)
    assert not any("without being recorded" in w for w in second.info.warnings), second.info.warnings
    _, steps = read_run("cell2")
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert all(s["loss"] is not None and s["n_grad"] == 4 for s in steps)


def test_clear_session_between_traced_runs(db_url, read_run):
    """keras.backend.clear_session() (and the garbage collection it runs) between two runs."""
    x, y = data(n=16)
    losses = []
    for r in range(2):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="tanh"),
                                  keras.layers.Dense(1)])
        ref = float(tf.reduce_mean(tf.square(y[:8] - model(x[:8]))))
        model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=True)
        with gradtrace.trace(run=f"cs-{r}", store=db_url) as run:
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        assert not run.info.partial and run.info.warnings == []
        _, steps = read_run(f"cs-{r}")
        assert len(steps) == 2 and all(v["norm"] > 0 for v in steps[0]["vars"])
        np.testing.assert_allclose(steps[0]["loss"], ref, rtol=1e-5)
        losses.append(steps[0]["loss"])
    assert losses[0] == losses[1]


def test_default_ring_keeps_up_with_a_fast_tf_function_loop(db_url, read_run):
    """3000 steps of a tiny model (a fraction of a millisecond each): none lost, all recorded."""
    import time

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)
    x, y = tf.constant(np.ones((4, 3), "float32")), tf.constant(np.zeros((4, 1), "float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    with gradtrace.trace(run="fast", store=db_url) as run:
        step()
        time.sleep(0.3)  # the poller slows down while idle; the burst must still be read
        for _ in range(2999):
            step()
    assert run.ring_size is None  # sized from the step vector's width
    assert [r.size for r in run._poller.rings] == [run.ring_rows(r.layout.width) for r in run._poller.rings]
    assert run.info.lost == {} and not run.info.warnings
    _, steps = read_run("fast")
    assert [s["step"] for s in steps] == list(range(3000))
    assert [s["iterations"] for s in steps] == list(range(1, 3001))
