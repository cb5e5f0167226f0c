# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A fifth set of training scripts as users write them, through ``tf.keras`` so that most run on
Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on tf-keras (the ones using ``keras.ops``,
``keras.random`` or Keras 3's optimizer arguments are Keras 3 only). Same contract as
:mod:`scripts_c`: each returns :class:`Out` with its final weights, the optimizer steps it
counted and, in ``extra``, what the script itself knows about its steps (see check_c.check).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from . import data
from .scripts import Out
from .scripts_c import (
    _BatchLosses,
    _fp,
    _iters,
    _keras,
    _legacy,
    _norm,
    _sizes,
    _tf,
    _vname,
    _weights,
)

B = 16


@contextmanager
def _arithmetic_optimization_off() -> Iterator[None]:
    """Grappler's arithmetic optimizer rewrites some BatchNormalization gammas' gradient chains
    differently once the tracer also reads them (rounding level, documented in the README): off
    for the scripts that use this, so that their weights can be compared bit for bit."""
    tf = _tf()
    prev = tf.config.optimizer.get_experimental_options().get("arithmetic_optimization")
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": True if prev is None else prev})

def _ce():
    return _keras().losses.SparseCategoricalCrossentropy(from_logits=True)


def _images(n: int = 32, size: int = 32):
    """Digits upsampled to size x size RGB (what a keras.applications model takes)."""
    x, y = data.digits_images(n)
    f = size // 8
    x = x.repeat(f, 1).repeat(f, 2)
    return np.concatenate([x, x * 0.5, 1.0 - x], -1).astype("float32") * 255.0, (y % 4).astype("int32")


def _lr(opt) -> float:
    return float(np.float32(np.array(opt.learning_rate)))


# --- 2. keras.applications.MobileNet (v1, alpha=0.25, weights=None) on 32x32 images in a
#        tf.function tape loop (DepthwiseConv2D, BatchNormalization, ReLU6, Dropout) --------------

def mobilenet_v1_tape():
    tf = _tf()
    keras = _keras()
    x, y = _images(16)
    keras.utils.set_random_seed(202)
    model = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=4,
                                         dropout=0.1)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    ce = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb / 127.5 - 1.0, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    with _arithmetic_optimization_off():
        losses, grads = [], []
        for i in range(0, 16, 8):
            loss, gn = step(x[i:i + 8], y[i:i + 8])
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "state": {"moving_mean": True},
                                              "modes": {"dropout": True},
                                              "y_fp": [_fp(y[i:i + 8]) for i in range(0, 16, 8)]})


# --- 3. residual blocks (Conv2D, BatchNormalization, Add, ReLU), functional, tf.function tape --

def resnet_blocks_bn_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits_images(64)
    keras.utils.set_random_seed(203)

    def block(h, filters, name):
        s = h
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c1")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn1")(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c2")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn2")(h)
        if s.shape[-1] != filters:
            s = keras.layers.Conv2D(filters, 1, name=f"{name}_proj")(s)
        return keras.layers.ReLU()(keras.layers.Add()([h, s]))

    inp = keras.Input((8, 8, 1))
    h = block(inp, 4, "b1")
    h = block(h, 4, "b2")
    h = block(keras.layers.MaxPooling2D()(h), 6, "b3")
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h)))
    opt = keras.optimizers.Adam(3e-3)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt),
               {"losses": losses, "grads": grads, "modes": {"b1_bn1": True, "b3_bn2": True},
                "state": {"b2_bn1/moving_mean" if not _legacy() else "b2_bn1/moving_mean": True},
                "x_fp": [_fp(x[i:i + B]) for i in range(0, 64, B)]})


# --- 4. Bidirectional(GRU(return_sequences)) then a GRU with dropout, fit() with validation_data,
#        ReduceLROnPlateau and TerminateOnNaN, each batch's rate read by a callback ----------------

