"""Run metadata on real Keras 3 and tf-keras objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from gradtrace import _meta, schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _k3_mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )


def _tk_mlp() -> tf_keras.Model:
    return tf_keras.Sequential(
        [
            tf_keras.layers.Dense(5, input_shape=(6,)),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.Dropout(0.2),
            tf_keras.layers.Dense(3),
        ]
    )


@pytest.mark.parametrize("build", [_k3_mlp, _tk_mlp], ids=["keras3", "tf_keras"])
def test_identical_models_with_different_auto_names_get_identical_keys(build) -> None:
    a, b = build(), build()
    va, la, _ = _meta.variable_inventory([a])
    vb, lb, _ = _meta.variable_inventory(b)
    assert [v.name for v in va] != [v.name for v in vb]  # dense vs dense_2 ...
    assert [v.struct_key for v in va] == [v.struct_key for v in vb]
    assert [layer.struct_key for layer in la] == [layer.struct_key for layer in lb]
    # the inventory follows the model's own variable order, every variable once
    assert len(va) == len({id(v) for v in a.variables}) == len(a.variables)
    keys = [v.struct_key for v in va]
    assert keys[:2] == ["1:Dense/kernel[6,5]", "1:Dense/bias[5]"]
    assert "2:BatchNormalization/moving_mean[5]" in keys
    assert keys[-1] == "4:Dense/bias[3]"
    trainable = {v.struct_key: v.trainable for v in va}
    assert trainable["2:BatchNormalization/gamma[5]"] and not trainable["2:BatchNormalization/moving_variance[5]"]
    modes = {layer.class_name: layer.training_dependent for layer in la}
    assert modes["BatchNormalization"] and modes["Dropout"]
    assert not modes["Dense"]  # Keras 3's Dense.call takes `training` but never reads it


def test_inventory_maps_keras_variables_and_the_tf_variables_they_wrap() -> None:
    model = _k3_mlp()
    variables, _, by_id = _meta.variable_inventory([model])
    for i, v in enumerate(model.variables):
        assert by_id[id(v)] == by_id[id(v.value)] == i
    kernel = model.layers[0].kernel
    assert variables[by_id[id(kernel)]].struct_key == "1:Dense/kernel[6,5]"
    assert variables[by_id[id(kernel)]].layer_class == "Dense"
    schema.RunInfo(run_id="r", name="n", variables=variables)  # valid records


def test_sequential_and_functional_versions_align() -> None:
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    inp = keras.Input((4,))
    out = keras.layers.Dense(2)(keras.layers.Dense(3, activation="relu")(inp))
    fun = keras.Model(inp, out)
    ks = [v.struct_key for v in _meta.variable_inventory(seq)[0]]
    kf = [v.struct_key for v in _meta.variable_inventory(fun)[0]]
    assert ks == kf == ["1:Dense/kernel[4,3]", "1:Dense/bias[3]", "2:Dense/kernel[3,2]", "2:Dense/bias[2]"]


class _Block(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.scale = self.add_weight(shape=(2,), initializer="ones", name="scale")
        self.inner = keras.layers.Dense(2)

    def call(self, x, training=None):
        if training:  # reads `training`: behaves differently in training
            x = x + 0.0
        return self.inner(x) * self.scale


class _Ignores(keras.layers.Layer):
    def call(self, x, training=None):  # takes `training` and ignores it
        return x


class _Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.shared = keras.layers.Dense(2)
        self.block = _Block()
        self.head = keras.Sequential([keras.layers.Dense(2), keras.layers.Dense(1)])

    def call(self, x):
        return self.head(self.block(self.shared(self.shared(x))))


def test_subclassed_nested_and_shared_layers() -> None:
    net = _Net()
    net(np.zeros((1, 2), "float32"))
    variables, layers, by_id = _meta.variable_inventory([net, net.head])  # head reached twice
    assert len(variables) == len(net.variables) == len(set(by_id.values()))
    keys = [v.struct_key for v in variables]
    assert keys == [
        "1:Dense/kernel[2,2]", "1:Dense/bias[2]",  # shared, called twice, listed once
        "2:_Block/scale[2]",  # the block's own variable before its sublayer's
        "3:Dense/kernel[2,2]", "3:Dense/bias[2]",
        "5:Dense/kernel[2,2]", "5:Dense/bias[2]",
        "6:Dense/kernel[2,1]", "6:Dense/bias[1]",
    ]
    assert [layer.class_name for layer in layers] == ["_Net", "Dense", "_Block", "Dense", "Sequential", "Dense", "Dense"]
    assert layers[2].training_dependent and not layers[0].training_dependent  # _Net.call(x)
    assert not _meta.training_dependent(_Ignores())


def test_keras_flavour_per_object() -> None:
    assert _meta.keras_flavour(_k3_mlp()) == "keras3"
    assert _meta.keras_flavour(_tk_mlp()) == "tf_keras"
    assert _meta.keras_flavour(_Net) == "keras3"  # a user subclass from this module
    assert _meta.keras_flavour(keras.optimizers.Adam()) == "keras3"
    assert _meta.keras_flavour(tf_keras.optimizers.Adam()) == "tf_keras"
    assert _meta.keras_flavour(tf_keras.losses.MeanSquaredError()) == "tf_keras"
    assert _meta.keras_flavour(tf.Variable(1.0)) is None
    assert _meta.keras_flavour("mse") is None


def test_flavour_with_legacy_keras_env_in_one_process() -> None:
    code = textwrap.dedent(
        """
        import os
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow as tf, keras
        from gradtrace import _meta
        a = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
        b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        print(_meta.keras_flavour(a), _meta.keras_flavour(b), _meta.keras_flavour(tf.keras.optimizers.SGD()))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tracer"), ROOT]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["tf_keras", "keras3", "tf_keras"]


