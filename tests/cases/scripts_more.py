# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A third set of pairs (see scripts.py for the conventions): attention blocks, embeddings, losses
given by string or with other arguments, optimizer settings, layer arguments, data held out by
fit(), initialisations, frozen layers, and loops written in other correct styles.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts_models import BATCH, STEPS, _digits, _digits_mlp, _fit, _keras, _loop, _sparse_ce, _tf

# --- a transformer block: MultiHeadAttention with dropout, LayerNorm, residuals ----------------

def _tokens():
    """Token sequences (no padding); the label is whether token 2 occurs after token 5."""
    rng = np.random.default_rng(11)
    x = rng.integers(1, 16, size=(STEPS * BATCH, 10)).astype("int32")
    y = np.array([1 if (5 in r and 2 in list(r)[list(r).index(5):]) else 0 for r in x], "int32")
    return x, y


def _attention_block(dropout: float = 0.1):
    keras = _keras()
    keras.utils.set_random_seed(61)
    inp = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(16, 16)(inp)
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, dropout=dropout)(h, h)
    h = keras.layers.LayerNormalization()(h + a)
    f = keras.layers.Dense(16, activation="relu")(h)
    f = keras.layers.Dropout(dropout)(f)
    h = keras.layers.LayerNormalization()(h + f)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


def fit_attention():
    keras = _keras()
    x, y = _tokens()
    model = _attention_block()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=_sparse_ce())
    _fit(model, x, y)


def tape_attention():
    keras = _keras()
    x, y = _tokens()
    model = _attention_block()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(3e-3), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_attention_no_training_flag():
    """model(x) in the tape: the attention and feed-forward dropout never drop anything."""
    keras = _keras()
    x, y = _tokens()
    model = _attention_block()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(3e-3), lambda m, xb, yb: ce(yb, m(xb)), x, y)


# --- embeddings with and without mask_zero ---------------------------------------------------

def _padded_text():
    x, _ = data.tagged_sequences(n=STEPS * BATCH, length=12, vocab=20, seed=9)
    y = (x == 4).any(axis=1).astype("int32")
    return x, y


def _bag_of_embeddings(mask_zero: bool):
    keras = _keras()
    keras.utils.set_random_seed(67)
    return keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(20, 8, mask_zero=mask_zero),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])


def fit_embedding_masked():
    keras = _keras()
    x, y = _padded_text()
    model = _bag_of_embeddings(mask_zero=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_embedding_mask_forgotten():
    """The loop's copy of the model was built without mask_zero: padding is averaged in."""
    keras = _keras()
    x, y = _padded_text()
    model = _bag_of_embeddings(mask_zero=False)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- categorical cross-entropy on one-hot labels, a softmax-free head -------------------------

def _onehot_digits():
    x, y = _digits()
    return x, np.eye(10, dtype="float32")[y]


def fit_cce_logits():
    keras = _keras()
    x, y = _onehot_digits()
    model = _digits_mlp(seed=71)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_cce_string_on_logits():
    """loss='categorical_crossentropy' takes the head's logits for probabilities."""
    keras = _keras()
    x, y = _onehot_digits()
    model = _digits_mlp(seed=71)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    _fit(model, x, y)


def tape_cce_label_smoothing():
    keras = _keras()
    x, y = _onehot_digits()
    model = _digits_mlp(seed=71)
    ce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_cce_function_from_logits():
    """keras.losses.categorical_crossentropy(..., from_logits=True) averaged by hand: the same loss."""
    tf = _tf()
    keras = _keras()
    x, y = _onehot_digits()
    model = _digits_mlp(seed=71)
    _loop(model, keras.optimizers.SGD(0.1),
          lambda m, xb, yb: tf.reduce_mean(keras.losses.categorical_crossentropy(yb, m(xb, training=True),
                                                                               from_logits=True)), x, y)


# --- softmax heads: the loss and optimizer given as strings ----------------------------------

def _softmax_mlp():
    keras = _keras()
    keras.utils.set_random_seed(73)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def fit_strings():
    """compile(optimizer='adam', loss='sparse_categorical_crossentropy'): Adam(0.001), probabilities."""
    x, y = _digits()
    model = _softmax_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    _fit(model, x, y)


def tape_objects_defaults():
    keras = _keras()
    x, y = _digits()
    model = _softmax_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy()
    _loop(model, keras.optimizers.Adam(), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_objects_lr_1e2():
    """The loop's Adam given 0.01 where compile()'s 'adam' means 0.001."""
    keras = _keras()
    x, y = _digits()
    model = _softmax_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_softmax_from_logits_true():
    """from_logits=True on a softmax head: the softmax is applied twice."""
    keras = _keras()
    x, y = _digits()
    model = _softmax_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- regression: Huber with another delta by hand, MAE against MSE ---------------------------

def _diabetes():
    x, y = data.regression(STEPS * BATCH)
    return x, y.reshape(-1, 1)


def _reg_mlp():
    keras = _keras()
    keras.utils.set_random_seed(79)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])