def bigru_validation_reduce_lr_terminate_fit():
    keras = _keras()
    x, y = data.sequences(96, length=8, features=3)
    keras.utils.set_random_seed(204)
    model = keras.Sequential([keras.Input((8, 3)),
                              keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
                              keras.layers.GRU(4, dropout=0.2), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss=_ce(), metrics=["accuracy"])
    rates: list[float] = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(_lr(self.model.optimizer))

    cb = _BatchLosses(_sizes(64, B))
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=10.0)
    model.fit(x[:64], y[:64], validation_data=(x[64:], y[64:]), batch_size=B, epochs=3, shuffle=False,
              verbose=0, callbacks=[cb, Rates(), plateau, keras.callbacks.TerminateOnNaN()])
    assert rates[-1] < rates[0], rates
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "lrs": rates,
                # a recurrent layer's mode is its cell's (tf-keras runs the cell's computation
                # without calling the cell): the two of the Bidirectional and the GRU's
                "modes": {"gru_cell": True, "gru_cell#2": True, "gru_cell#3": True},
                "meta": {"fit.validation": True}})


# --- 5. ConvLSTM1D over (time, positions, channels), eager tape loop --------------------------

def conv_lstm1d_eager():
    tf = _tf()
    keras = _keras()
    seq, y = data.sequences(48, length=12, features=3)
    x = seq.reshape(48, 4, 3, 3)  # 4 time steps of 3 positions x 3 channels
    keras.utils.set_random_seed(205)
    model = keras.Sequential([keras.Input((4, 3, 3)), keras.layers.ConvLSTM1D(4, 2, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    opt = keras.optimizers.Adam(1e-2)
    ce = _ce()
    losses, grads = [], []
    for i in range(0, 48, B):
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[1]), _norm(g[1])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 48, B)]})


# --- 6. SeparableConv2D and DepthwiseConv2D with BatchNormalization, fit() --------------------

def separable_depthwise_bn_fit():
    keras = _keras()
    x, y = data.digits_images(96)
    keras.utils.set_random_seed(206)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                              keras.layers.SeparableConv2D(6, 3, name="sep"),
                              keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Nadam(3e-3), loss=_ce())
    cb = _BatchLosses(_sizes(96, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"bn": True}, "state": {"moving_variance": True}})


# --- 7. Conv3D on small volumes, tf.function tape step, Adamax --------------------------------

def conv3d_volumes_tape():
    tf = _tf()
    keras = _keras()
    flat, y = data.digits(64)
    x = flat.reshape(64, 4, 4, 4, 1)
    keras.utils.set_random_seed(207)
    model = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.Conv3D(3, 2, activation="relu"),
                              keras.layers.MaxPooling3D(), keras.layers.Flatten(), keras.layers.Dense(10)])
    opt = keras.optimizers.Adamax(1e-2)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 64, B)]})


# --- 8. a custom layer with add_weight (trainable scale, non-trainable counter), add_loss and a
#        metric of its own (tf-keras: add_metric; Keras 3: a Mean the layer updates), fit() -------

def _gated_layer_class():
    tf = _tf()
    keras = _keras()
    legacy = _legacy()

    class Gated(keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units
            if not legacy:
                self.gate_mean = keras.metrics.Mean(name="gate_mean")

        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1], self.units), initializer="glorot_uniform")
            self.gate = self.add_weight(name="gate", shape=(self.units,), initializer="ones")
            self.calls = self.add_weight(name="calls", shape=(), initializer="zeros", trainable=False)

        def call(self, inputs, training=None):
            g = tf.sigmoid(self.gate)
            self.add_loss(1e-2 * tf.reduce_sum(tf.square(self.gate)))
            if training:
                self.calls.assign_add(1.0)
            if legacy:
                self.add_metric(tf.reduce_mean(g), name="gate_mean")
            else:
                self.gate_mean.update_state(g)
            return tf.nn.relu(inputs @ self.w) * g

    return Gated


def custom_layer_weight_loss_metric_fit():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(208)
    model = keras.Sequential([keras.Input((13,)), _gated_layer_class()(8, name="gated"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], y[:128], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"gated": True}, "state": {"calls": True}})


# --- 9. (Keras 3) a layer written with keras.ops and keras.random.dropout on its own
#        SeedGenerator, a tf.function tape loop -------------------------------------------------

