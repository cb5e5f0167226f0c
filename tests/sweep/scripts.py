# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Training scripts as users write them, none written with gradtrace in mind.

Each function trains a small model for a few steps and returns :class:`Out`:
its final weights (to check that tracing changes no number) and how many
optimizer steps it took, counted by the script itself (the optimizer's
iteration counter or its own loop), so the test can compare with what was
recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import data

B = 32


@dataclass
class Out:
    weights: list[np.ndarray]
    steps: int
    extra: dict = field(default_factory=dict)


def _k():
    import keras

    return keras


def _out(models, steps: int, **extra) -> Out:
    ws = [np.array(w) for m in (models if isinstance(models, list | tuple) else [models]) for w in m.get_weights()]
    return Out(ws, int(steps), extra)


def _iters(opt) -> int:
    return int(opt.iterations.numpy())


# --- Sequential CNN: Conv2D + BatchNormalization + Dropout, fit() with validation and callbacks ---

def cnn_bn_dropout_fit_callbacks():
    keras = _k()
    x, y = data.digits_images(160)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    cbs = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
           keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)]
    model.fit(x[:128], y[:128], validation_data=(x[128:], y[128:]), batch_size=B, epochs=3,
              shuffle=False, callbacks=cbs, verbose=0)
    return _out(model, _iters(model.optimizer))


# --- Functional: two inputs, two outputs with loss weights --------------------------------------

def _multi_io():
    keras = _k()
    keras.utils.set_random_seed(2)
    a = keras.Input((13,), name="chem")
    b = keras.Input((4,), name="extra")
    h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(a), b])
    h = keras.layers.Dense(16, activation="tanh")(h)
    cls = keras.layers.Dense(3, name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model([a, b], [cls, reg])


def _multi_io_data():
    x, y = data.wine()
    rng = np.random.default_rng(3)
    extra = rng.normal(size=(len(x), 4)).astype("float32")
    target = (x[:, 0:1] * 0.5 + extra[:, 0:1]).astype("float32")
    return [x[:128], extra[:128]], [y[:128], target[:128]]


def multi_io_fit():
    keras = _k()
    x, y = _multi_io_data()
    model = _multi_io()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()],
                  loss_weights=[1.0, 0.3])
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def _multi_io_tape(weights: tuple[float, float]):
    import tensorflow as tf

    keras = _k()
    x, y = _multi_io_data()
    model = _multi_io()
    opt = keras.optimizers.Adam(5e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            cls, reg = model(xb, training=True)
            loss = weights[0] * ce(yb[0], cls) + weights[1] * mse(yb[1], reg)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    n = 0
    for _epoch in range(2):
        for xb, yb in data.batches(x, y, B, 4):
            step(xb, yb)
            n += 1
    return _out(model, n)


def multi_io_tape():
    return _multi_io_tape((1.0, 0.3))


def multi_io_tape_weights_forgotten():
    return _multi_io_tape((1.0, 1.0))


# --- LSTM / GRU on sequences -----------------------------------------------------------------

def _lstm(dropout: float = 0.0):
    keras = _k()
    keras.utils.set_random_seed(4)
    return keras.Sequential([keras.Input((12, 3)), keras.layers.LSTM(8, dropout=dropout),
                             keras.layers.Dense(2)])


def lstm_fit():
    keras = _k()
    x, y = data.sequences(128)
    model = _lstm(0.2)
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def _lstm_tape(training: bool | None):
    import tensorflow as tf

    keras = _k()
    x, y = data.sequences(128)
    model = _lstm(0.2)
    opt = keras.optimizers.RMSprop(5e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            out = model(xb, training=True) if training else model(xb)
            loss = loss_fn(yb, out)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _epoch in range(2):
        for xb, yb in data.batches(x, y, B, 4):
            step(xb, yb)
    return _out(model, 8)


def lstm_tape():
    return _lstm_tape(True)


def lstm_tape_no_training_flag():
    return _lstm_tape(None)


def gru_eager_loop():
    import tensorflow as tf

    keras = _k()
    x, y = data.sequences(96)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((12, 3)), keras.layers.GRU(6, return_sequences=True),
                              keras.layers.GRU(6), keras.layers.Dense(1)])
    opt = keras.optimizers.Adagrad(0.05)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y.astype("float32")[:, None], B, 6):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return _out(model, 6)


