# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A third set of training scripts as users write them, each through ``tf.keras`` so that it
runs on Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on tf-keras.

Each returns :class:`Out` with its final weights, the optimizer steps it counted and, in
``extra``, what the script itself knows about its steps, for the test to compare with the
record: ``losses`` (the loss of every step; for ``fit()`` recovered from the running mean its
callbacks see), ``grads`` (``(step, variable path suffix, tf.norm of the gradient)``),
``modes`` (layer name -> the ``training`` value every step ran it in), ``state`` (variable path
suffix -> whether every step changed it), ``not_applied`` (variable path suffixes no step may
change), ``meta`` (dotted key of the run's metadata -> expected value).
"""

from __future__ import annotations

import tempfile

import numpy as np

from . import data
from .scripts import Out

B = 16


def _tf():
    import tensorflow as tf

    return tf


def _keras():
    return _tf().keras


def _legacy() -> bool:
    return "tf_keras" in type(_keras().layers.Dense).__module__ or _keras().__name__.startswith("tf_keras")


def _weights(*models) -> list[np.ndarray]:
    return [np.array(w) for m in models for w in m.get_weights()]


def _iters(opt) -> int:
    return int(opt.iterations.numpy())


class _BatchLosses:
    """A user's callback: each batch's loss from the running mean fit() reports (weighted by
    batch size, reset every epoch)."""

    def __new__(cls, sizes_of_epoch):
        keras = _keras()

        class Cb(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.losses: list[float] = []
                self._sum = 0.0
                self._n = 0

            def on_epoch_begin(self, epoch, logs=None):
                self._sum, self._n = 0.0, 0

            def on_train_batch_end(self, batch, logs=None):
                b = sizes_of_epoch[batch]
                total = float(logs["loss"]) * (self._n + b)
                self.losses.append((total - self._sum) / b)
                self._sum, self._n = total, self._n + b

        return Cb()


def _sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - i) for i in range(0, n, batch)]


def _grad_of(model, loss_fn, xb, yb, training=True, extra_losses=False):
    """The gradient the script computes itself (not applied)."""
    tf = _tf()
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=training))
        if extra_losses and model.losses:
            loss = loss + tf.add_n(model.losses)
    return loss, tape.gradient(loss, model.trainable_variables)


def _fp(*arrays) -> tuple[float, int]:
    """(sum, count) of a batch's numbers: the first and last entries of its fingerprint."""
    flat = [np.asarray(a, np.float64).ravel() for a in arrays]
    return float(sum(f.sum() for f in flat)), int(sum(f.size for f in flat))


def _vname(v) -> str:
    """The variable's name as the run's inventory lists it."""
    return v.path if hasattr(v, "path") and not _legacy() else v.name.split(":")[0]


def _norm(g) -> float:
    tf = _tf()
    if isinstance(g, tf.IndexedSlices):
        g = tf.convert_to_tensor(g)
    return float(tf.norm(g))


# --- 1. Embedding(mask_zero) + Bidirectional LSTM, fit() with validation, EarlyStopping,
#        ModelCheckpoint and Nadam on an ExponentialDecay ---------------------------------------

def bilstm_masked_fit_checkpoint():
    keras = _keras()
    x, y = data.tokens(112, length=10, vocab=30, pad=True)
    keras.utils.set_random_seed(31)
    model = keras.Sequential([
        keras.Input((10,), dtype="int32"),
        keras.layers.Embedding(30, 6, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(5)),
        keras.layers.Dense(1),
    ])
    sched = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.8)
    model.compile(optimizer=keras.optimizers.Nadam(sched),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    cb = _BatchLosses(_sizes(80, B))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = keras.callbacks.ModelCheckpoint(f"{tmp}/best.weights.h5" if not _legacy() else f"{tmp}/best.h5",
                                               save_weights_only=True, save_best_only=True, monitor="val_loss")
        model.fit(x[:80], y[:80].astype("float32"), validation_data=(x[80:], y[80:].astype("float32")),
                  batch_size=B, epochs=3, shuffle=False, verbose=0,
                  callbacks=[cb, ckpt, keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "meta": {"optimizer.class": "Nadam", "loss.class": "BinaryCrossentropy",
                         "loss.from_logits": True, "fit.validation": True}})


# --- 2. GRU with dropout over masked tokens, a reduce_retracing tf.function tape step, a ragged
#        last batch (drop_remainder=False), Adamax with clipvalue -----------------------------------

def gru_masked_reduce_retracing_ragged():
    tf = _tf()
    keras = _keras()
    x, y = data.tokens(90, length=8, vocab=25, pad=True)
    keras.utils.set_random_seed(32)
    model = keras.Sequential([
        keras.Input((8,), dtype="int32"),
        keras.layers.Embedding(25, 5, mask_zero=True),
        keras.layers.GRU(6, dropout=0.1),
        keras.layers.Dense(2),
    ])
    opt = keras.optimizers.Adamax(2e-2, clipvalue=0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=False)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss, tf.norm(grads[-2])

    losses, grads, xs, ys = [], [], [], []
    for _epoch in range(2):
        for xb, yb in ds:
            loss, gn = step(xb, yb)
            grads.append((len(losses), _vname(model.trainable_variables[-2]), float(gn)))
            losses.append(float(loss))
            xs.append(_fp(xb))
            ys.append(_fp(yb))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "x_fp": xs, "y_fp": ys,
                                              "batch_sizes": [32, 32, 26] * 2, "meta": {"optimizer.class": "Adamax",
               "optimizer.config.clipvalue": 0.05}})


# --- 3. Conv1D text classifier with SpatialDropout1D, Adagrad, class_weight, steps_per_execution --

def conv1d_text_class_weight_spe():
    keras = _keras()
    x, y = data.tokens(96, length=12, vocab=30)
    keras.utils.set_random_seed(33)
    model = keras.Sequential([
        keras.Input((12,), dtype="int32"),
        keras.layers.Embedding(30, 8),
        keras.layers.SpatialDropout1D(0.2),
        keras.layers.Conv1D(6, 3, activation="relu"),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(2),
    ])
    model.compile(optimizer=keras.optimizers.Adagrad(5e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=3)
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, class_weight={0: 1.0, 1: 3.0})
    return Out(_weights(model), _iters(model.optimizer),
               {"modes": {"spatial_dropout1d": True},
                "meta": {"optimizer.class": "Adagrad", "fit.steps_per_execution": 3,
                         "fit.class_weight": {"0": 1.0, "1": 3.0}, "fit.sample_weight": False}})