def keras_ops_layer_seed_generator_tape():
    tf = _tf()
    keras = _keras()
    ops = keras.ops
    x, y = data.digits(96)

    class GluDrop(keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units
            self.seed = keras.random.SeedGenerator(7)

        def build(self, shape):
            self.k = self.add_weight(name="k", shape=(shape[-1], 2 * self.units))
            self.b = self.add_weight(name="b", shape=(2 * self.units,), initializer="zeros")

        def call(self, inputs, training=False):
            a, g = ops.split(ops.matmul(inputs, self.k) + self.b, 2, axis=-1)
            h = a * ops.sigmoid(g)
            if training:
                h = keras.random.dropout(h, 0.2, seed=self.seed)
            return ops.where(ops.isfinite(h), h, ops.zeros_like(h))

    keras.utils.set_random_seed(209)
    model = keras.Sequential([keras.Input((64,)), GluDrop(12, name="glu"), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(5e-3)

    def loss_fn(yb, logits):
        return ops.mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), "glu/k", float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "modes": {"glu": True},
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 10. a tf.Module of submodules (no Keras layer) trained eagerly with Keras' Ftrl -------------

def tf_module_submodules_ftrl_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(96)
    tf.random.set_seed(210)

    class Linear(tf.Module):
        def __init__(self, n_in, n_out, name):
            super().__init__(name=name)
            self.w = tf.Variable(tf.random.normal([n_in, n_out], stddev=0.2, seed=1), name="w")
            self.b = tf.Variable(tf.zeros([n_out]), name="b")

        def __call__(self, a):
            return a @ self.w + self.b

    class Net(tf.Module):
        def __init__(self):
            super().__init__(name="net")
            self.hidden = Linear(30, 6, "hidden")
            self.out = Linear(6, 1, "out")

        def __call__(self, a):
            return self.out(tf.nn.relu(self.hidden(a)))[:, 0]

    net = Net()
    opt = keras.optimizers.Ftrl(0.1, l1_regularization_strength=1e-3)
    losses, grads = [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y[i:i + B], net(x[i:i + B])))
        g = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(g, net.trainable_variables))
        grads.append((len(losses), net.trainable_variables[0].name.split(":")[0], _norm(g[0])))
        losses.append(float(loss))
    return Out([v.numpy() for v in net.trainable_variables], _iters(opt), {"losses": losses, "grads": grads})


# --- 11. fit() with jit_compile=True and steps_per_execution=3 on a tf.data pipeline with
#         cache and prefetch, AdamW, Dropout ------------------------------------------------------

def xla_fit_steps_per_execution_cached_data():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(192)
    keras.utils.set_random_seed(211)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.01), loss=_ce(),
                  jit_compile=True, steps_per_execution=3)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().batch(32).prefetch(2)
    model.fit(ds, epochs=2, verbose=0)
    return Out(_weights(model), _iters(model.optimizer),
               {"modes": {"dropout": True}, "batch_sizes": [32] * 12,
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 192, 32)] * 2,
                "meta": {"fit.jit_compile": True}})


# --- 12. tf.function(jit_compile=True) tape step, LayerNormalization, Lion -------------------

def xla_function_layernorm_lion_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(212)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(12), keras.layers.LayerNormalization(),
                              keras.layers.Activation("gelu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Lion(3e-4)

    @tf.function(jit_compile=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = keras.losses.Huber(delta=0.5)(yb[:, None], model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "loss_rtol": 1e-4,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 13. OneDeviceStrategy: model and optimizer built in its scope, fit() ------------------------

def one_device_strategy_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        keras.utils.set_random_seed(213)
        model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    with _arithmetic_optimization_off():  # with it on, Dense + BN fit() drifts by ~1e-7 (see the README)
        model.fit(x[:128], y[:128], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"batch_normalization": True},
                "meta": {"strategy": "OneDeviceStrategy"}})


# --- 14. OneDeviceStrategy with strategy.run in a custom tf.function loop over a distributed
#         dataset -----------------------------------------------------------------------------------

def one_device_strategy_run_loop():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        keras.utils.set_random_seed(214)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                                  keras.layers.Dropout(0.1), keras.layers.Dense(10)])
        opt = keras.optimizers.Adam(5e-3)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(32))

    @tf.function
    def step(xb, yb):
        def replica(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(ce(yb, model(xb, training=True)), global_batch_size=32)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss
        return strategy.run(replica, args=(xb, yb))

    losses = []
    for _ in range(2):
        for xb, yb in ds:
            losses.append(float(step(xb, yb)))
    return Out(_weights(model), _iters(opt), {"losses": losses, "modes": {"dropout": True},
                                              "x_fp": [_fp(x[i:i + 32]) for i in range(0, 96, 32)] * 2,
                                              "meta": {"strategy": "OneDeviceStrategy"}})


# --- 15. an eager loop over tf.data with map, cache, a seeded reshuffling shuffle, repeat and take --

def tf_data_cache_shuffle_repeat_take_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(215)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)])
    opt = keras.optimizers.Adagrad(0.1)
    ce = _ce()
    ds = (tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).map(lambda a, b: (a * 0.5, b)).cache()
          .shuffle(96, seed=11, reshuffle_each_iteration=True).batch(B).repeat(2).take(9))
    losses, xs = [], []
    for xb, yb in ds:
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
        xs.append(_fp(xb.numpy()))
    assert len(losses) == 9
    return Out(_weights(model), _iters(opt), {"losses": losses, "x_fp": xs})