# --- Embedding + GlobalAveragePooling (sparse gradients) --------------------------------------

def _embedding_model():
    keras = _k()
    keras.utils.set_random_seed(6)
    return keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(40, 8),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])


def embedding_fit():
    keras = _k()
    x, y = data.tokens(128)
    model = _embedding_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def embedding_tape():
    import tensorflow as tf

    keras = _k()
    x, y = data.tokens(128)
    model = _embedding_model()
    opt = keras.optimizers.SGD(0.5)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _epoch in range(2):
        for xb, yb in data.batches(x, y, B, 4):
            step(xb, yb)
    return _out(model, 8)


# --- token tagging with a padding mask: Keras divides by the valid tokens -------------------------

def _tagger():
    keras = _k()
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(40, 8, mask_zero=True),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])


def tagger_fit_masked():
    keras = _k()
    x, y = data.token_tags(128)
    model = _tagger()
    model.compile(optimizer=keras.optimizers.SGD(0.2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def tagger_tape_mean_over_all_tokens():
    import tensorflow as tf

    keras = _k()
    x, y = data.token_tags(128)
    model = _tagger()
    opt = keras.optimizers.SGD(0.2)
    for xb, yb in data.batches(x, y, B, 4):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            ce = keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
            mask = tf.cast(xb != 0, ce.dtype)
            loss = tf.reduce_mean(ce * mask)  # padding zeroed, but divided by every token
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return _out(model, 4)


# --- LayerNormalization and a shared layer (siamese) ------------------------------------------

def shared_layer_layernorm_fit():
    keras = _k()
    x, _ = data.digits(192)
    rng = np.random.default_rng(8)
    pair = x[rng.permutation(len(x))]
    target = (np.abs(x - pair).sum(1, keepdims=True) / 20).astype("float32")
    keras.utils.set_random_seed(8)
    enc = keras.layers.Dense(16, activation="relu", name="encoder")
    norm = keras.layers.LayerNormalization()
    a, b = keras.Input((64,)), keras.Input((64,))
    d = keras.layers.Subtract()([norm(enc(a)), norm(enc(b))])
    out = keras.layers.Dense(1)(keras.layers.Lambda(lambda t: abs(t))(d))
    model = keras.Model([a, b], out)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), loss="huber")
    model.fit([x, pair], target, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


# --- regularizers ---------------------------------------------------------------------------

def _regularized():
    keras = _k()
    keras.utils.set_random_seed(9)
    return keras.Sequential([
        keras.Input((30,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2),
                           activity_regularizer=keras.regularizers.L1(1e-3)),
        keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L1L2(1e-3, 1e-3)),
    ])


def regularized_fit():
    keras = _k()
    x, y = data.breast_cancer(192)
    model = _regularized()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def regularized_tape():
    import tensorflow as tf

    keras = _k()
    x, y = data.breast_cancer(192)
    model = _regularized()
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb[:, None], model(xb, training=True))
            loss += tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, B, 6):
        step(xb, yb)
    return _out(model, 6)


def _digits_step_loop(model, opt, loss_of, clip=None, steps: int = 6):
    """A tf.function tape loop over the first digits batches: ``loss_of(model, xb, yb)`` is the
    step's loss; ``clip`` (if given) transforms the gradients before apply_gradients."""
    import tensorflow as tf

    x, y = data.digits(192)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_of(model, xb, yb)
        grads = tape.gradient(loss, model.trainable_variables)
        if clip is not None:
            grads = clip(grads)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, B, steps):
        step(xb, yb)
    return _out(model, _iters(opt))


def _regularized_digits():
    keras = _k()
    keras.utils.set_random_seed(14)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2)),
        keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-3)),
    ])


def regularized_mse_fit():
    keras = _k()
    x, y = data.digits(192)
    model = _regularized_digits()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, np.eye(10, dtype="float32")[y], batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def regularized_sum_of_squares_tape():
    """The same model and regularizers, the squared error summed over the 10 outputs (Keras's
    mse averages over them) and the regularization losses added: the data loss is x10."""
    import tensorflow as tf

    def loss_of(model, xb, yb):
        out = model(xb, training=True)
        return tf.reduce_sum(tf.square(out - tf.one_hot(yb, 10))) / B + tf.add_n(model.losses)

    return _digits_step_loop(_regularized_digits(), _k().optimizers.SGD(0.05), loss_of)