def fit_huber_delta_1():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.Huber(delta=1.0))
    _fit(model, x, y)


def tape_huber_by_hand_delta_half():
    """A hand-written Huber loss with delta=0.5 against Keras's Huber() (delta=1.0)."""
    tf = _tf()
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()

    def huber(m, xb, yb):
        err = tf.abs(yb - m(xb, training=True))
        d = 0.5
        return tf.reduce_mean(tf.where(err <= d, 0.5 * tf.square(err), d * err - 0.5 * d * d))

    _loop(model, keras.optimizers.SGD(0.05), huber, x, y)


def fit_mse_regression():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    _fit(model, x, y)


def tape_mae_regression():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    mae = keras.losses.MeanAbsoluteError()
    _loop(model, keras.optimizers.SGD(0.05), lambda m, xb, yb: mae(yb, m(xb, training=True)), x, y)


# --- optimizer settings: a schedule in one run, clipvalue in one run -------------------------

def fit_digits_decay_schedule():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    lr = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=_sparse_ce())
    _fit(model, x, y)


def tape_digits_constant_lr():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_digits_clipvalue():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1, clipvalue=0.01), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_digits_reduce_retracing():
    """The step as tf.function(reduce_retracing=True), the batches as tensors: the same training."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    opt = keras.optimizers.SGD(0.1)
    ce = _sparse_ce()

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(tf.constant(xb), tf.constant(yb))


def fit_digits_other_seed():
    """The same data in the same order; the model initialised from another seed."""
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=84)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def fit_digits_sgd_83():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def fit_digits_sample_weight_one_run():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y, sample_weight=data.sample_weights(len(x)))


def fit_digits_validation_split():
    """validation_split=0.25 holds out the last quarter; two epochs over the rest."""
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, validation_split=0.25)


def tape_digits_all_data_two_epochs():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=83)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          steps=STEPS + STEPS * 3 // 4)


def fit_digits_extra_identity_layer():
    """An Activation('linear') layer (no variables) added after the hidden layer: the same function."""
    keras = _keras()
    x, y = _digits()
    keras.utils.set_random_seed(83)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Activation("linear"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def fit_digits_no_metrics_train_step():
    """A custom train_step that returns its loss without updating fit()'s loss tracker: the same training."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()

    class NoMetrics(keras.Sequential):
        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=xb, y=yb, y_pred=self(xb, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(83)
    model = NoMetrics([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


# --- layer arguments: BatchNormalization momentum, Dropout rate -------------------------------

def _bn_drop_mlp(momentum: float = 0.99, rate: float = 0.2):
    keras = _keras()
    keras.utils.set_random_seed(89)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(16), keras.layers.BatchNormalization(momentum=momentum),
                             keras.layers.Activation("relu"), keras.layers.Dropout(rate), keras.layers.Dense(2)])


def _fit_bn_drop(momentum: float = 0.99, rate: float = 0.2):
    keras = _keras()
    x, y = data.classification()
    model = _bn_drop_mlp(momentum, rate)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_sparse_ce())
    _fit(model, x, y)