# --- 16. a custom train_step calling optimizer.apply (tf-keras: apply_gradients) and updating
#         its own loss tracker and the compiled metrics ----------------------------------------------

def train_step_optimizer_apply_metrics():
    tf = _tf()
    keras = _keras()
    legacy = _legacy()
    x, y = data.digits(128)

    class Net(keras.Model):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.tracker = keras.metrics.Mean(name="loss")
            self.acc = keras.metrics.SparseCategoricalAccuracy(name="acc")
            self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @property
        def metrics(self):
            return [self.tracker, self.acc]

        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                loss = self.ce(yb, pred)
            g = tape.gradient(loss, self.trainable_variables)
            if legacy:
                self.optimizer.apply_gradients(zip(g, self.trainable_variables))
            else:
                self.optimizer.apply(g, self.trainable_variables)
            self.tracker.update_state(loss)
            self.acc.update_state(yb, pred)
            return {"loss": self.tracker.result(), "acc": self.acc.result()}

    keras.utils.set_random_seed(216)
    inp = keras.Input((64,))
    h = keras.layers.Dropout(0.1)(keras.layers.Dense(16, activation="relu")(inp))
    model = Net(inp, keras.layers.Dense(10)(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"dropout": True},
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 17. (Keras 3) gradient accumulation by the optimizer: AdamW(gradient_accumulation_steps=3)
#         in an eager tape loop (every third call applies) -----------------------------------------

def optimizer_gradient_accumulation_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(144)
    keras.utils.set_random_seed(217)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    opt = keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=3)
    ce = _ce()
    losses, grads, moved = [], [], []
    for i in range(0, 144, B):
        before = np.array(model.trainable_variables[0])
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        moved.append(not np.array_equal(before, np.array(model.trainable_variables[0])))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
    assert moved == [False, False, True] * 3, moved
    # Keras 3 counts only the applying calls in `iterations`; every call is an optimizer step
    return Out(_weights(model), len(losses), {"losses": losses, "applied": {_vname(model.trainable_variables[0]): moved},
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 144, B)]})


# --- 18. Adafactor on a small CNN, tf.function tape step ------------------------------------

def adafactor_cnn_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits_images(64)
    keras.utils.set_random_seed(218)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    opt = keras.optimizers.Adafactor(1e-2)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[2])

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[2]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 19. AdamW with use_ema=True and ema_overwrite_frequency, fit() --------------------------

def adamw_ema_overwrite_fit():
    keras = _keras()
    x, y = data.breast_cancer(128)
    keras.utils.set_random_seed(219)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.AdamW(1e-2, weight_decay=0.05, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)
    model.compile(optimizer=opt, loss=keras.losses.BinaryCrossentropy(from_logits=True))
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "meta": {"optimizer.class": "AdamW"}})


# --- 20. losses and metrics by string: "categorical_crossentropy" on softmax outputs with
#         one-hot labels, "kl_divergence" on a second output, fit() ------------------------------

def losses_by_string_two_outputs_fit():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(220)
    inp = keras.Input((13,))
    h = keras.layers.Dense(10, activation="relu")(inp)
    a = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    b = keras.layers.Dense(3, activation="softmax", name="dist")(h)
    model = keras.Model(inp, [a, b])
    model.compile(optimizer="adam", loss=["categorical_crossentropy", "kl_divergence"],
                  metrics=[["accuracy"], []])
    onehot = np.eye(3, dtype="float32")[y[:128]]
    soft = (onehot * 0.8 + 0.2 / 3).astype("float32")
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], [onehot, soft], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "y_fp": [_fp(onehot[i:i + 32], soft[i:i + 32]) for i in range(0, 128, 32)] * 2,
                "meta": {"optimizer.class": "Adam"}})