# --- optimizers -----------------------------------------------------------------------------

def _mlp(seed: int = 10, inputs: int = 64, outputs: int = 10):
    keras = _k()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(outputs)])


def _fit_digits(opt, epochs: int = 1, n: int = 192, **fit_kw):
    keras = _k()
    x, y = data.digits(n)
    model = _mlp()
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **fit_kw.pop("compile", {}))
    model.fit(x, y, batch_size=B, epochs=epochs, shuffle=False, verbose=0, **fit_kw)
    return model


def _schedule():
    return _k().optimizers.schedules.ExponentialDecay(5e-3, decay_steps=2, decay_rate=0.7)


def adamw_schedule_fit():
    keras = _k()
    model = _fit_digits(keras.optimizers.AdamW(_schedule(), weight_decay=0.05))
    return _out(model, _iters(model.optimizer))


def _adamw_schedule_tape(opt_factory):
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    model = _mlp()
    opt = opt_factory()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for xb, yb in data.batches(x, y, B, 6):
        step(xb, yb)
    return _out(model, 6)


def adamw_schedule_tape():
    keras = _k()
    return _adamw_schedule_tape(lambda: keras.optimizers.AdamW(_schedule(), weight_decay=0.05))


def adam_schedule_tape_no_decay():
    keras = _k()
    return _adamw_schedule_tape(lambda: keras.optimizers.Adam(_schedule()))


def sgd_nesterov_fit():
    model = _fit_digits(_k().optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    return _out(model, _iters(model.optimizer))


def rmsprop_centered_fit():
    model = _fit_digits(_k().optimizers.RMSprop(1e-3, centered=True, momentum=0.5))
    return _out(model, _iters(model.optimizer))


def clipnorm_fit():
    model = _fit_digits(_k().optimizers.SGD(0.1, clipnorm=0.05))
    return _out(model, _iters(model.optimizer))


def global_clipnorm_fit():
    model = _fit_digits(_k().optimizers.SGD(0.1, global_clipnorm=0.05))
    return _out(model, _iters(model.optimizer))


def clipvalue_fit():
    model = _fit_digits(_k().optimizers.Adam(1e-2, clipvalue=0.01))
    return _out(model, _iters(model.optimizer))


def adam_ema_fit():
    model = _fit_digits(_k().optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9), epochs=2, n=96)
    return _out(model, _iters(model.optimizer))


def grad_accumulation_fit():
    # the optimizer is called every batch and updates every 2nd: 6 calls, 3 updates
    model = _fit_digits(_k().optimizers.Adam(1e-2, gradient_accumulation_steps=2))
    return _out(model, 6, updates=_iters(model.optimizer))


# --- losses ---------------------------------------------------------------------------------

def bce_sigmoid_fit():
    keras = _k()
    x, y = data.breast_cancer(160)
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", keras.metrics.AUC()])
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def huber_regression_fit():
    keras = _k()
    x, y = data.regression(160)
    model = _mlp(12, inputs=10, outputs=1)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.Huber(delta=0.5), metrics=["mae"])
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def custom_loss_subclass_fit():
    import tensorflow as tf

    keras = _k()

    class FocalLoss(keras.losses.Loss):
        def __init__(self, gamma: float = 2.0, **kw):
            super().__init__(**kw)
            self.gamma = gamma

        def call(self, y_true, y_pred):
            y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
            p = tf.nn.softmax(y_pred)
            pt = tf.gather(p, y_true, batch_dims=1)
            return -((1 - pt) ** self.gamma) * tf.math.log(pt + 1e-7)

    x, y = data.digits(192)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=FocalLoss())
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def handwritten_loss_fn_fit():
    import tensorflow as tf

    keras = _k()

    def smooth_ce(y_true, y_pred):
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), 10)
        target = onehot * 0.9 + 0.01
        return tf.reduce_mean(-tf.reduce_sum(target * tf.nn.log_softmax(y_pred), axis=-1))

    x, y = data.digits(192)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=smooth_ce)
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


