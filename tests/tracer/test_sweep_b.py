# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Regressions found by tracing training scripts the tracer had not seen: each test is one
such script, made small, and checks the record against what the script itself knows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _subprocess(script: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRADTRACE_STRICT="1", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server", ".")))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_devices_configured_inside_trace_and_two_mirrored_replicas(tmp_path):
    """A decorated ``main()`` that configures its devices first (two logical CPUs, as
    ``set_memory_growth`` on a GPU) must still be able to: entering ``trace`` initialised
    TensorFlow's context (RuntimeError "cannot be modified after being initialized").
    Then a MirroredStrategy tape loop over both replicas: each replica calls
    apply_gradients, one step is recorded per optimizer step (from replica 0; the other
    replica's graph cannot read the tracer's variables of replica 0's device), its loss and
    gradient the sums over the replicas: the same as one device trained on whole batches."""
    db = tmp_path / "mirrored.db"
    out = _subprocess(f"""
        import numpy as np, tensorflow as tf, keras, gradtrace
        from gradtrace.store import open_store

        @gradtrace.trace(run="mirrored", store="sqlite:///{db}")
        def main():
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
            rng = np.random.default_rng(0)
            x = rng.normal(size=(64, 8)).astype("float32"); y = rng.normal(size=(64, 1)).astype("float32")
            with strategy.scope():
                keras.utils.set_random_seed(1)
                model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                                          keras.layers.Dense(1)])
                opt = keras.optimizers.SGD(0.1)
            ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))

            @tf.function
            def step(xb, yb):
                def replica(xb, yb):
                    with tf.GradientTape() as tape:
                        loss = tf.nn.compute_average_loss(tf.square(model(xb, training=True) - yb)[:, 0],
                                                          global_batch_size=16)
                    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                            model.trainable_variables))
                    return loss
                return strategy.reduce("SUM", strategy.run(replica, args=(xb, yb)), axis=None)

            first = [np.array(w) for w in model.get_weights()]
            losses = [float(step(xb, yb)) for xb, yb in ds]
            return int(opt.iterations.numpy()), losses, first, x[:16], y[:16]

        n, losses, first, x0, y0 = main()
        one = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
        one.set_weights(first)
        with tf.GradientTape() as tape:  # step 0 on one device, the whole batch
            whole = tf.reduce_mean(tf.square(one(x0, training=True) - y0))
        norm0 = float(tf.norm(tape.gradient(whole, one.trainable_variables)[0]))
        s = open_store("sqlite:///{db}")
        r = s.resolve("mirrored")
        d = s.run_detail(r.id)
        steps = sorted(s.steps(r.id), key=lambda q: q["step"])
        assert n == 4 and r.num_steps == n and r.status == "finished", (n, r.num_steps, r.status)
        assert not r.partial, d.meta.get("warnings")
        np.testing.assert_allclose([q["loss"] for q in steps], losses, rtol=1e-6)
        np.testing.assert_allclose(steps[0]["loss"], float(whole), rtol=1e-5)
        np.testing.assert_allclose(steps[0]["vars"][0]["norm"], norm0, rtol=1e-5)
        print("OK")
        """)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def _digits_mlp(seed: int = 3):
    import keras
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data[:160] / 16.0).astype("float32"), d.target[:160].astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(10)])
    return x, y, model


def test_gradient_computed_eagerly_applied_in_a_function(db_url, read_run):
    """``grads = tape.gradient(...)`` eagerly, ``apply_gradients`` in a ``tf.function``: each
    step records the loss the script computed, its batch and the gradient it applied."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y, model = _digits_mlp()
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def apply(grads):
        opt.apply_gradients(zip(grads, model.trainable_variables))

    losses, norms = [], []
    with gradtrace.trace(run="eager-grad-fn-apply", store=db_url, stats_every=1):
        for i in range(0, 160, 32):
            with tf.GradientTape() as tape:
                loss = ce(y[i:i + 32], model(x[i:i + 32], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            apply(grads)
            losses.append(float(loss))
            norms.append(float(tf.norm(grads[0])))
    detail, steps = read_run("eager-grad-fn-apply")
    assert [s["step"] for s in steps] == list(range(5)) and not detail.summary.partial
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    np.testing.assert_allclose([s["vars"][0]["norm"] for s in steps], norms, rtol=1e-5)
    assert all(s["batch_size"] == 32 and s["x_fp"] is not None for s in steps)
    assert steps[0]["loss_info"]["cls"] == "SparseCategoricalCrossentropy"


def test_tape_loop_records_whether_its_dataset_shuffles(db_url, read_run):
    """A tape loop over ``tf.data``: whether the pipeline shuffles (buffer, seeds, reshuffling)
    is in the run's metadata, found once per dataset (fit() records its own shuffle)."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y, model = _digits_mlp()
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=3).batch(32).prefetch(2)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with gradtrace.trace(run="shuffled-tape", store=db_url):
        for ds in (train, train, plain):
            for xb, yb in ds:
                with tf.GradientTape() as tape:
                    loss = ce(yb, model(xb, training=True))
                opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    detail, steps = read_run("shuffled-tape")
    assert len(steps) == 15
    shuffled, unshuffled = detail.meta["extra"]["datasets"]
    assert shuffled["shuffle"] is True and shuffled["buffer_size"] == 64
    assert shuffled["reshuffle_each_iteration"] is True and shuffled["seed"][1] == 3
    assert unshuffled == {"shuffle": False}