def fit_bn_drop():
    _fit_bn_drop()


def fit_bn_momentum_09():
    _fit_bn_drop(momentum=0.9)


def fit_dropout_05():
    _fit_bn_drop(rate=0.5)


def tape_bn_drop_model_variables():
    """tape.gradient(loss, model.variables): the moving statistics get None gradients (Keras warns)."""
    keras = _keras()
    x, y = data.classification()
    model = _bn_drop_mlp()
    opt = keras.optimizers.SGD(0.05)
    ce = _sparse_ce()
    tf = _tf()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.variables)
        opt.apply_gradients(zip(grads, model.variables))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_bn_drop_validation_forward_in_training_mode():
    """After each step the loop scores a validation batch with model(x_val, training=True)."""
    tf = _tf()
    keras = _keras()
    x, y = data.classification()
    x_val, y_val = x[STEPS * BATCH:STEPS * BATCH + 64], y[STEPS * BATCH:STEPS * BATCH + 64]
    model = _bn_drop_mlp()
    opt = keras.optimizers.SGD(0.05)
    ce = _sparse_ce()
    acc = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)
        acc.update_state(y_val, model(x_val, training=True))


# --- a subclassed model whose call does not pass training on (Keras 3 passes it anyway) ---------

def _subclassed_dropout(keras):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.drop = keras.layers.Dropout(0.3)
            self.out = keras.layers.Dense(10)

        def call(self, x, training=None):
            return self.out(self.drop(self.hidden(x)))  # training not passed to Dropout

    keras.utils.set_random_seed(97)
    model = Net()
    model.build((None, 64))
    return model


def _sequential_dropout(keras):
    keras.utils.set_random_seed(97)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dropout(0.3), keras.layers.Dense(10)])


def fit_sequential_dropout():
    keras = _keras()
    x, y = _digits()
    model = _sequential_dropout(keras)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def tape_subclassed_dropout_training_not_passed():
    keras = _keras()
    x, y = _digits()
    model = _subclassed_dropout(keras)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- freezing a layer: before compile(), after compile(), or not at all ------------------------

def _fit_frozen_first(when: str):
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=101)
    if when == "before":
        model.layers[0].trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    if when == "after":
        model.layers[0].trainable = False
    _fit(model, x, y)


def fit_frozen_before_compile():
    _fit_frozen_first("before")


def fit_frozen_after_compile():
    _fit_frozen_first("after")


def fit_not_frozen():
    _fit_frozen_first("never")


# --- a small Conv2D network on the digit images -----------------------------------------------

def _conv2d():
    keras = _keras()
    keras.utils.set_random_seed(103)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])


def _digit_images():
    x, y = _digits()
    return x.reshape(-1, 8, 8, 1), y


def fit_conv2d():
    keras = _keras()
    x, y = _digit_images()
    model = _conv2d()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=_sparse_ce())
    _fit(model, x, y)


def tape_conv2d_eager():
    keras = _keras()
    x, y = _digit_images()
    model = _conv2d()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.RMSprop(1e-3), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          function=False)


def tape_conv2d_rmsprop_rho():
    """RMSprop(rho=0.99) where Keras's default is 0.9 (tf.compat.v1 habits)."""
    keras = _keras()
    x, y = _digit_images()
    model = _conv2d()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.RMSprop(1e-3, rho=0.99), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- binary classification: a sigmoid head with from_logits=True ------------------------------

def _binary():
    x, y = data.classification(STEPS * BATCH)
    return x, y.reshape(-1, 1).astype("float32")


def _sigmoid_net():
    keras = _keras()
    keras.utils.set_random_seed(107)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


def fit_sigmoid_bce():
    keras = _keras()
    x, y = _binary()
    model = _sigmoid_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"])
    _fit(model, x, y)


def tape_sigmoid_bce_from_logits():
    keras = _keras()
    x, y = _binary()
    model = _sigmoid_net()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: bce(yb, m(xb, training=True)), x, y)