# --- fit() options --------------------------------------------------------------------------

def class_weight_fit():
    model = _fit_digits(_k().optimizers.SGD(0.1), class_weight={i: 1.0 + (i % 3) for i in range(10)})
    return _out(model, _iters(model.optimizer))


def _sample_weights(n: int = 192):
    x, y = data.digits(n)
    return np.where(y < 5, 2.0, 0.5).astype("float32")


def sample_weight_fit():
    model = _fit_digits(_k().optimizers.SGD(0.1), sample_weight=_sample_weights())
    return _out(model, _iters(model.optimizer))


def unweighted_fit():
    model = _fit_digits(_k().optimizers.SGD(0.1))
    return _out(model, _iters(model.optimizer))


def steps_per_execution_fit():
    keras = _k()
    model = _fit_digits(keras.optimizers.Adam(1e-2), n=256, compile={"steps_per_execution": 4})
    return _out(model, _iters(model.optimizer))


def jit_compile_fit():
    keras = _k()
    model = _fit_digits(keras.optimizers.Adam(1e-2), compile={"jit_compile": True})
    return _out(model, _iters(model.optimizer))


def tf_data_fit():
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a * 2.0 - 1.0, b)).batch(B).prefetch(2)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=2, verbose=0)
    return _out(model, _iters(model.optimizer))


def tf_data_tape_loop():
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=3).batch(B, drop_remainder=True)
    model = _mlp()
    opt = keras.optimizers.Nadam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    n = 0
    for xb, yb in ds:
        step(xb, yb)
        n += 1
    return _out(model, n)


def custom_train_step_fit():
    import tensorflow as tf

    keras = _k()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.h = keras.layers.Dense(24, activation="relu")
            self.drop = keras.layers.Dropout(0.2)
            self.o = keras.layers.Dense(3)

        def call(self, x, training=False):
            return self.o(self.drop(self.h(x), training=training))

        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=xb, y=yb, y_pred=self(xb, training=True))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables),
                                               self.trainable_variables))
            return {"loss": loss}

    x, y = data.wine()
    keras.utils.set_random_seed(13)
    model = Net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:128], y[:128], batch_size=B, epochs=2, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


# --- two optimizers and two tapes (GAN), nested tapes (gradient penalty) ------------------------

def _gan_models():
    keras = _k()
    keras.utils.set_random_seed(14)
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    return gen, disc


def gan_two_optimizers(g_lr: float = 1e-3):
    import tensorflow as tf

    keras = _k()
    gen, disc = _gan_models()
    g_opt, d_opt = keras.optimizers.Adam(g_lr, beta_1=0.5), keras.optimizers.Adam(1e-3, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    rng = np.random.default_rng(15)
    real_all = rng.normal(loc=[2.0, -1.0], scale=0.3, size=(5 * B, 2)).astype("float32")

    @tf.function
    def step(real, noise):
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = gen(noise, training=True)
            r, f = disc(real, training=True), disc(fake, training=True)
            d_loss = bce(tf.ones_like(r), r) + bce(tf.zeros_like(f), f)
            g_loss = bce(tf.ones_like(f), f)
        d_opt.apply_gradients(zip(dt.gradient(d_loss, disc.trainable_variables), disc.trainable_variables))
        g_opt.apply_gradients(zip(gt.gradient(g_loss, gen.trainable_variables), gen.trainable_variables))

    for i in range(5):
        step(real_all[i * B:(i + 1) * B], rng.normal(size=(B, 4)).astype("float32"))
    return _out([gen, disc], 10)


def gan_generator_lr_higher():
    """The same GAN with the generator's learning rate x5: the generated batches part at once."""
    return gan_two_optimizers(g_lr=5e-3)


def wgan_gradient_penalty():
    """WGAN-GP: the critic's gradient penalty differentiates through an inner tape; the
    generator takes one step after every 3 critic steps."""
    import tensorflow as tf

    keras = _k()
    gen, critic = _gan_models()
    c_opt = keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
    g_opt = keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
    rng = np.random.default_rng(16)

    def critic_step(real, noise):
        fake = gen(noise, training=True)
        eps = tf.random.uniform([tf.shape(real)[0], 1], seed=1)
        mix = eps * real + (1 - eps) * fake
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                inner.watch(mix)
                c_mix = critic(mix, training=True)
            g = inner.gradient(c_mix, mix)
            gp = tf.reduce_mean((tf.norm(g, axis=1) - 1.0) ** 2)
            loss = tf.reduce_mean(critic(fake, training=True)) - tf.reduce_mean(critic(real, training=True)) + 10 * gp
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))

    def generator_step(noise):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(critic(gen(noise, training=True), training=True))
        g_opt.apply_gradients(zip(tape.gradient(loss, gen.trainable_variables), gen.trainable_variables))

    tf.random.set_seed(16)
    for _ in range(2):
        for _ in range(3):
            critic_step(rng.normal(loc=1.0, size=(B, 2)).astype("float32"), rng.normal(size=(B, 4)).astype("float32"))
        generator_step(rng.normal(size=(B, 4)).astype("float32"))
    return _out([gen, critic], 8)