# --- 4. Functional two inputs, two named outputs, dict losses, loss_weights, per-output
#        metrics, sample_weight ------------------------------------------------------------------

def _two_heads():
    keras = _keras()
    keras.utils.set_random_seed(34)
    a = keras.Input((13,), name="features")
    b = keras.Input((3,), name="side")
    h = keras.layers.Dense(12, activation="relu")(a)
    h = keras.layers.Concatenate()([h, b])
    h = keras.layers.LayerNormalization()(h)
    kind = keras.layers.Dense(3, name="kind")(h)
    score = keras.layers.Dense(1, name="score")(h)
    return keras.Model({"features": a, "side": b}, {"kind": kind, "score": score})


def _two_heads_data():
    x, y = data.wine()
    rng = np.random.default_rng(34)
    side = rng.normal(size=(len(x), 3)).astype("float32")
    score = (x[:, 1:2] - side[:, 0:1]).astype("float32")
    return {"features": x[:96], "side": side[:96]}, {"kind": y[:96], "score": score[:96]}


def two_heads_dict_losses_sample_weight():
    keras = _keras()
    x, y = _two_heads_data()
    model = _two_heads()
    w0 = model.get_weights()
    sw = np.where(y["kind"] == 0, 2.0, 1.0).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss={"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "score": keras.losses.Huber(delta=0.5)},
                  loss_weights={"kind": 1.0, "score": 0.25},
                  metrics={"kind": ["accuracy"], "score": [keras.metrics.MeanAbsoluteError()]})
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, sample_weight=sw, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    # step 0 by hand from the initial weights
    ref = _two_heads()
    ref.set_weights(w0)
    tf = _tf()
    xb = {k: v[:B] for k, v in x.items()}
    with tf.GradientTape() as tape:
        out = ref(xb, training=True)
        loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y["kind"][:B], out["kind"],
                                                                              sample_weight=sw[:B])
                + 0.25 * keras.losses.Huber(delta=0.5)(y["score"][:B], out["score"], sample_weight=sw[:B]))
    g = tape.gradient(loss, ref.trainable_variables)
    first = [i for i, v in enumerate(ref.trainable_variables) if v.shape == (13, 12)][0]
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "grads": [(0, _vname(model.trainable_variables[first]), _norm(g[first]))],
                "x_fp": [_fp(x["features"][i:i + B], x["side"][i:i + B]) for i in range(0, 96, B)],
                "y_fp": [_fp(y["kind"][i:i + B], y["score"][i:i + B]) for i in range(0, 96, B)],
                "step0_loss": float(loss), "meta": {"optimizer.class": "SGD", "optimizer.config.nesterov": True,
                                                   "fit.sample_weight": True}})


# --- 5. activity_regularizer + add_loss in a custom layer, eager tape adding model.losses -------

def _aux_loss_layer():
    keras = _keras()
    tf = _tf()

    class SparsityPenalty(keras.layers.Layer):
        def call(self, inputs):
            self.add_loss(1e-2 * tf.reduce_mean(tf.abs(inputs)))
            return inputs

    return SparsityPenalty


def add_loss_activity_regularizer_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(35)
    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(8, activation="tanh", activity_regularizer=keras.regularizers.L2(1e-2)),
        _aux_loss_layer()(),
        keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L1(1e-3)),
    ])
    opt = keras.optimizers.RMSprop(1e-2, momentum=0.5)
    losses, regs, grads = [], [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            pred = model(x[i:i + B], training=True)
            mse = tf.reduce_mean(tf.square(pred[:, 0] - y[i:i + B]))
            reg = tf.add_n(model.losses)
            loss = mse + reg
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        losses.append(float(loss))
        regs.append(float(reg))
        grads.append((len(grads), _vname(model.trainable_variables[2]), _norm(g[2])))
    return Out(_weights(model), _iters(opt), {"losses": losses, "reg_losses": regs, "grads": grads})


# --- 6. a custom layer with its own training branch and a non-trainable step counter ----------

def _noisy_counter_layer():
    keras = _keras()
    tf = _tf()

    class NoisyScale(keras.layers.Layer):
        """Scales its input; in training adds noise and counts the training calls."""

        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
            self.calls = self.add_weight(name="calls", shape=(), initializer="zeros", trainable=False)

        def call(self, inputs, training=None):
            if training:
                self.calls.assign_add(1.0)
                inputs = inputs + tf.random.normal(tf.shape(inputs), stddev=0.05, seed=7)
            return inputs * self.scale

    return NoisyScale


def custom_training_branch_counter_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(36)
    layer_cls = _noisy_counter_layer()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              layer_cls(name="noisy_scale"), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[2])

    losses, grads = [], []
    for i in range(0, 128, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[2]), float(gn)))
        losses.append(float(loss))
        model(x[:4], training=False)  # an inference call between steps: not counted
    counted = float(model.layers[1].calls.numpy())
    assert counted == len(losses), counted
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "modes": {"noisy_scale": True}, "state": {"noisy_scale/calls": True}})


# --- 7. GroupNormalization + LayerNormalization CNN, SGD(nesterov) on CosineDecay,
#        global_clipnorm, jit_compile fit() ------------------------------------------------------

def groupnorm_cosine_global_clipnorm_xla_fit():
    keras = _keras()
    x, y = data.digits_images(96)
    keras.utils.set_random_seed(37)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.GroupNormalization(groups=4),
        keras.layers.Activation("relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(10),
    ])
    sched = keras.optimizers.schedules.CosineDecay(5e-2, decay_steps=12, alpha=0.1)
    model.compile(optimizer=keras.optimizers.SGD(sched, momentum=0.9, nesterov=True, global_clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "meta": {"optimizer.class": "SGD", "optimizer.config.global_clipnorm": 1.0,
                         "fit.jit_compile": True}})