def test_optimizer_info_with_schedule_and_clipping() -> None:
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    info = _meta.optimizer_info(keras.optimizers.SGD(sched, momentum=0.9, global_clipnorm=1.0))
    assert info["class"] == "SGD" and info["flavour"] == "keras3"
    assert info["learning_rate_schedule"]["class"] == "ExponentialDecay"
    assert info["learning_rate_schedule"]["config"]["decay_rate"] == 0.9
    assert info["momentum"] == 0.9 and info["global_clipnorm"] == 1.0 and info["clipnorm"] is None
    legacy = _meta.optimizer_info(tf_keras.optimizers.Adam(1e-3, clipnorm=2.0, epsilon=1e-5))
    assert legacy["flavour"] == "tf_keras" and legacy["clipnorm"] == 2.0 and legacy["global_clipnorm"] is None
    assert legacy["learning_rate"] == pytest.approx(1e-3) and legacy["epsilon"] == 1e-5
    acc = _meta.optimizer_info(keras.optimizers.AdamW(weight_decay=0.01, gradient_accumulation_steps=4, use_ema=True))
    assert acc["weight_decay"] == 0.01 and acc["gradient_accumulation_steps"] == 4 and acc["use_ema"] is True
    # everything is JSON and survives the record format
    for i in (info, legacy, acc):
        json.dumps(i)
        run = schema.RunInfo(run_id="r", name="n", optimizer=i)
        assert schema.RunInfo.model_validate_json(schema.dumps(run)).optimizer == i


def test_optimizer_info_loss_scale_both_flavours() -> None:
    lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=1024.0)
    assert "current" not in _meta.optimizer_info(lso)["loss_scale"]  # no scale variable before build
    lso.build([keras.Variable(np.zeros(2, "float32"))])
    k3 = _meta.optimizer_info(lso)
    assert k3["class"] == "LossScaleOptimizer" and k3["inner"]["class"] == "SGD"
    assert k3["loss_scale"]["initial_scale"] == 1024.0 and k3["loss_scale"]["current"] == 1024.0
    assert k3["learning_rate"] == pytest.approx(0.05)
    tk = _meta.optimizer_info(tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam()))
    assert tk["inner"]["class"] == "Adam" and tk["loss_scale"]["dynamic"] is True
    json.dumps([k3, tk])


def test_loss_info_string_object_function() -> None:
    by_string = _meta.loss_info("mse")
    by_object = _meta.loss_info(keras.losses.MeanSquaredError())
    by_function = _meta.loss_info(keras.losses.mean_squared_error)
    assert by_string["reduction"] == by_object["reduction"] == "sum_over_batch_size"
    assert by_string["fn"] == by_function["fn"] == "mean_squared_error" and by_string["wrapped"]
    assert by_object["class"] == "MeanSquaredError"
    assert by_function["reduction"] is None  # called directly: one value per sample
    cce = _meta.loss_info(keras.losses.CategoricalCrossentropy(from_logits=True))
    assert cce["from_logits"] is True and _meta.loss_info("categorical_crossentropy")["from_logits"] is False
    legacy = _meta.loss_info(tf_keras.losses.MeanSquaredError())
    assert legacy["reduction"] == "auto" and legacy["effective_reduction"] == "sum_over_batch_size"
    none = _meta.loss_info(keras.losses.MeanSquaredError(reduction=None))
    assert none["reduction"] is None or none["reduction"] == "none"
    multi = _meta.loss_info({"a": "mse", "b": keras.losses.Huber()})
    assert multi["items"]["b"]["class"] == "Huber"
    json.dumps([by_string, by_object, by_function, cce, legacy, multi])