# --- legacy tf-keras --------------------------------------------------------------------------

def tf_keras_cnn_fit():
    import tf_keras

    x, y = data.digits_images(128)
    tf_keras.utils.set_random_seed(17)
    model = tf_keras.Sequential([
        tf_keras.Input((8, 8, 1)),
        tf_keras.layers.Conv2D(6, 3, activation="relu"),
        tf_keras.layers.BatchNormalization(),
        tf_keras.layers.Dropout(0.2),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(10),
    ])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2, clipnorm=1.0),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def tf_keras_frozen_layer_fit():
    """tf-keras freezes a layer by leaving it out of ``trainable_weights``; its tf.Variables keep
    ``trainable=True``. fit() trains the rest: nothing is missing a gradient."""
    import tf_keras

    x, y = data.digits_images(128)
    tf_keras.utils.set_random_seed(19)
    frozen = tf_keras.layers.Dense(16, activation="relu", name="frozen")
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(), frozen,
                                 tf_keras.layers.Dense(10)])
    frozen.trainable = False
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def tf_keras_subclassed_tape():
    import tensorflow as tf
    import tf_keras

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.emb = tf_keras.layers.Embedding(40, 8)
            self.pool = tf_keras.layers.GlobalAveragePooling1D()
            self.out = tf_keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.pool(self.emb(x)))

    x, y = data.tokens(128)
    tf_keras.utils.set_random_seed(18)
    model = Net()
    opt = tf_keras.optimizers.SGD(0.5, momentum=0.9)
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for xb, yb in data.batches(x, y, B, 4):
        step(xb, yb)
    return _out(model, 4)


def tf_keras_functional_weighted_fit():
    import tf_keras

    x, y = data.breast_cancer(160)
    tf_keras.utils.set_random_seed(19)
    inp = tf_keras.Input((30,))
    h = tf_keras.layers.Dense(8, activation="relu", kernel_regularizer=tf_keras.regularizers.l2(1e-3))(inp)
    h = tf_keras.layers.LayerNormalization()(h)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer=tf_keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy")
    model.fit(x, y, sample_weight=np.where(y > 0, 1.0, 3.0), batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


# --- interrupted ------------------------------------------------------------------------------

class StopAt(Exception):
    pass


def interrupted_tape_loop():
    """The user hits Ctrl-C during step 4 (after 3 optimizer steps)."""
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    model = _mlp()
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i, (xb, yb) in enumerate(data.batches(x, y, B, 6)):
        if i == 3:
            raise KeyboardInterrupt
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


# --- other ways users step an optimizer -------------------------------------------------------

def train_on_batch_loop():
    keras = _k()
    x, y = data.digits(192)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    for xb, yb in data.batches(x, y, B, 6):
        model.train_on_batch(xb, yb)
    return _out(model, _iters(model.optimizer))


def tf_keras_minimize():
    import tensorflow as tf
    import tf_keras

    x, y = data.wine()
    tf_keras.utils.set_random_seed(20)
    model = tf_keras.Sequential([tf_keras.Input((13,)), tf_keras.layers.Dense(8, activation="relu"),
                                 tf_keras.layers.Dense(3)])
    opt = tf_keras.optimizers.SGD(0.1)
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, B, 5):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.minimize(loss, model.trainable_variables, tape=tape)
    return _out(model, 5)


