# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A seventh set of pairs (see scripts.py for the conventions), longer than most (40-120 steps):
a GRU tagger over Embedding(mask_zero=True) whose loop averages its loss over the padding too or
masks it by hand, a Transformer encoder block (Embedding, MultiHeadAttention with dropout,
LayerNormalization) trained by fit() and by a loop, a model with two inputs and two outputs
weighted by compile(loss_weights=...) against the loop's weighted sum, global clipping with an
ExponentialDecay rate in fit() against clipping by hand in the loop, a custom train_step with
label smoothing against smoothing written by hand, class_weight against weights looked up in a loop.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts_models import _keras, _tf


def _epochs(step, x, y, batch: int, epochs: int):
    """fit(shuffle=False)'s batches, epoch after epoch (the last, partial batch kept)."""
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            step(x[i:i + batch], y[i:i + batch])


# --- a GRU tagger over a padding mask: the loss averaged over the valid entries or over all ----------


def _tagger():
    keras = _keras()
    keras.utils.set_random_seed(71)
    return keras.Sequential([
        keras.Input((10,), dtype="int32"),
        keras.layers.Embedding(25, 12, mask_zero=True),
        keras.layers.GRU(12, return_sequences=True),
        keras.layers.Dense(3),
    ])


def _tags():
    return data.tagged_sequences(n=480, length=10, vocab=25, tags=3, seed=71)  # 20 batches of 24


def fit_masked_gru_tagger():
    keras = _keras()
    x, y = _tags()
    model = _tagger()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=24, epochs=2, shuffle=False, verbose=0)


def _tagger_loop(loss_of):
    tf, keras = _tf(), _keras()
    x, y = _tags()
    model = _tagger()
    opt = keras.optimizers.Adam(5e-3)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_of(xb, yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    _epochs(step, x, y, 24, 2)


def tape_masked_gru_tagger_mask_ignored():
    """The loss function on the output, then a mean over every entry: the padding counts."""
    tf, keras = _tf(), _keras()
    _tagger_loop(lambda xb, yb, out: tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True)))


def tape_masked_gru_tagger_mask_by_hand():
    """The same loss function, weighted by the padding mask and divided by its sum."""
    tf, keras = _tf(), _keras()

    def loss_of(xb, yb, out):
        mask = tf.cast(xb > 0, tf.float32)
        per = keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True)
        return tf.reduce_sum(per * mask) / tf.reduce_sum(mask)

    _tagger_loop(loss_of)


def tape_masked_gru_tagger_mask_as_sample_weight():
    """The Keras loss object (it reads the output's mask) given the same mask as sample_weight too."""
    tf, keras = _tf(), _keras()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _tagger_loop(lambda xb, yb, out: ce(yb, out, sample_weight=tf.cast(xb > 0, tf.float32)))


# --- a Transformer encoder block -----------------------------------------------------------------


def _count_task():
    rng = np.random.default_rng(7)
    x = rng.integers(1, 20, size=(320, 12)).astype("int32")
    y = ((x == 5).sum(1) > (x == 6).sum(1)).astype("int32")
    return x, y  # 10 batches of 32


def _encoder():
    keras = _keras()
    keras.utils.set_random_seed(7)
    inp = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(20, 16)(inp)
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, dropout=0.1)(h, h)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dropout(0.1)(att))
    f = keras.layers.Dense(16)(keras.layers.Dense(32, activation="relu")(h))
    h = keras.layers.LayerNormalization()(h + f)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out)


def fit_encoder_block():
    keras = _keras()
    x, y = _count_task()
    model = _encoder()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=6, shuffle=False, verbose=0)


def tape_encoder_block():
    tf, keras = _tf(), _keras()
    x, y = _count_task()
    model = _encoder()
    opt = keras.optimizers.Adam(3e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    _epochs(step, x, y, 32, 6)


# --- two inputs, two outputs, compile(loss_weights=...) against the loop's weighted sum -------------


def _two_io_data():
    rng = np.random.default_rng(2)
    xa = rng.normal(size=(320, 6)).astype("float32")
    xb = rng.normal(size=(320, 4)).astype("float32")
    y_cls = (xa[:, 0] + xb[:, 1] > 0).astype("int32")
    y_reg = (xa[:, :2].sum(1) - xb[:, 2]).astype("float32")[:, None]
    return xa, xb, y_cls, y_reg  # 10 batches of 32


def _two_io():
    keras = _keras()
    keras.utils.set_random_seed(21)
    ia, ib = keras.Input((6,)), keras.Input((4,))
    h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(ia),
                                    keras.layers.Dense(8, activation="relu")(ib)])
    h = keras.layers.Dense(16, activation="relu")(h)
    return keras.Model([ia, ib], [keras.layers.Dense(2)(h), keras.layers.Dense(1)(h)])