def _xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, size=(16,))


def test_metric_info_after_first_step_both_flavours() -> None:
    x, y = _xy()
    k3 = _k3_mlp()
    k3.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert _meta.metric_info(k3) == []  # not resolved before the first step
    k3.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert {"name": "accuracy", "class": "SparseCategoricalAccuracy", "fn": "sparse_categorical_accuracy"} in _meta.metric_info(k3)
    assert _meta.loss_info(k3)["fn"] == "sparse_categorical_crossentropy"
    tk = _tk_mlp()
    tk.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    tk.fit(x, y, epochs=1, batch_size=8, verbose=0)
    (acc,) = [m for m in _meta.metric_info(tk) if m["name"] == "accuracy"]
    assert acc["fn"] == "sparse_categorical_accuracy"
    assert _meta.loss_info(tk)["flavour"] == "tf_keras"


def test_weights_fingerprint() -> None:
    keras.utils.set_random_seed(3)
    a = _k3_mlp()
    keras.utils.set_random_seed(3)
    b = _k3_mlp()
    assert [v.name for v in _meta.variable_inventory(a)[0]] != [v.name for v in _meta.variable_inventory(b)[0]]
    fa, fb = _meta.weights_fingerprint(a.variables), _meta.weights_fingerprint(b.variables)
    assert fa == fb and fa.startswith(f"{len(a.variables)}:")
    assert _meta.variable_fingerprints(a.variables) == _meta.variable_fingerprints(b.variables)
    b.layers[0].kernel.assign(b.layers[0].kernel + 1e-7)
    assert _meta.weights_fingerprint(b.variables) != fa
    per = _meta.variable_fingerprints(b.variables)
    assert per[0] != _meta.variable_fingerprints(a.variables)[0] and per[1:] == _meta.variable_fingerprints(a.variables)[1:]


def test_environment_info_seeds_policy_strategy() -> None:
    tf.random.set_seed(123)
    keras.utils.set_random_seed(7)  # also sets tf's seed to 7
    info = _meta.environment_info()
    assert info["host"] and info["strategy"] and info["replicas"] == 1
    assert info["seeds"]["keras_seed"] == 7 and info["seeds"]["tf_global_seed"] == 7
    assert info["dtype_policy"] == "float32"
    keras.config.set_dtype_policy("mixed_float16")
    try:
        assert _meta.environment_info()["dtype_policy"] == "mixed_float16"
        assert _meta.environment_info("tf_keras")["dtype_policy"] == "float32"
    finally:
        keras.config.set_dtype_policy("float32")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        inside = _meta.environment_info()
    assert inside["strategy"] == "MirroredStrategy" and inside["replicas"] == 1
    schema.RunInfo(run_id="r", name="n", **{k: v for k, v in info.items()})


def test_versions_and_light_imports() -> None:
    code = textwrap.dedent(
        """
        import sys
        import gradtrace._meta, gradtrace._export, gradtrace._sinks, gradtrace._config
        from gradtrace import _meta
        v = _meta.versions()
        heavy = [m for m in ("tensorflow", "keras", "tf_keras", "fastapi") if m in sys.modules]
        print(sorted(v), heavy)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tracer"), ROOT]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    names, heavy = out.stdout.strip().split("] ")
    for key in ("python", "tensorflow", "keras", "tf_keras", "gradtrace", "numpy"):
        assert f"'{key}'" in names
    assert heavy == "[]"
    assert _meta.versions()["tensorflow"] == tf.__version__


def test_docstring_example() -> None:
    import doctest

    result = doctest.testmod(_meta)
    assert result.attempted > 0 and result.failed == 0


def test_fit_shuffle_is_recorded_as_it_acts() -> None:
    """fit() shuffles arrays (by default) but ignores `shuffle` for a tf.data.Dataset."""
    import numpy as np
    import tensorflow as tf
    from gradtrace._probes import _fit_shuffle

    x = np.zeros((8, 2), "float32")
    assert _fit_shuffle({"x": x}) is True and _fit_shuffle({"x": x, "shuffle": False}) is False
    assert _fit_shuffle({"x": [x, x], "shuffle": "batch"}) == "batch"
    ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(4)
    assert _fit_shuffle({"x": ds}) is None and _fit_shuffle({"x": ds, "shuffle": True}) is None