def persistent_tape_two_heads():
    """One persistent tape, two losses, gradients summed by hand, one optimizer step."""
    import tensorflow as tf

    keras = _k()
    x, y = _multi_io_data()
    model = _multi_io()
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, B, 4):
        with tf.GradientTape(persistent=True) as tape:
            cls, reg = model(xb, training=True)
            l1, l2 = ce(yb[0], cls), tf.reduce_mean(tf.square(yb[1] - reg))
        g1 = tape.gradient(l1, model.trainable_variables)  # None for the regression head
        g2 = tape.gradient(l2, model.trainable_variables)  # None for the classification head
        del tape
        grads = [a if b is None else 0.3 * b if a is None else a + 0.3 * b for a, b in zip(g1, g2)]
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return _out(model, 4)


def mirrored_strategy_fit():
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _mlp()
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def raw_variables_linear_regression():
    """No Keras model at all: tf.Variables and a Keras optimizer."""
    import tensorflow as tf

    keras = _k()
    x, y = data.regression(160)
    w = tf.Variable(tf.zeros([10, 1]), name="w")
    b = tf.Variable(0.0, name="b")
    opt = keras.optimizers.SGD(0.05)
    for xb, yb in data.batches(x, y, B, 5):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.squeeze(xb @ w, 1) + b - yb))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
    return Out([w.numpy(), b.numpy()], 5)


def xla_tape_loop():
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    model = _mlp()
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for xb, yb in data.batches(x, y, B, 6):
        step(xb, yb)
    return _out(model, 6)


def frozen_base_fine_tuning():
    """Keras's transfer-learning recipe: a frozen base with BatchNormalization called with
    training=False, a new head trained on top."""
    keras = _k()
    x, y = data.digits_images(160)
    keras.utils.set_random_seed(21)
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D()],
                            name="base")
    base.trainable = False
    inp = keras.Input((8, 8, 1))
    h = base(inp, training=False)
    h = keras.layers.Dropout(0.2)(h)
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def lion_fit():
    model = _fit_digits(_k().optimizers.Lion(1e-3, weight_decay=0.01))
    return _out(model, _iters(model.optimizer))


# --- which variables a step updates ---------------------------------------------------------

def _digits_tape(apply):
    """An eager tape loop over digits; ``apply(grads, variables)`` hands them to the optimizer(s)."""
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    model = _mlp(seed=12)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i in range(0, len(x), B):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[i:i + B], model(x[i:i + B], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        apply(grads, model.trainable_variables)
    return model


def two_optimizers_one_tape():
    """Discriminative learning rates: one gradient, the body and the head stepped by two
    optimizers. Every variable is updated, each by its own optimizer."""
    keras = _k()
    body, head = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-2)

    def apply(grads, tvars):
        body.apply_gradients(zip(grads[:2], tvars[:2]))
        head.apply_gradients(zip(grads[2:], tvars[2:]))

    model = _digits_tape(apply)
    return _out(model, _iters(body) + _iters(head))


def head_left_out_of_apply():
    """The user's slip: the gradient covers every variable, apply_gradients gets the body only."""
    opt = _k().optimizers.SGD(0.1)

    def apply(grads, tvars):
        opt.apply_gradients(zip(grads[:2], tvars[:2]))

    model = _digits_tape(apply)
    return _out(model, _iters(opt))


def _fit_frozen_first(freeze: bool):
    keras = _k()
    x, y = data.digits(192)
    model = _mlp(seed=13)
    model.layers[0].trainable = not freeze
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def fit_all_trained():
    return _fit_frozen_first(False)


def fit_first_layer_frozen():
    """The same fit() with the first Dense frozen (trainable=False) before compile()."""
    return _fit_frozen_first(True)


# --- a model built by its first call --------------------------------------------------------

def _lazy_bn_dropout():
    """A Sequential without Input: its variables are created by the first forward pass."""
    keras = _k()
    keras.utils.set_random_seed(15)
    return keras.Sequential([keras.layers.Dense(32), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dropout(0.3), keras.layers.Dense(10)])