# --- 8. GaussianNoise, GaussianDropout, AlphaDropout, SpatialDropout2D; RMSprop on a
#        PiecewiseConstantDecay, clipnorm ---------------------------------------------------------

def noise_layers_piecewise_clipnorm_fit():
    keras = _keras()
    x, y = data.digits_images(96)
    keras.utils.set_random_seed(38)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.GaussianNoise(0.1),
        keras.layers.Conv2D(6, 3, activation="selu"),
        keras.layers.SpatialDropout2D(0.2),
        keras.layers.Flatten(),
        keras.layers.AlphaDropout(0.1),
        keras.layers.Dense(12, activation="selu"),
        keras.layers.GaussianDropout(0.2),
        keras.layers.Dense(10),
    ])
    sched = keras.optimizers.schedules.PiecewiseConstantDecay([3, 6], [1e-2, 5e-3, 1e-3])
    model.compile(optimizer=keras.optimizers.RMSprop(sched, clipnorm=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "modes": {"gaussian_noise": True, "spatial_dropout2d": True, "alpha_dropout": True,
                          "gaussian_dropout": True},
                "lrs": [float(sched(i)) for i in range(_iters(model.optimizer))],
                "meta": {"optimizer.class": "RMSprop", "optimizer.config.clipnorm": 0.5}})


# --- 9. RandomFlip / RandomRotation augmentation inside the model, AdamW -----------------------

def augmentation_in_model_adamw_fit():
    keras = _keras()
    x, y = data.digits_images(96)
    keras.utils.set_random_seed(39)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.1),
        keras.layers.Conv2D(6, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "modes": {"random_flip": True, "random_rotation": True},
                "meta": {"optimizer.class": "AdamW", "optimizer.config.weight_decay": 1e-3}})


# --- 10. Model subclass: train_step with compute_loss / compiled loss and metrics, test_step,
#         validation_data ---------------------------------------------------------------------

def subclass_train_step_compute_loss():
    tf = _tf()
    keras = _keras()
    legacy = _legacy()
    x, y = data.breast_cancer(128)

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(12, activation="relu")
            self.drop = keras.layers.Dropout(0.2)
            self.out = keras.layers.Dense(1)
            self.seen = []

        def call(self, inputs, training=False):
            return self.out(self.drop(self.hidden(inputs), training=training))

        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                if legacy:
                    loss = self.compiled_loss(yb, pred, regularization_losses=self.losses)
                else:
                    loss = self.compute_loss(x=xb, y=yb, y_pred=pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            if legacy:
                self.compiled_metrics.update_state(yb, pred)
            else:
                for m in self.metrics:
                    if m.name == "loss":
                        m.update_state(loss)
                    else:
                        m.update_state(yb, pred)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, batch):
            xb, yb = batch
            pred = self(xb, training=False)
            if legacy:
                self.compiled_loss(yb, pred)
                self.compiled_metrics.update_state(yb, pred)
            else:
                loss = self.compute_loss(x=xb, y=yb, y_pred=pred, training=False)
                for m in self.metrics:
                    m.update_state(loss) if m.name == "loss" else m.update_state(yb, pred)
            return {m.name: m.result() for m in self.metrics}

    keras.utils.set_random_seed(40)
    model = Classifier()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    model.fit(x[:96], y[:96], validation_data=(x[96:], y[96:]), batch_size=B, epochs=2, shuffle=False, verbose=0)
    return Out(_weights(model), _iters(model.optimizer),
               {"modes": {"dropout": True}, "meta": {"optimizer.class": "Adam", "loss.class": "BinaryCrossentropy"}})


# --- 11. a test_step-only override, fit() with validation_data -------------------------------

def test_step_only_override_fit():
    keras = _keras()
    tf = _tf()
    x, y = data.regression(128)

    class Regressor(keras.Model):
        def test_step(self, batch):
            xb, yb = batch
            pred = self(xb, training=False)
            self.val_mae.update_state(yb, pred[:, 0])
            return {"mae": self.val_mae.result()}

    keras.utils.set_random_seed(41)
    inp = keras.Input((10,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    model = Regressor(inp, keras.layers.Dense(1)(h))
    w0 = model.get_weights()
    model.val_mae = keras.metrics.MeanAbsoluteError()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x[:96], y[:96], validation_data=(x[96:], y[96:]), batch_size=B, epochs=2, shuffle=False,
              verbose=0, callbacks=[cb])
    ref = keras.Model(inp, model.outputs)  # same graph: rebuilt below from the initial weights
    del ref
    keras.utils.set_random_seed(41)
    inp2 = keras.Input((10,))
    h2 = keras.layers.BatchNormalization()(keras.layers.Dense(8, activation="relu")(inp2))
    ref = keras.Model(inp2, keras.layers.Dense(1)(h2))
    ref.set_weights(w0)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[:B, None], ref(x[:B], training=True))
    g = tape.gradient(loss, ref.trainable_variables)
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "grads": [(0, _vname(model.trainable_variables[0]), _norm(g[0]))],
                "modes": {"batch_normalization": True},
                "state": {"moving_mean": True, "moving_variance": True}})


# --- 12. mixed_float16 policy on CPU, fit() -------------------------------------------------

def mixed_float16_fit():
    keras = _keras()
    x, y = data.digits(96)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(42)
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
            keras.layers.Activation("linear", dtype="float32"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        cb = _BatchLosses(_sizes(96, B))
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    finally:
        keras.mixed_precision.set_global_policy(prev)
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 2e-3, "loss_scaled": True,
                "modes": {"batch_normalization": True},
                "state": {"moving_mean": True, "moving_variance": True},
                "meta": {"dtype_policy": "mixed_float16"}})


# --- 13. transfer learning: frozen base, then unfrozen and recompiled with a lower rate -------