def test_step_raising_inside_a_function_is_no_missed_step(db_url, read_run):
    """A step that raises inside its ``tf.function`` (an out-of-range label) after the
    optimizer's counter advanced: the run fails with the exception's type, the completed
    steps are flushed, and no warning claims a step ran untraced."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y, model = _digits_mlp()
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    with pytest.raises(tf.errors.InvalidArgumentError):
        with gradtrace.trace(run="raises", store=db_url) as run:
            for i in range(5):
                yb = y[i * 32:(i + 1) * 32].copy()
                if i == 3:
                    yb[0] = 99
                step(x[i * 32:(i + 1) * 32], yb)
    detail, steps = read_run("raises")
    assert len(steps) == 3 and detail.summary.status == "failed"
    assert "InvalidArgumentError" in (detail.meta.get("error") or "")
    assert not [w for w in run.info.warnings if "without being recorded" in w], run.info.warnings


def test_tf_keras_imported_inside_trace(tmp_path):
    """``import tf_keras`` inside the traced ``main()``: its layers' modes, BatchNormalization's
    moving statistics and the loss details are recorded as when it was imported before."""
    pytest.importorskip("tf_keras")
    db = tmp_path / "late.db"
    out = _subprocess(f"""
        import numpy as np, tensorflow as tf, gradtrace
        from gradtrace.store import open_store

        @gradtrace.trace(run="late", store="sqlite:///{db}")
        def main():
            import tf_keras as K
            K.utils.set_random_seed(1)
            x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
            y = (x[:, 0] > 0).astype("int32")
            m = K.Sequential([K.Input((8,)), K.layers.Dense(8), K.layers.BatchNormalization(),
                              K.layers.Dropout(0.2), K.layers.Dense(2)])
            m.compile(K.optimizers.Adam(0.01), K.losses.SparseCategoricalCrossentropy(from_logits=True))
            m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

        main()
        s = open_store("sqlite:///{db}")
        r = s.resolve("late")
        steps = sorted(s.steps(r.id), key=lambda q: q["step"])
        assert len(steps) == 4, len(steps)
        assert steps[0]["modes"] == {{"batch_normalization": True, "dropout": True}}, steps[0]["modes"]
        assert [st["changed"] for st in steps[0]["state"]] == [True, True], steps[0]["state"]
        assert steps[0]["loss_info"]["cls"] == "SparseCategoricalCrossentropy", steps[0]["loss_info"]
        print("OK")
        """)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def test_training_in_a_worker_thread_started_inside_trace(db_url, read_run):
    """The script trains in a thread it starts inside ``trace`` (and joins): its steps are
    the run's, with their loss and layer modes (a thread started before stays out, see
    test_lifecycle's test_other_threads_are_not_captured)."""
    import threading

    import gradtrace
    import keras
    import tensorflow as tf

    x, y, model = _digits_mlp()
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses: list[float] = []

    def work():
        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        losses.extend(float(step(x[i:i + 32], y[i:i + 32])) for i in range(0, 128, 32))

    with gradtrace.trace(run="worker", store=db_url) as run:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    detail, steps = read_run("worker")
    assert len(steps) == 4 and not detail.summary.partial, run.info.warnings
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-6)
    assert all(list(s["modes"].values()) == [True] for s in steps), steps[0]["modes"]



def test_stale_stashed_loss_is_absent_not_nan(db_url, read_run):
    """Gradients of a last partial batch applied by a tf.function traced for the full ones:
    that step's loss is unknown, and recorded as absent (None), not as NaN (a NaN loss is a
    diverged training)."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y, model = _digits_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def grads_of(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def apply(grads):
        opt.apply_gradients(zip(grads, model.trainable_variables))

    with gradtrace.trace(run="stale-stash", store=db_url):
        for i in range(0, 144, 32):  # 4 batches of 32, then 16 rows
            apply(grads_of(x[i:min(i + 32, 144)], y[i:min(i + 32, 144)]))
    detail, steps = read_run("stale-stash")
    assert len(steps) == 5
    assert all(np.isfinite(s["loss"]) for s in steps[:4])
    assert steps[4]["loss"] is None, steps[4]["loss"]