# --- 21. sample weights from a tf.data pipeline in an eager tape loop: the loss object called
#         with sample_weight ------------------------------------------------------------------------

def sample_weights_from_dataset_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(96)
    sw = np.where(y > 0, 0.5, 2.0).astype("float32")
    keras.utils.set_random_seed(221)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.1)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None], sw)).batch(B)
    losses, grads = [], []
    for xb, yb, wb in ds:
        with tf.GradientTape() as tape:
            loss = bce(yb, model(xb, training=True), sample_weight=wb)
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "weight_sum0": float(sw[:B].sum()),
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 22. string tokens through StringLookup inside the model, a tf.data pipeline, fit() -------

def string_lookup_tokens_fit():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(96, length=6, vocab=12)
    words = np.array([f"w{i}" for i in range(12)])
    x = words[ids]
    keras.utils.set_random_seed(222)
    inp = keras.Input((6,), dtype="string")
    h = keras.layers.StringLookup(vocabulary=list(words[1:]))(inp)
    h = keras.layers.Embedding(13, 4)(h)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    cb = _BatchLosses(_sizes(96, 32))
    model.fit(ds, epochs=2, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "batch_sizes": [32] * 6,
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 96, 32)] * 2})


# --- 23. ragged token sequences (a RaggedTensorSpec input_signature) made dense inside the step,
#         Embedding(mask_zero) + GRU ------------------------------------------------------------

def ragged_tokens_input_signature_tape():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(64, length=8, vocab=20, pad=True)
    lengths = (ids > 0).sum(1)
    keras.utils.set_random_seed(223)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4, mask_zero=True),
                              keras.layers.GRU(5), keras.layers.Dense(2)])
    opt = keras.optimizers.Adam(1e-2)
    ce = _ce()

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
                                  tf.TensorSpec([None], tf.int32)])
    def step(rb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(rb.to_tensor(0), training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(tf.convert_to_tensor(g[1]))

    losses, grads = [], []
    for i in range(0, 64, B):
        rb = tf.RaggedTensor.from_row_lengths(ids[i:i + B][ids[i:i + B] > 0], lengths[i:i + B])
        loss, gn = step(rb, tf.constant(y[i:i + B]))
        grads.append((len(losses), _vname(model.trainable_variables[1]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 64, B)]})


# --- 24. a raw embedding table looked up with tf.nn.embedding_lookup and a sampled softmax
#         (IndexedSlices for both tables), Adagrad, tf.function -----------------------------------

def sampled_softmax_sparse_tables_tape():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(64, length=6, vocab=30)
    labels = (ids[:, 0] % 20).astype("int64")
    keras.utils.set_random_seed(224)
    emb = tf.Variable(tf.random.normal([30, 8], stddev=0.1, seed=3), name="emb")
    out_w = tf.Variable(tf.random.normal([20, 8], stddev=0.1, seed=4), name="out_w")
    out_b = tf.Variable(tf.zeros([20]), name="out_b")
    params = [emb, out_w, out_b]
    opt = keras.optimizers.Adagrad(0.2)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            h = tf.reduce_mean(tf.nn.embedding_lookup(emb, xb), 1)
            loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(out_w, out_b, yb[:, None], h, num_sampled=5,
                                                             num_classes=20, seed=9))
        g = tape.gradient(loss, params)
        opt.apply_gradients(zip(g, params))
        return loss, tf.norm(tf.convert_to_tensor(g[0])), tf.norm(tf.convert_to_tensor(g[1]))

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, g0, g1 = step(ids[i:i + B], labels[i:i + B])
        grads += [(len(losses), "emb", float(g0)), (len(losses), "out_w", float(g1))]
        losses.append(float(loss))
    return Out([v.numpy() for v in params], _iters(opt), {"losses": losses, "grads": grads})


# --- 25. a subclassed model calling a functional encoder (a Model with BatchNormalization)
#         and its own head, fit() --------------------------------------------------------------

