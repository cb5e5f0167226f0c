# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A fourth sweep: training scripts the tracer had not seen (scripts_d), each trained untraced
and traced on the same seed and checked by check_c.check: bit-identical weights, nothing new
on stderr, one record per optimizer step, the script's own losses, gradient norms, layer
modes, state changes, applied flags and the run's metadata.

Every script runs on Keras 3, several scripts per fresh process (check_d, see groups.Groups):
XLA never unmaps the code it compiles, and these models in the pytest process held gigabytes and
ran it towards vm.max_map_count. The MirroredStrategy scripts need two logical CPU devices
(configured before TensorFlow initialises) and a process each (TensorFlow's collectives of a
second MirroredStrategy model in one process fail, untraced too). tf-keras runs a chosen
subset, several scripts per fresh process, to keep the sweep's time small."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from . import groups
from . import scripts_d as sd

_ALL = [f for n, f in inspect.getmembers(sd, inspect.isfunction)
        if f.__module__ == sd.__name__ and not n.startswith("_") and n != "two_cpus"]
MIRRORED = [f.__name__ for f in _ALL if f.__name__.startswith("mirrored_")]
SCRIPTS = [f for f in _ALL if f.__name__ not in MIRRORED]

# tf-keras: the scripts where it differs most from Keras 3 (its optimizers, LossScaleOptimizer,
# freezing, train_step API, Sequence, stateful RNN and its recurrent loop, mixed precision,
# jacobians and vectorized_map), in two fresh processes, each led by one MirroredStrategy script
TF_KERAS_GROUPS = [
    ["mirrored_strategy_run_custom_loop", "loss_scale_optimizer_eager_overflow", "nested_models_partly_frozen_fit",
     "train_step_compute_loss_and_metrics", "optimizer_apply_changing_subsets", "stateful_lstm_eager",
     "mean_teacher_ema_assign"],
    ["mirrored_fit_two_replicas", "callback_sets_lr_every_batch_fit", "py_dataset_fit",
     "per_example_clipped_gradients_jacobian", "per_example_grads_vectorized_map", "mixed_bfloat16_tape",
     "fit_twice_recompiled_other_optimizer", "custom_rnn_cell_training_branch_tape"],
]

# scripts left out of the tf-keras groups, with the reason
NOT_ON_TF_KERAS: dict[str, str] = {
    "time_distributed_embedding_xla_tape":
        "tf-keras Dropout under jit_compile draws other masks when the script runs a second time in "
        "one process (untraced too): the groups run untraced and traced in one process",
    "callback_freezes_block_mid_fit":
        "tf-keras warns on stderr when a callback is slow against the batch (its own timing, "
        "untraced too): a per-batch weight snapshot of a tiny model trips it at random",
}


KERAS3_GROUP_SIZE = 8  # scripts per fresh Keras 3 process