def freeze_then_unfreeze_fit():
    keras = _keras()
    x, y = data.digits_images(96)
    keras.utils.set_random_seed(43)
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D()], name="base")
    inp = keras.Input((8, 8, 1))
    h = base(inp, training=False)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bn = base.layers[1]
    before = np.array(bn.moving_mean)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    n1 = _iters(model.optimizer)
    moved1 = not np.array_equal(before, np.array(bn.moving_mean))
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = np.array(bn.moving_mean)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    n2 = _iters(model.optimizer)
    moved2 = not np.array_equal(before, np.array(bn.moving_mean))
    # tf-keras keeps the training=False the base was called with; Keras 3's functional call
    # passes fit()'s training=True to every layer (frozen BatchNormalization then still
    # normalises with its moving statistics and leaves them alone)
    mode = not _legacy()
    return Out(_weights(model), n1 + n2,
               {"modes": {"batch_normalization": mode},
                "state": {"moving_mean": [moved1] * n1 + [moved2] * n2},
                "frozen": {"batch_normalization": [True] * n1 + [False] * n2},
                "not_applied_until": {"conv2d/kernel": n1}})


# --- 14. a GAN-like loop: generator and critic in one persistent tape, two optimizers (Lion and
#         AdamW), one tf.function step -------------------------------------------------------------

def gan_one_persistent_tape_two_optimizers():
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(44)
    real = np.random.default_rng(44).normal(loc=2.0, size=(96, 4)).astype("float32")
    gen = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)],
                           name="gen")
    critic = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                               keras.layers.Dropout(0.1), keras.layers.Dense(1)], name="critic")
    g_opt = keras.optimizers.AdamW(2e-3, weight_decay=1e-4)
    d_opt = keras.optimizers.Lion(1e-4)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(xb, z):
        with tf.GradientTape(persistent=True) as tape:
            fake = gen(z, training=True)
            r, f = critic(xb, training=True), critic(fake, training=True)
            d_loss = bce(tf.ones_like(r), r) + bce(tf.zeros_like(f), f)
            g_loss = bce(tf.ones_like(f), f)
        dg = tape.gradient(d_loss, critic.trainable_variables)
        gg = tape.gradient(g_loss, gen.trainable_variables)
        del tape
        d_opt.apply_gradients(zip(dg, critic.trainable_variables))
        g_opt.apply_gradients(zip(gg, gen.trainable_variables))
        return d_loss, g_loss, tf.norm(dg[0]), tf.norm(gg[0])

    losses, grads = [], []
    zs = np.random.default_rng(45).normal(size=(96, 3)).astype("float32")
    for i in range(0, 96, B):
        dl, gl, dn, gn = step(real[i:i + B], zs[i:i + B])
        grads += [(len(losses), _vname(critic.trainable_variables[0]), float(dn)),
                  (len(losses) + 1, _vname(gen.trainable_variables[0]), float(gn))]
        losses += [float(dl), float(gl)]
    return Out(_weights(gen, critic), _iters(g_opt) + _iters(d_opt),
               {"losses": losses, "grads": grads, "optimizers": ["Lion", "AdamW"]})


# --- 15. jit_compile=True tape step, GroupNormalization + Dropout, Adam with a schedule ---------

def xla_tape_groupnorm_dropout():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(45)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), keras.layers.GroupNormalization(groups=4),
                              keras.layers.Activation("relu"), keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(keras.optimizers.schedules.InverseTimeDecay(1e-2, 2, 0.5))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 128, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "modes": {"dropout": True}})


# --- 16. tf.config.run_functions_eagerly(True) around a tf.function step ---------------------

def run_functions_eagerly_step():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(46)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(10, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.1), keras.layers.Dense(3)])
    opt = keras.optimizers.Nadam(5e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    tf.config.run_functions_eagerly(True)
    try:
        losses, grads = [], []
        for i in range(0, 128, 32):
            loss, gn = step(x[i:i + 32], y[i:i + 32])
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    finally:
        tf.config.run_functions_eagerly(False)
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "modes": {"batch_normalization": True, "dropout": True},
                                              "state": {"moving_mean": True, "moving_variance": True}})


# --- 17. tf.data .repeat().take() with a ragged last batch into fit(steps_per_epoch) ------------

def tf_data_repeat_take_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(72)
    keras.utils.set_random_seed(47)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    w0 = model.get_weights()
    y = y[:, None]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(20, drop_remainder=False).repeat().take(8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(ds, epochs=2, steps_per_epoch=4, verbose=0)
    ref = keras.models.clone_model(model)
    ref.set_weights(w0)
    loss, g = _grad_of(ref, keras.losses.BinaryCrossentropy(from_logits=True), x[:20], y[:20])
    return Out(_weights(model), _iters(model.optimizer),
               {"grads": [(0, _vname(model.trainable_variables[0]), _norm(g[0]))], "step0_loss": float(loss),
                "batch_sizes": [20, 20, 20, 12] * 2})


# --- 18. tf.data yielding (x, y, sample_weight) -----------------------------------------------

def tf_data_sample_weight_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    sw = np.linspace(0.5, 1.5, 96).astype("float32")
    keras.utils.set_random_seed(48)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    w0 = model.get_weights()
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None], sw)).batch(24)
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss=keras.losses.MeanAbsoluteError())
    model.fit(ds, epochs=2, verbose=0)
    ref = keras.models.clone_model(model)
    ref.set_weights(w0)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanAbsoluteError()(y[:24, None], ref(x[:24], training=True), sample_weight=sw[:24])
    g = tape.gradient(loss, ref.trainable_variables)
    return Out(_weights(model), _iters(model.optimizer),
               {"grads": [(0, _vname(model.trainable_variables[0]), _norm(g[0]))], "step0_loss": float(loss),
                "weight_sum0": float(sw[:24].sum())})


# --- 19. LSTM(return_sequences) tagger with masking in an eager loop, per-token weighted loss,
#         Adam with amsgrad ------------------------------------------------------------------------

def lstm_tagger_masked_eager():
    tf = _tf()
    keras = _keras()
    x, tags = data.token_tags(64, length=10, vocab=30)
    keras.utils.set_random_seed(49)
    model = keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(30, 6, mask_zero=True),
                              keras.layers.LSTM(6, return_sequences=True, recurrent_dropout=0.0, dropout=0.1),
                              keras.layers.Dense(2)])
    opt = keras.optimizers.Adam(1e-2, amsgrad=True)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    losses, grads, xs = [], [], []
    for i in range(0, 64, B):
        xb, yb = x[i:i + B], tags[i:i + B]
        mask = tf.cast(xb != 0, tf.float32)
        with tf.GradientTape() as tape:
            per_token = ce(yb, model(xb, training=True))
            loss = tf.reduce_sum(per_token * mask) / tf.reduce_sum(mask)
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
        xs.append(_fp(xb))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "x_fp": xs})