def subclass_calls_functional_encoder_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(225)
    inp = keras.Input((64,))
    h = keras.layers.BatchNormalization(name="enc_bn")(keras.layers.Dense(16, name="enc_dense")(inp))
    encoder = keras.Model(inp, keras.layers.ReLU()(h), name="encoder")

    class Classifier(keras.Model):
        def __init__(self, encoder, **kw):
            super().__init__(**kw)
            self.encoder = encoder
            self.drop = keras.layers.Dropout(0.2, name="head_drop")
            self.head = keras.layers.Dense(10, name="head")

        def call(self, inputs, training=False):
            return self.head(self.drop(self.encoder(inputs, training=training), training=training))

    model = Classifier(encoder)
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_ce(), metrics=["accuracy"])
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"enc_bn": True, "head_drop": True},
                "state": {"moving_mean": True}, "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 26. weight sharing across branches: one Dense encoder on two inputs and an Embedding whose
#         matrix is reused, transposed, as the output projection (tied weights), fit() ----------------

def _tied_output_class():
    tf = _tf()
    keras = _keras()

    class TiedOutput(keras.layers.Layer):
        def __init__(self, embedding, **kw):
            super().__init__(**kw)
            self.embedding = embedding

        def call(self, h):
            return tf.matmul(h, self.embedding.embeddings, transpose_b=True)

    return TiedOutput


def shared_branches_tied_embedding_fit():
    keras = _keras()
    ids, _ = data.tokens(128, length=6, vocab=16)
    a, b = ids[:, :3], ids[:, 3:]
    y = ids[:, 0]
    keras.utils.set_random_seed(226)
    emb = keras.layers.Embedding(16, 6, name="shared_emb")
    enc = keras.layers.Dense(6, activation="tanh", name="shared_enc")
    ia, ib = keras.Input((3,), dtype="int32"), keras.Input((3,), dtype="int32")
    pool = keras.layers.GlobalAveragePooling1D()
    ha, hb = enc(pool(emb(ia))), enc(pool(emb(ib)))
    h = keras.layers.Average()([ha, hb])
    model = keras.Model([ia, ib], _tied_output_class()(emb, name="tied_out")(h))
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3), loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    model.fit([a, b], y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "x_fp": [_fp(a[i:i + 32], b[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 27. a GRU + LSTM stack trained by train_on_batch with class weights, Nadam ---------------

def gru_lstm_stack_train_on_batch_class_weight():
    keras = _keras()
    x, y = data.sequences(96, length=6, features=3)
    keras.utils.set_random_seed(227)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(4, return_sequences=True),
                              keras.layers.LSTM(4, recurrent_dropout=0.0, dropout=0.1), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Nadam(1e-2), loss=_ce())
    losses = []
    for i in range(0, 96, B):
        res = model.train_on_batch(x[i:i + B], y[i:i + B], class_weight={0: 1.0, 1: 2.0})
        losses.append(float(res if np.ndim(res) == 0 else res[0]))
    return Out(_weights(model), _iters(model.optimizer),
               {"modes": {"gru_cell": True, "lstm_cell": True}, "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)]})


# --- 28. (Keras 3) a loss written with keras.ops passed to compile, Conv1D + Dropout, fit()
#         on a tf.data pipeline with repeat and steps_per_epoch -------------------------------------

def keras_ops_loss_repeat_steps_per_epoch_fit():
    tf = _tf()
    keras = _keras()
    ops = keras.ops
    x, y = data.sequences(96, length=8, features=3)
    keras.utils.set_random_seed(228)

    def focal(y_true, y_pred):
        p = ops.clip(ops.sigmoid(y_pred), 1e-6, 1 - 1e-6)
        t = ops.cast(y_true, p.dtype)
        ce = -(t * ops.log(p) + (1 - t) * ops.log(1 - p))
        w = ops.power(ops.where(t > 0.5, 1 - p, p), 2.0)
        return ops.mean(w * ce, axis=-1)

    model = keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(6, 3, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=focal)
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None].astype("float32"))).batch(32).repeat()
    cb = _BatchLosses([32] * 4)
    model.fit(ds, epochs=2, steps_per_epoch=4, verbose=0, callbacks=[cb])
    # 3 batches an epoch of the data, 4 steps an epoch: the second epoch starts with its 2nd batch
    order = [0, 1, 2, 0, 1, 2, 0, 1]
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"dropout": True},
                "x_fp": [_fp(x[k * 32:k * 32 + 32]) for k in order]})