def tape_sigmoid_bce_sample_weight():
    """The loop weights each sample's loss; fit() does not."""
    tf = _tf()
    keras = _keras()
    x, y = _binary()
    model = _sigmoid_net()
    bce = keras.losses.BinaryCrossentropy()
    w = data.sample_weights(len(x))
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def step(xb, yb, wb):
        with tf.GradientTape() as tape:
            loss = bce(yb, model(xb, training=True), sample_weight=wb)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        step(x[sl], y[sl], w[sl])


# --- two-phase fine-tuning: a layer frozen between two fit() calls -----------------------------

def _fit_two_phases(recompile: bool):
    """fit() 4 batches, freeze the first layer, fit() the next 4: with or without compile() again.

    Keras's fit() keeps the train function it built on the first call; only compile() makes it
    read the layer's new trainable flag.
    """
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=109)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    half = STEPS // 2 * BATCH
    model.fit(x[:half], y[:half], batch_size=BATCH, shuffle=False, verbose=0)
    model.layers[0].trainable = False
    if recompile:
        model.compile(optimizer=model.optimizer, loss=_sparse_ce())
    model.fit(x[half:2 * half], y[half:2 * half], batch_size=BATCH, shuffle=False, verbose=0)


def fit_freeze_then_recompile():
    _fit_two_phases(recompile=True)


def fit_freeze_without_recompile():
    _fit_two_phases(recompile=False)


# --- image augmentation layers in the model; another head on the same convolution ---------------

def _augmented_conv(dropout: float = 0.0):
    keras = _keras()
    keras.utils.set_random_seed(113)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomFlip("horizontal"),
                             keras.layers.RandomTranslation(0.1, 0.1), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.Flatten()]
                            + ([keras.layers.Dropout(dropout)] if dropout else []) + [keras.layers.Dense(10)])


def fit_augmented_conv(dropout: float = 0.0):
    keras = _keras()
    x, y = _digit_images()
    model = _augmented_conv(dropout)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def fit_augmented_conv_dropout():
    fit_augmented_conv(dropout=0.3)


def tape_augmented_conv_dropout_no_training_flag():
    """model(x): the augmentation layers still augment (their default), the Dropout does not drop."""
    keras = _keras()
    x, y = _digit_images()
    model = _augmented_conv(dropout=0.3)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb)), x, y)


def tape_augmented_conv():
    keras = _keras()
    x, y = _digit_images()
    model = _augmented_conv()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_augmented_conv_no_training_flag():
    """model(x) in the tape: Keras 3's augmentation layers default to training mode, so they augment."""
    keras = _keras()
    x, y = _digit_images()
    model = _augmented_conv()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb)), x, y)


def tape_conv2d_global_pooling():
    """The 'same' network with GlobalAveragePooling2D where the other flattens: another model."""
    keras = _keras()
    x, y = _digit_images()
    keras.utils.set_random_seed(103)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    ce = _sparse_ce()
    _loop(model, keras.optimizers.RMSprop(1e-3), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- a Normalization layer adapted on other data; labels as a column; ignore_class -------------

def _wine_normalized(adapt_x):
    keras = _keras()
    keras.utils.set_random_seed(131)
    norm = keras.layers.Normalization()
    norm.adapt(adapt_x)
    return keras.Sequential([keras.Input((13,)), norm, keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3)])


def fit_wine_adapted_on_all():
    keras = _keras()
    x, y = data.wine()
    model = _wine_normalized(x)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_sparse_ce())
    _fit(model, x, y, batch=16)


def tape_wine_adapted_on_first_batch():
    """The same seed; the loop adapts the Normalization layer on the first batch only."""
    keras = _keras()
    x, y = data.wine()
    model = _wine_normalized(x[:16])
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.05), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y, batch=16)


def fit_digits_label_column():
    """Class indices as a (N, 1) column: SparseCategoricalCrossentropy squeezes them."""
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=137)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y.reshape(-1, 1))


def tape_digits_label_flat():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=137)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_digits_ignore_class_0():
    """ignore_class=0 (meant for padding) on digit labels: every zero drops out of the loss."""
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed=137)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)