def _lazy_fit(**compile_kw):
    keras = _k()
    x, y = data.digits(192)
    model = _lazy_bn_dropout()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kw)
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def lazy_model_fit():
    return _lazy_fit(jit_compile=False)


def lazy_model_fit_run_eagerly():
    return _lazy_fit(run_eagerly=True)


def lazy_model_eager_tape():
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(192)
    model = _lazy_bn_dropout()
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, B, 6):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return _out(model, _iters(opt))


# --- the loss object --------------------------------------------------------------------------

def digits_fit_from_logits():
    model = _fit_digits(_k().optimizers.Adam(1e-3))
    return _out(model, _iters(model.optimizer))


def digits_tape_from_logits_forgotten():
    """The same training by hand, the loss object built with its default from_logits=False on a
    model that outputs logits."""
    keras = _k()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    return _digits_step_loop(_mlp(), keras.optimizers.Adam(1e-3),
                             lambda model, xb, yb: loss_fn(yb, model(xb, training=True)))


# --- knowledge distillation: a frozen teacher in inference mode inside the student's step ---------

def distillation_frozen_teacher():
    """Keras's distillation recipe: the teacher (BatchNormalization + Dropout) is frozen and
    called with training=False; the student learns from its softened outputs and the labels."""
    keras = _k()
    import tensorflow as tf

    keras.utils.set_random_seed(23)
    teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
                                keras.layers.Dense(10)], name="teacher")
    teacher.trainable = False
    student = _mlp(seed=24)
    kl = keras.losses.KLDivergence()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_of(model, xb, yb):
        soft = tf.nn.softmax(teacher(xb, training=False) / 2.0)
        logits = model(xb, training=True)
        return 0.5 * ce(yb, logits) + 0.5 * kl(soft, tf.nn.softmax(logits / 2.0))

    return _digits_step_loop(student, keras.optimizers.Adam(1e-3), loss_of)


# --- clipping by hand or by the optimizer -----------------------------------------------------

def _clipped_digits(opt, by_hand: bool):
    import tensorflow as tf

    loss_fn = _k().losses.SparseCategoricalCrossentropy(from_logits=True)
    clip = (lambda grads: tf.clip_by_global_norm(grads, 0.1)[0]) if by_hand else None
    return _digits_step_loop(_mlp(seed=16), opt, lambda model, xb, yb: loss_fn(yb, model(xb, training=True)),
                             clip=clip)


def clip_by_global_norm_by_hand():
    """tf.clip_by_global_norm before apply_gradients: the recorded gradients are the clipped ones."""
    return _clipped_digits(_k().optimizers.SGD(0.1), True)


def clip_by_the_optimizer():
    """The same clipping done by the optimizer (global_clipnorm): the recorded gradients are raw."""
    return _clipped_digits(_k().optimizers.SGD(0.1, global_clipnorm=0.1), False)


def digits_fit_label_smoothing():
    keras = _k()
    x, y = data.digits(192)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    model.fit(x, np.eye(10, dtype="float32")[y], batch_size=B, epochs=1, shuffle=False, verbose=0)
    return _out(model, _iters(model.optimizer))


def digits_tape_label_smoothing_forgotten():
    """The same training by hand with the loss's default label_smoothing=0."""
    import tensorflow as tf

    keras = _k()
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    return _digits_step_loop(_mlp(), keras.optimizers.Adam(1e-3),
                             lambda model, xb, yb: loss_fn(tf.one_hot(yb, 10), model(xb, training=True)))


def numpy_round_trip_layers_called_directly():
    """The user's slip: a numpy round trip inside the tape cuts the first layer off the
    gradient; the layers are called one by one (never the model) and the None gradients
    are dropped before apply_gradients, so Keras does not even warn."""
    import tensorflow as tf

    keras = _k()
    x, y = data.digits(96)
    keras.utils.set_random_seed(17)
    l1, l2 = keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)
    inp = keras.Input((64,))
    model = keras.Model(inp, l2(l1(inp)))
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, B, 3):
        with tf.GradientTape() as tape:
            h = tf.constant(np.clip(l1(xb).numpy(), 0, 6))
            loss = loss_fn(yb, l2(h))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
    return _out(model, _iters(opt))