# --- 20. Conv1D on sequences with causal padding + Dense head, Adamax, global_clipnorm, tape in
#         tf.function over a repeating dataset iterated with next() -----------------------------

def conv1d_causal_iterator_steps():
    tf = _tf()
    keras = _keras()
    x, y = data.sequences(64, length=12, features=3)
    keras.utils.set_random_seed(50)
    model = keras.Sequential([keras.Input((12, 3)), keras.layers.Conv1D(6, 3, padding="causal", activation="relu"),
                              keras.layers.Conv1D(6, 3, dilation_rate=2, padding="causal"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    opt = keras.optimizers.Adamax(1e-2, global_clipnorm=0.5)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    it = iter(tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=3).batch(B).repeat())

    @tf.function
    def step():
        xb, yb = next(it)
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for _ in range(7):
        loss, gn = step()
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "meta": {"optimizer.config.global_clipnorm": 0.5}})


# --- 21. a frozen embedding (pretrained vectors) in a functional text model, Dense unfrozen
#         later by trainable=True without recompiling, in a tape loop --------------------------

def frozen_embedding_unfrozen_mid_loop():
    tf = _tf()
    keras = _keras()
    x, y = data.tokens(96, length=8, vocab=20)
    keras.utils.set_random_seed(51)
    inp = keras.Input((8,), dtype="int32")
    emb = keras.layers.Embedding(20, 4, name="emb")
    h = keras.layers.GlobalAveragePooling1D()(emb(inp))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    emb.trainable = False
    opts = [keras.optimizers.SGD(0.5)]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, grads = [], []
    for i in range(0, 96, B):
        if i == 48:
            emb.trainable = True
            opts.append(keras.optimizers.SGD(0.1))  # a new optimizer for the new set of variables
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        tv = model.trainable_variables
        g = tape.gradient(loss, tv)
        opts[-1].apply_gradients(zip(g, tv))
        grads.append((len(losses), _vname(tv[-2]), _norm(g[-2])))
        losses.append(float(loss))
    return Out(_weights(model), sum(_iters(o) for o in opts),
               {"losses": losses, "grads": grads, "optimizers": ["SGD", "SGD"],
                "not_applied_until": {"emb/embeddings": 3}})


# --- 22. two models, one tape, one optimizer over both (encoder + decoder autoencoder) --------

def autoencoder_two_models_one_optimizer():
    tf = _tf()
    keras = _keras()
    x, _ = data.digits(96)
    keras.utils.set_random_seed(52)
    enc = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.BatchNormalization()], name="enc")
    dec = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="sigmoid")], name="dec")
    opt = keras.optimizers.Adam(1e-2)
    bce = keras.losses.BinaryCrossentropy()
    losses, grads = [], []
    variables = enc.trainable_variables + dec.trainable_variables
    for i in range(0, 96, B):
        xb = x[i:i + B]
        with tf.GradientTape() as tape:
            loss = bce(xb, dec(enc(xb, training=True), training=True))
        g = tape.gradient(loss, variables)
        opt.apply_gradients(zip(g, variables))
        grads.append((len(losses), _vname(variables[-2]), _norm(g[-2])))
        losses.append(float(loss))
    return Out(_weights(enc, dec), _iters(opt), {"losses": losses, "grads": grads,
                                                 "modes": {"batch_normalization": True},
                                                 "state": {"moving_mean": True, "moving_variance": True}})


# --- 23. evaluate() and predict() between fit() epochs, with BatchNormalization -------------

def fit_evaluate_predict_interleaved():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(53)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    n = 0
    losses = []
    for _ in range(2):
        cb = _BatchLosses(_sizes(96, 32))
        model.fit(x[:96], y[:96], batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
        losses += cb.losses
        model.evaluate(x[96:], y[96:], verbose=0)
        model.predict(x[96:], verbose=0)
        n += 3
    assert _iters(model.optimizer) == n
    xs = [_fp(x[i:i + 32]) for i in range(0, 96, 32)] * 2
    ys = [_fp(y[i:i + 32]) for i in range(0, 96, 32)] * 2
    return Out(_weights(model), n, {"losses": losses, "loss_rtol": 1e-4, "modes": {"batch_normalization": True},
                                    "x_fp": xs, "y_fp": ys,
                                    "state": {"moving_mean": True, "moving_variance": True}})


# --- 24. a subclassed model that keeps BatchNormalization in inference mode while its Dropout
#         trains (fine-tuning on small batches), eager tape -------------------------------------

def subclass_bn_inference_dropout_training():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = keras.layers.Dense(12, activation="relu")
            self.bn = keras.layers.BatchNormalization()
            self.drop = keras.layers.Dropout(0.3)
            self.d2 = keras.layers.Dense(3)

        def call(self, inputs, training=False):
            h = self.bn(self.d1(inputs), training=False)
            return self.d2(self.drop(h, training=training))

    keras.utils.set_random_seed(54)
    model = Net()
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, grads = [], []
    for i in range(0, 128, B):
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.d2.kernel), _norm(g[-2])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "modes": {"batch_normalization": False, "dropout": True},
                                              "state": {"moving_mean": False, "moving_variance": False}})


# --- 25. a LearningRateScheduler callback and validation_split, fit() ---------------------

def lr_scheduler_callback_validation_split():
    keras = _keras()
    x, y = data.digits(120)
    keras.utils.set_random_seed(55)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])

    def rate(epoch, lr):
        return 1e-2 * 0.5 ** epoch

    model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=3)])
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=3, validation_split=0.2, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(rate), cb])
    per_epoch = len(_sizes(96, B))
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "lrs": [rate(e, None) for e in range(3) for _ in range(per_epoch)],
                "meta": {"fit.validation_split": 0.2, "optimizer.config.momentum": 0.8}})


# --- 26. steps_per_execution=4: every step's loss, from the same training run one step per
#         execution (the same numbers) -----------------------------------------------------------

def _spe_fit(spe: int):  # the loss callback needs one call per batch: spe == 1
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(56)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="tanh"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=spe)
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[cb] if spe == 1 else [])
    return model, cb.losses