# --- 29. one regularised Dense called on the input and on a Lambda of it (shared kernel), loss
#         by string, fit() with validation_split ----------------------------------------------------

def shared_regularized_dense_validation_split_fit():
    keras = _keras()
    x, y = data.regression(160)
    keras.utils.set_random_seed(229)
    inp = keras.Input((10,))
    shared = keras.layers.Dense(10, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-3), name="shared")
    h1 = shared(inp)
    h2 = shared(keras.layers.Lambda(lambda t: t * 0.5)(inp))
    out = keras.layers.Dense(1, name="out")(keras.layers.Concatenate()([h1, h2]))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.02, nesterov=True, momentum=0.8), loss="mean_absolute_error")
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, validation_split=0.2, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 30. a tape loop inside tf.function stepping a Keras model and a raw tf.Variable temperature
#         with two optimizers (Adam for the model, SGD for the temperature) --------------------------

def model_and_raw_temperature_two_optimizers_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(230)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    log_t = tf.Variable(0.0, name="log_temperature")
    opt_m, opt_t = keras.optimizers.Adam(5e-3), keras.optimizers.SGD(0.05)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True) / tf.exp(log_t)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        g = tape.gradient(loss, model.trainable_variables + [log_t])
        opt_m.apply_gradients(zip(g[:-1], model.trainable_variables))
        opt_t.apply_gradients([(g[-1], log_t)])
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        for _ in range(2):  # both optimizers' steps
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    n = len(losses)
    return Out(_weights(model) + [log_t.numpy()], _iters(opt_m) + _iters(opt_t),
               {"losses": losses, "grads": [g for g in grads if g[0] % 2 == 0],
                "optimizers": ["Adam", "SGD"],
                "applied": {_vname(model.trainable_variables[0]): [True, False] * (n // 2),
                            "log_temperature": [False, True] * (n // 2)}})


# --- 31. (Keras 3) gradient accumulation by the optimizer inside an XLA-compiled tape step:
#         Adam(gradient_accumulation_steps=2) under tf.function(jit_compile=True) -----------------

def optimizer_gradient_accumulation_xla_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(231)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    opt = keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2)
    ce = _ce()

    @tf.function(jit_compile=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads, moved = [], [], []
    for i in range(0, 128, B):
        before = np.array(model.trainable_variables[0])
        loss, gn = step(x[i:i + B], y[i:i + B])
        moved.append(not np.array_equal(before, np.array(model.trainable_variables[0])))
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    assert moved == [False, True] * 4, moved
    return Out(_weights(model), len(losses), {"losses": losses, "grads": grads,
                                              "applied": {_vname(model.trainable_variables[0]): moved}})


# --- 32. an optimizer's EMA (use_ema=True, never overwritten during training) copied into the
#         weights by finalize_variable_values after a tf.function tape loop ----------------------

def ema_finalized_after_tape_loop():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(232)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.05, momentum=0.5, use_ema=True, ema_momentum=0.8)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = keras.losses.MeanSquaredError()(yb, model(xb, training=True)[:, 0])
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    opt.finalize_variable_values(model.trainable_variables)
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 33. (Keras 3) SGD(gradient_accumulation_steps=2) in fit() compiled with XLA and
#         steps_per_execution=2: every other step applies --------------------------------------------

def accumulation_xla_steps_per_execution_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(233)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss=_ce(),
                  jit_compile=True, steps_per_execution=2)
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return Out(_weights(model), 128 // B, {"modes": {"dropout": True},
                                           "applied": {_vname(model.layers[0].kernel): [False, True] * 4},
                                           "x_fp": [_fp(x[i:i + B]) for i in range(0, 128, B)]})


# --- 34. Ftrl stepping an Embedding (IndexedSlices) in a tf.function tape loop --------------------

def ftrl_embedding_sparse_function():
    tf = _tf()
    keras = _keras()
    x, y = data.tokens(64, length=6, vocab=25)
    keras.utils.set_random_seed(234)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(25, 4),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    opt = keras.optimizers.Ftrl(0.2, l2_regularization_strength=1e-3)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(tf.convert_to_tensor(g[0]))

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})