def fit_two_inputs_two_outputs():
    keras = _keras()
    xa, xb, yc, yr = _two_io_data()
    model = _two_io()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()],
                  loss_weights=[1.0, 0.3])
    model.fit([xa, xb], [yc, yr], batch_size=32, epochs=10, shuffle=False, verbose=0)


def tape_two_inputs_two_outputs(average: bool = False):
    tf, keras = _tf(), _keras()
    xa, xb, yc, yr = _two_io_data()
    model = _two_io()
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    ce, mse = keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()

    @tf.function
    def step(a, b, c, r):
        with tf.GradientTape() as tape:
            p1, p2 = model([a, b], training=True)
            loss = 1.0 * ce(c, p1) + 0.3 * mse(r, p2)
            if average:
                loss = loss / 2
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(10):
        for i in range(0, 320, 32):
            step(xa[i:i + 32], xb[i:i + 32], yc[i:i + 32], yr[i:i + 32])


def tape_two_outputs_losses_averaged():
    """The two outputs' weighted losses averaged where fit() adds them up: the loss and every gradient / 2."""
    tape_two_inputs_two_outputs(average=True)


# --- a custom train_step with label smoothing against smoothing written by hand ----------------------


def _smoothing_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 12)).astype("float32")
    y = np.eye(3, dtype="float32")[np.argmax(x[:, :3] + 0.3 * rng.normal(size=(256, 3)), 1)]
    return x, y  # 8 batches of 32


def _smoothing_net(model_class=None):
    keras = _keras()
    keras.utils.set_random_seed(41)
    inp = keras.Input((12,))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(32, activation="relu")(inp))
    return (model_class or keras.Model)(inp, keras.layers.Dense(3)(h))


def fit_custom_train_step_label_smoothing():
    tf, keras = _tf(), _keras()

    class Model(keras.Model):
        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                loss = self.compute_loss(x=xb, y=yb, y_pred=pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            for m in self.metrics:
                if m.name == "loss":
                    m.update_state(loss)
                else:
                    m.update_state(yb, pred)
            return {m.name: m.result() for m in self.metrics}

    x, y = _smoothing_data()
    model = _smoothing_net(Model)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=8, shuffle=False, verbose=0)


def tape_label_smoothing_by_hand():
    tf, keras = _tf(), _keras()
    x, y = _smoothing_data()
    model = _smoothing_net()
    opt = keras.optimizers.Adam(2e-3)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            smooth = yb * (1 - 0.1) + 0.1 / 3
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(smooth, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    _epochs(step, x, y, 32, 8)


# --- class_weight in fit() against weights looked up per label in a loop ------------------------------


def _imbalanced():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 10)).astype("float32")
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0.9).astype("int32")  # 10 batches of 30


def _small_net():
    keras = _keras()
    keras.utils.set_random_seed(61)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(24, activation="relu"), keras.layers.Dense(2)])


def fit_class_weight_long():
    keras = _keras()
    x, y = _imbalanced()
    model = _small_net()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=30, epochs=6, shuffle=False, verbose=0, class_weight={0: 1.0, 1: 3.0})


def tape_class_weight_gathered():
    tf, keras = _tf(), _keras()
    x, y = _imbalanced()
    model = _small_net()
    opt = keras.optimizers.Adam(5e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = tf.constant([1.0, 3.0])

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True), sample_weight=tf.gather(weights, yb))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    _epochs(step, x, y, 30, 6)


# --- a custom train_step that calls the compiled loss object itself: the regularizers left out ---------


def _l2_net(model_class=None):
    keras = _keras()
    keras.utils.set_random_seed(63)
    reg = keras.regularizers.L2(1e-3)
    inp = keras.Input((10,))
    h = keras.layers.Dense(24, activation="relu", kernel_regularizer=reg)(inp)
    return (model_class or keras.Model)(inp, keras.layers.Dense(2, kernel_regularizer=reg)(h))


def _l2_fit(model):
    keras = _keras()
    x, y = _imbalanced()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=30, epochs=4, shuffle=False, verbose=0)


def fit_l2_classifier():
    _l2_fit(_l2_net())


def fit_train_step_calls_loss_object():
    tf, keras = _tf(), _keras()

    class Model(keras.Model):
        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = self.loss(yb, self(xb, training=True))  # compute_loss would add self.losses
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    _l2_fit(_l2_net(Model))