def steps_per_execution_every_loss():
    model, _ = _spe_fit(4)
    ref, losses = _spe_fit(1)  # the script's own reference: one step per execution, the same numbers
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(ref)))
    return Out(_weights(model, ref), _iters(model.optimizer) + _iters(ref.optimizer),
               {"losses": losses * 2, "loss_rtol": 1e-4,
                # the first model's BatchNormalization trains in its 12 steps, then rests
                "modes": {model.layers[1].name: [True] * 12 + ["<absent>"] * 12},
                "state": {_vname(model.layers[1].moving_mean): [True] * 12 + [False] * 12,
                          _vname(ref.layers[1].moving_mean): ["<absent>"] * 12 + [True] * 12}})


# --- 27. adversarial training (FGSM): a gradient with respect to the input, then the step on
#         the perturbed batch ------------------------------------------------------------------

def adversarial_fgsm_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(57)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10)])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as t:
            t.watch(xb)
            clean = ce(yb, model(xb, training=False))
        x_adv = tf.stop_gradient(xb + 0.05 * tf.sign(t.gradient(clean, xb)))
        with tf.GradientTape() as tape:
            loss = ce(yb, model(x_adv, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0]), x_adv

    losses, grads, xs, ys = [], [], [], []
    for i in range(0, 96, B):
        loss, gn, _ = step(tf.constant(x[i:i + B]), tf.constant(y[i:i + B]))
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
        # the step's data is the batch it was given (the first model call under a tape); the
        # perturbed copy is derived from it and changes with the weights
        xs.append(_fp(x[i:i + B]))
        ys.append(_fp(y[i:i + B]))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "x_fp": xs, "y_fp": ys,
                                              "batch_sizes": [B] * len(losses)})


# --- 28. explicit LossScaleOptimizer under mixed_float16 in a tape loop ------------------------

def loss_scale_optimizer_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(58)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, dtype="float32")])
        opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-2))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
                scaled = opt.get_scaled_loss(loss) if _legacy() else opt.scale_loss(loss)
            g = tape.gradient(scaled, model.trainable_variables)
            if _legacy():
                g = opt.get_unscaled_gradients(g)
                gn = tf.norm(tf.cast(g[0], tf.float32))
            else:
                gn = tf.norm(tf.cast(g[0], tf.float32)) / (scaled / loss)  # a power of two: exact
            opt.apply_gradients(zip(g, model.trainable_variables))
            return loss, gn

        losses, grads = [], []
        for i in range(0, 96, B):
            loss, gn = step(x[i:i + B], y[i:i + B])
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
        n = len(losses)
    finally:
        keras.mixed_precision.set_global_policy(prev)
    return Out(_weights(model), n, {"losses": losses, "grads": grads, "loss_scaled": True})


# --- 29. gradient checkpointing: a block under tf.recompute_grad ------------------------------

def recompute_grad_block_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(59)
    inner = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(16, activation="relu")], name="inner")
    head = keras.layers.Dense(1, name="head")
    head.build((None, 16))
    block = tf.recompute_grad(lambda t: inner(t, training=True))
    variables = inner.trainable_variables + head.trainable_variables
    opt = keras.optimizers.Adam(1e-2)
    losses, grads = [], []
    for i in range(0, 96, B):
        xb = tf.constant(x[i:i + B])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(head(block(xb))[:, 0] - y[i:i + B]))
        g = tape.gradient(loss, variables)
        opt.apply_gradients(zip(g, variables))
        grads.append((len(losses), _vname(variables[0]), _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(inner, head), _iters(opt), {"losses": losses, "grads": grads})


# --- 30. a siamese network: one encoder called twice per step, a contrastive loss ------------

def siamese_contrastive_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(60)
    enc = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dropout(0.1), keras.layers.Dense(8)], name="enc")
    opt = keras.optimizers.RMSprop(5e-3)

    @tf.function
    def step(a, b, same):
        with tf.GradientTape() as tape:
            d = tf.reduce_sum(tf.square(enc(a, training=True) - enc(b, training=True)), axis=1)
            loss = tf.reduce_mean(same * d + (1.0 - same) * tf.square(tf.nn.relu(1.0 - tf.sqrt(d + 1e-6))))
        g = tape.gradient(loss, enc.trainable_variables)
        opt.apply_gradients(zip(g, enc.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 64, B):
        a, b = x[i:i + B], x[64 + i:64 + i + B]
        same = (y[i:i + B] == y[64 + i:64 + i + B]).astype("float32")
        loss, gn = step(a, b, same)
        grads.append((len(losses), _vname(enc.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(enc), _iters(opt), {"losses": losses, "grads": grads, "modes": {"dropout": True}})


# --- 31. a whole epoch inside one tf.function: the dataset loop becomes a tf.while_loop ------

def epoch_in_one_function_while_loop():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(62)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)

    @tf.function
    def epoch():
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        norms = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        i = 0
        for xb, yb in ds:
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
            g = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(g, model.trainable_variables))
            losses = losses.write(i, loss)
            norms = norms.write(i, tf.norm(g[0]))
            i += 1
        return losses.stack(), norms.stack()

    losses, grads = [], []
    for _ in range(2):
        ls, ns = epoch()
        for loss, gn in zip(ls.numpy(), ns.numpy()):
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "modes": {"dropout": True},
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)] * 2})


# --- 32. a tape that watches only what it is told (watch_accessed_variables=False) ----------