@pytest.fixture(scope="module")
def keras3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> groups.Groups:
    return groups.Groups("check_d", [f.__name__ for f in SCRIPTS], tmp_path_factory.mktemp("sweep_d"),
                         groups.selected(request, "test_keras3", "script"), size=KERAS3_GROUP_SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_keras3(keras3, script):
    problems = keras3.problems(script.__name__)
    assert not problems, "\n".join(problems)


def _two_cpus(names: list[str], tmp: Path, legacy: bool) -> dict[str, list[str]]:
    """Each script's problems, checked in one fresh process with two logical CPUs."""
    return groups.run_all("check_d", names, tmp / "group.db", legacy=legacy, args=("--two-cpus",),
                          env={"TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
@pytest.mark.parametrize("name", MIRRORED)
def test_keras3_mirrored_two_replicas(tmp_path, name):
    problems = _two_cpus([name], tmp_path, legacy=False)[name]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("group", range(len(TF_KERAS_GROUPS)), ids=[g[0] for g in TF_KERAS_GROUPS])
def test_tf_keras(tmp_path, group):
    pytest.importorskip("tf_keras")
    found = _two_cpus(TF_KERAS_GROUPS[group], tmp_path, legacy=True)
    bad = {n: p for n, p in found.items() if p}
    assert not bad, "\n".join(f"{n}: {p}" for n, p in bad.items())


def test_tf_keras_groups_name_scripts():
    names = {f.__name__ for f in _ALL}
    listed = [n for g in TF_KERAS_GROUPS for n in g]
    assert set(listed) <= names and len(listed) == len(set(listed)), listed
    assert not set(listed) & set(NOT_ON_TF_KERAS), listed
    assert set(NOT_ON_TF_KERAS) <= names


def _steps(url: str, name: str) -> list[dict]:
    from gradtrace.store import open_store

    store = open_store(url)
    try:
        return sorted(store.steps(store.resolve(name).id), key=lambda r: r["step"])
    finally:
        store.close()


@pytest.mark.slow
def test_eager_loss_scale_optimizer_first_step(tmp_path):
    """An eager loop's first scale_loss comes before the first apply builds Keras 3's
    LossScaleOptimizer (no `dynamic_scale` yet): step 0 must still record the loss before
    scaling, the initial scale, and gradient statistics divided by it."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y = sd.data.digits(48)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    url = f"sqlite:///{tmp_path / 'lso.db'}"
    try:
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(10, dtype="float32")])
        opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=2.0 ** 8)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        losses, norms, scales = [], [], []
        with gradtrace.trace(run="lso", store=url, stats_every=1):
            for i in range(0, 48, 16):
                with tf.GradientTape() as tape:
                    loss = ce(y[i:i + 16], model(x[i:i + 16], training=True))
                    scaled = opt.scale_loss(loss)
                g = tape.gradient(scaled, model.trainable_variables)
                scale = float(scaled / loss)
                opt.apply(g, model.trainable_variables)
                losses.append(float(loss))
                norms.append(float(tf.norm(tf.cast(g[0], tf.float32))) / scale)
                scales.append(scale)
    finally:
        keras.mixed_precision.set_global_policy(prev)
    steps = _steps(url, "lso")
    assert [s["loss_scale"] for s in steps] == scales and scales[0] == 2.0 ** 8, steps
    for s, loss, norm in zip(steps, losses, norms, strict=True):
        assert s["loss"] == pytest.approx(loss, rel=1e-6) and not s["skipped"], (s["step"], s["loss"], loss)
        assert s["vars"][0]["norm"] == pytest.approx(norm, rel=1e-5), (s["step"], s["vars"][0]["norm"], norm)


@pytest.mark.slow
def test_eager_jacobian_is_one_tape_call(tmp_path):
    """tape.jacobian of per-example losses in an eager loop: the step's target is that vector
    (its sum the loss, its shape the target shape), not one element of it that jacobian's
    internal gradient calls differentiate."""
    import gradtrace
    import keras
    import numpy as np
    import tensorflow as tf

    x, y = sd.data.breast_cancer(48)
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.1)
    url = f"sqlite:///{tmp_path / 'jac.db'}"
    sums, norms = [], []
    with gradtrace.trace(run="jac", store=url, stats_every=1):
        for i in range(0, 48, 16):
            with tf.GradientTape() as tape:
                per = tf.nn.sigmoid_cross_entropy_with_logits(y[i:i + 16], model(x[i:i + 16], training=True)[:, 0])
            jac = tape.jacobian(per, model.trainable_variables)
            grads = [tf.reduce_mean(j, 0) for j in jac]
            opt.apply_gradients(zip(grads, model.trainable_variables))
            sums.append(float(tf.reduce_sum(per)))
            norms.append(float(tf.norm(grads[0])))
    steps = _steps(url, "jac")
    assert len(steps) == 3, steps
    np.testing.assert_allclose([s["loss"] for s in steps], sums, rtol=1e-5)
    assert all(s["target_shape"] == [16] for s in steps), [s["target_shape"] for s in steps]
    np.testing.assert_allclose([s["vars"][0]["norm"] for s in steps], norms, rtol=1e-5)