def tape_watching_chosen_variables():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(63)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    head = model.layers[-1].trainable_variables
    opt = keras.optimizers.SGD(0.05)
    losses, grads = [], []
    for i in range(0, 96, B):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(head if _legacy() else [v.value for v in head])  # only the head learns
            loss = tf.reduce_mean(tf.square(model(x[i:i + B], training=True)[:, 0] - y[i:i + B]))
        g = tape.gradient(loss, head)
        opt.apply_gradients(zip(g, head))
        grads.append((len(losses), _vname(head[0]), _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 33. fit() on a Python generator of batches of varying size -------------------------------

def fit_on_generator_varying_batches():
    keras = _keras()
    x, y = data.wine()
    sizes = [24, 24, 10, 24, 24, 10]
    bounds = np.cumsum([0] + sizes)

    def batches():
        while True:
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                yield x[lo % 128:lo % 128 + (hi - lo)], y[lo % 128:lo % 128 + (hi - lo)]

    keras.utils.set_random_seed(64)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(batches(), steps_per_epoch=3, epochs=2, verbose=0)
    xs = [_fp(x[lo % 128:lo % 128 + s]) for lo, s in zip(bounds[:-1], sizes)]
    return Out(_weights(model), _iters(model.optimizer), {"batch_sizes": sizes, "x_fp": xs})


# --- 34. raw strings through TextVectorization inside the model, an adapted Normalization on
#         a second input; the preprocessing state never moves -----------------------------------

def text_vectorization_normalization_fit():
    tf = _tf()
    keras = _keras()
    rng = np.random.default_rng(65)
    words = np.array(["good", "bad", "fine", "awful", "great", "poor", "ok", "meh"])
    texts = np.array([" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(96)])
    y = np.array([sum(w in ("good", "fine", "great", "ok") for w in t.split()) * 2 > len(t.split())
                  for t in texts]).astype("float32")
    num = rng.normal(loc=3.0, scale=2.0, size=(96, 2)).astype("float32")
    keras.utils.set_random_seed(65)
    vec = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=6, name="vec")
    vec.adapt(texts)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(num)
    t_in = keras.Input((), dtype="string", name="text")
    n_in = keras.Input((2,), name="num")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(12, 4)(vec(t_in)))
    h = keras.layers.Concatenate()([h, norm(n_in)])
    model = keras.Model({"text": t_in, "num": n_in}, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.AUC()])
    ds = tf.data.Dataset.from_tensor_slices(({"text": texts, "num": num}, y[:, None])).batch(B)
    cb = _BatchLosses(_sizes(96, B))
    model.fit(ds, epochs=1, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "state": {_vname(v): False for v in norm.non_trainable_variables},
                "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)],
                "meta": {"metrics": [{"name": "auc", "class": "AUC", "given": "object"}]}})


# --- 35. an XLA-compiled tape step with reduce_retracing over batches of three sizes ----------

def xla_reduce_retracing_ragged_batches():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(100)
    keras.utils.set_random_seed(66)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.LayerNormalization(), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads, xs, sizes = [], [], [], []
    for lo, hi in [(0, 32), (32, 64), (64, 80), (80, 100), (0, 24), (24, 56)]:
        loss, gn = step(x[lo:hi], y[lo:hi])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
        xs.append(_fp(x[lo:hi]))
        sizes.append(hi - lo)
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "x_fp": xs, "batch_sizes": sizes})


# --- 36. jit_compile fit() whose last batch is smaller (100 samples, batches of 16) --------------

def xla_fit_ragged_last_batch():
    keras = _keras()
    x, y = data.digits(100)
    keras.utils.set_random_seed(67)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2, clipvalue=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    cb = _BatchLosses(_sizes(100, B))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "batch_sizes": _sizes(100, B) * 2,
                "x_fp": [_fp(x[i:i + B]) for i in range(0, 100, B)] * 2, "modes": {"dropout": True}})


# --- 37. an eager GAN with BatchNormalization in both models: which moving statistics each
#         step moved, seen by the script itself -------------------------------------------------

def eager_gan_batchnorm_both():
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(68)
    real = np.random.default_rng(68).normal(loc=1.0, size=(64, 4)).astype("float32")
    zs = np.random.default_rng(69).normal(size=(64, 3)).astype("float32")
    gen = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                            keras.layers.Activation("relu"), keras.layers.Dense(4)], name="gen")
    critic = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                               keras.layers.Activation("relu"), keras.layers.Dense(1)], name="critic")
    g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    watched = {_vname(m.layers[1].moving_mean): m.layers[1].moving_mean for m in (gen, critic)}
    moved: dict[str, list[bool]] = {k: [] for k in watched}
    losses = []

    def snapshot():
        return {k: np.array(v) for k, v in watched.items()}

    for i in range(0, 64, B):
        xb, z = real[i:i + B], zs[i:i + B]
        before = snapshot()
        with tf.GradientTape() as tape:  # the critic's step; the generator runs in inference mode
            fake = gen(z, training=False)
            r, f = critic(xb, training=True), critic(fake, training=True)
            d_loss = bce(tf.ones_like(r), r) + bce(tf.zeros_like(f), f)
        d_opt.apply_gradients(zip(tape.gradient(d_loss, critic.trainable_variables), critic.trainable_variables))
        after = snapshot()
        for k in watched:
            moved[k].append(not np.array_equal(before[k], after[k]))
        losses.append(float(d_loss))
        before = after
        with tf.GradientTape() as tape:  # the generator's step; the critic judges in inference mode
            f = critic(gen(z, training=True), training=False)
            g_loss = bce(tf.ones_like(f), f)
        g_opt.apply_gradients(zip(tape.gradient(g_loss, gen.trainable_variables), gen.trainable_variables))
        after = snapshot()
        for k in watched:
            moved[k].append(not np.array_equal(before[k], after[k]))
        losses.append(float(g_loss))
    return Out(_weights(gen, critic), _iters(g_opt) + _iters(d_opt), {"losses": losses, "state": moved,
                                                                       "optimizers": ["Adam", "Adam"]})


# --- 38. optimizer built up front, stepped with apply(grads) (Keras 3) / apply_gradients on
#         pairs whose gradient is None for an unused head (both) ------------------------------

def built_optimizer_apply_with_unused_head():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(70)
    inp = keras.Input((10,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    main = keras.layers.Dense(1, name="main")(h)
    aux = keras.layers.Dense(1, name="aux")(h)
    model = keras.Model(inp, [main, aux])
    opt = keras.optimizers.Adam(1e-2)
    tv = model.trainable_variables
    opt.build(tv)
    losses, grads = [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            out, _aux = model(x[i:i + B], training=True)
            loss = tf.reduce_mean(tf.square(out[:, 0] - y[i:i + B]))  # the aux head is not trained yet
        g = tape.gradient(loss, tv)
        if _legacy():
            opt.apply_gradients((gi, v) for gi, v in zip(g, tv) if gi is not None)
        else:
            opt.apply([gi if gi is not None else tf.zeros_like(v) for gi, v in zip(g, tv)])
        grads.append((len(losses), _vname(tv[0]), _norm(g[0])))
        losses.append(float(loss))
    unused = [_vname(v) for v in model.get_layer("aux").trainable_variables]
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "unchanged": unused})


# --- 39. a per-sample loss vector handed to tape.gradient (TensorFlow sums it) --------------

def per_sample_loss_vector_to_the_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(71)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    opt = keras.optimizers.SGD(1e-2)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, model(xb, training=True)) / B
        g = tape.gradient(per_sample, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return tf.reduce_sum(per_sample), tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "target_shape": [B],
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 40. a VAE-like model trained by fit() on inputs alone: its losses come from add_loss ----

def vae_add_loss_fit_without_labels():
    tf = _tf()
    keras = _keras()
    x, _ = data.digits(96)

    class Vae(keras.Model):
        def __init__(self):
            super().__init__()
            self.enc = keras.layers.Dense(8, activation="relu")
            self.mu = keras.layers.Dense(2)
            self.logvar = keras.layers.Dense(2)
            self.dec = keras.layers.Dense(64, activation="sigmoid")

        def call(self, inputs, training=False):
            h = self.enc(inputs)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu), seed=3) if training else mu
            out = self.dec(z)
            self.add_loss(tf.reduce_mean(tf.reduce_sum(tf.square(inputs - out), axis=1)))
            self.add_loss(-0.5 * tf.reduce_mean(tf.reduce_sum(1 + logvar - tf.square(mu) - tf.exp(logvar), axis=1)))
            return out

    keras.utils.set_random_seed(72)
    model = Vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)] * 2,
                "reg_equals_loss": True})


# --- 41. ModelCheckpoint saving the whole model every epoch (Keras 3: .keras; tf-keras: a
#         SavedModel directory), reloaded after training --------------------------------------

def checkpoint_whole_model_and_reload():
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(73)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12), keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu"), keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    cb = _BatchLosses(_sizes(96, B))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model_saved" if _legacy() else f"{tmp}/model.keras"
        model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0,
                  callbacks=[cb, keras.callbacks.ModelCheckpoint(path, save_weights_only=False)])
        again = keras.models.load_model(path)
        np.testing.assert_array_equal(again.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0))
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"batch_normalization": True, "dropout": True},
                "state": {_vname(model.layers[1].moving_mean): True}})


# --- 42. noise augmentation with TensorFlow's stateful random ops (global seed) in a
#         tf.function step, the model exported as a SavedModel between epochs ---------------

def noise_augmentation_saved_model_between_epochs():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(74)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        noisy = xb + tf.random.normal(tf.shape(xb), stddev=0.3)  # a new draw every call
        with tf.GradientTape() as tape:
            loss = ce(yb, model(noisy, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(2):
            for i in range(0, 96, 32):
                loss, gn = step(x[i:i + 32], y[i:i + 32])
                grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
                losses.append(float(loss))
            if _legacy():
                model.save(f"{tmp}/epoch{epoch}")  # tf-keras: a SavedModel directory
            else:
                model.export(f"{tmp}/epoch{epoch}", verbose=False)
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 43. the user's own optimizer class (sign SGD with momentum), in fit() ----------------------

def _sign_momentum_class():
    tf = _tf()
    keras = _keras()
    legacy = _legacy()

    class SignMomentum(keras.optimizers.Optimizer):
        def __init__(self, learning_rate=0.01, beta=0.9, name="sign_momentum", **kwargs):
            if legacy:  # tf-keras: the subclass builds its learning rate itself
                super().__init__(name=name, **kwargs)
                self._learning_rate = self._build_learning_rate(learning_rate)
            else:
                super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.beta = beta

        def build(self, var_list):
            super().build(var_list)
            if legacy and getattr(self, "_built", False):
                return
            self.momentums = [self.add_variable_from_reference(v, "m") for v in var_list]
            self._built = True

        def update_step(self, gradient, variable, learning_rate=None):
            lr = tf.cast(self.learning_rate if learning_rate is None else learning_rate, variable.dtype)
            index = self._index_dict[self._var_key(variable)] if legacy else self._get_variable_index(variable)
            m = self.momentums[index]
            m.assign(self.beta * m + (1 - self.beta) * gradient)
            variable.assign_sub(lr * tf.sign(m))

        def get_config(self):
            config = super().get_config()
            if legacy:
                config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
            return {**config, "beta": self.beta}

    return SignMomentum


def custom_optimizer_class_fit():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(75)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=_sign_momentum_class()(1e-2, beta=0.8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], y[:128], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "meta": {"optimizer.class": "SignMomentum", "optimizer.config.beta": 0.8}})


# --- 44. a diverging fit() (learning rate far too high, no clipping) stopped by TerminateOnNaN --

def diverging_fit_terminate_on_nan():
    keras = _keras()
    x, y = data.regression(96)
    x = x * 50.0
    keras.utils.set_random_seed(76)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss=keras.losses.MeanSquaredError())
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=5, shuffle=False, verbose=0,
              callbacks=[cb, keras.callbacks.TerminateOnNaN()])
    n = _iters(model.optimizer)
    assert not np.isfinite(cb.losses[-1]) and n < 30, (n, cb.losses)
    return Out(_weights(model), n, {"losses_finite_prefix": [v for v in cb.losses if np.isfinite(v)],
                                    "last_loss_finite": False})


# --- 45. ReduceLROnPlateau lowering the rate between epochs, the rate of every batch read by a
#         callback -------------------------------------------------------------------------------

def reduce_lr_on_plateau_rates():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(77)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12), keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rates: list[float] = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(keras.backend.get_value(self.model.optimizer.learning_rate)))

    # min_delta so large that every epoch is a plateau: the rate halves after each one
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=1e9)
    model.fit(x[:96], y[:96], validation_data=(x[96:], y[96:]), batch_size=32, epochs=3, shuffle=False, verbose=0,
              callbacks=[Rates(), plateau])
    assert rates[-1] < rates[0]
    return Out(_weights(model), _iters(model.optimizer), {"lrs": rates, "modes": {"batch_normalization": True}})
