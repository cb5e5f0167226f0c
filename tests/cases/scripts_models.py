# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""More pairs over other models, layers, losses and optimizers (see scripts.py for the conventions).

Recurrent and convolutional text/sequence models, multi-output models, normalisation layers,
frozen bases, optimizer settings, schedules, batch sizes and loss written in other styles.
"""

from __future__ import annotations

import numpy as np

from . import data

BATCH = 32
STEPS = 8


def _keras():
    import keras

    return keras


def _tf():
    import tensorflow as tf

    return tf


def _fit(model, x, y, batch: int = BATCH, steps: int = STEPS, **kw):
    n = batch * steps
    model.fit(x[:n], y[:n], batch_size=batch, epochs=kw.pop("epochs", 1), shuffle=False, verbose=0, **kw)


def _loop(model, opt, loss_of, x, y, batch: int = BATCH, steps: int = STEPS, function: bool = True,
          jit: bool = False, then=None, after=None, batches=None, before=None):
    """A tape loop over the batches fit(shuffle=False) sees (or over ``batches``, an iterable of
    (x, y)): loss_of(model, xb, yb) -> scalar; ``then(grads) -> grads`` between the tape and
    apply_gradients (clipping by hand); ``after()`` in the step after apply_gradients and
    ``before()`` at its top (weights written by hand)."""
    tf = _tf()

    def step(xb, yb):
        if before is not None:
            before()
        with tf.GradientTape() as tape:
            loss = loss_of(model, xb, yb)
        grads = tape.gradient(loss, model.trainable_variables)
        if then is not None:
            grads = then(grads)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        if after is not None:
            after()
        return loss

    if function:
        step = tf.function(step, jit_compile=jit)
    for xb, yb in data.batches(x, y, batch, steps) if batches is None else batches:
        step(xb, yb)



def _digits():
    """The digits, as many as STEPS batches of BATCH."""
    return data.digits(STEPS * BATCH)


def _sparse_ce():
    return _keras().losses.SparseCategoricalCrossentropy(from_logits=True)


def _ce_loop(model, opt, x, y, **kw):
    """``_loop`` with sparse cross-entropy on logits and ``training=True``."""
    ce = _sparse_ce()
    _loop(model, opt, lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y, **kw)

# --- text: Embedding(mask_zero) + GRU/LSTM classifiers ----------------------------------------

def _text():
    """Padded token sequences; the label says whether token 3 occurs before token 7."""
    x, _ = data.tagged_sequences(n=256, length=14, vocab=24, seed=8)
    y = np.array([1 if (3 in r and 7 in r and list(r).index(3) < list(r).index(7)) else 0 for r in x], "int32")
    return x, y


def _gru_classifier(dropout: float = 0.0):
    keras = _keras()
    keras.utils.set_random_seed(17)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(24, 8, mask_zero=True),
        keras.layers.GRU(12, dropout=dropout),
        keras.layers.Dense(1),
    ])


def fit_gru_text():
    keras = _keras()
    x, y = _text()
    model = _gru_classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y.reshape(-1, 1).astype("float32"))


def tape_gru_text_no_training_flag():
    """No training= in the loop: the GRU has no dropout, so nothing depends on it."""
    keras = _keras()
    x, y = _text()
    model = _gru_classifier()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(0.01), lambda m, xb, yb: bce(yb, m(xb)), x,
          y.reshape(-1, 1).astype("float32"))


def tape_gru_text_from_logits_forgotten():
    """The model outputs logits; the loop's BinaryCrossentropy takes them for probabilities."""
    keras = _keras()
    x, y = _text()
    model = _gru_classifier()
    bce = keras.losses.BinaryCrossentropy()
    _loop(model, keras.optimizers.Adam(0.01), lambda m, xb, yb: bce(yb, m(xb, training=True)), x,
          y.reshape(-1, 1).astype("float32"))


def fit_gru_text_dropout():
    keras = _keras()
    x, y = _text()
    model = _gru_classifier(dropout=0.3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y.reshape(-1, 1).astype("float32"))


def tape_gru_text_dropout_no_training_flag():
    keras = _keras()
    x, y = _text()
    model = _gru_classifier(dropout=0.3)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(0.01), lambda m, xb, yb: bce(yb, m(xb)), x,
          y.reshape(-1, 1).astype("float32"))


# --- Conv1D over the digit rows, with kernel regularizers ------------------------------------

def _conv1d(l2: float = 0.0):
    keras = _keras()
    keras.utils.set_random_seed(19)
    reg = keras.regularizers.L2(l2) if l2 else None
    return keras.Sequential([
        keras.Input((8, 8)),
        keras.layers.Conv1D(16, 3, activation="relu", kernel_regularizer=reg),
        keras.layers.Conv1D(16, 3, activation="relu", padding="same", kernel_regularizer=reg),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(10, kernel_regularizer=reg),
    ])


def _digit_rows():
    x, y = data.digits(STEPS * BATCH)
    return x.reshape(-1, 8, 8), y


def fit_conv1d():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_conv1d_eager():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1, momentum=0.9), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          function=False)


def tape_conv1d_nesterov():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
          lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def fit_conv1d_l2():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d(l2=1e-3)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_conv1d_l2_forgotten():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d(l2=1e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1, momentum=0.9), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_conv1d_jit():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1, momentum=0.9), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          jit=True)


# --- multi-output functional model with loss_weights -----------------------------------------

def _wine_two_heads():
    keras = _keras()
    keras.utils.set_random_seed(23)
    inp = keras.Input((13,))
    h = keras.layers.Dense(16, activation="tanh")(inp)
    cls = keras.layers.Dense(3, name="cultivar")(h)
    alc = keras.layers.Dense(1, name="alcohol")(h)
    return keras.Model(inp, [cls, alc])


def _wine_two_targets():
    x, y = data.wine(160)
    x = (x - x.mean(0)) / x.std(0)
    alcohol = ((x[:, :1] - x[:, :1].mean()) / x[:, :1].std()).astype("float32")
    return x[:, :].astype("float32"), y, alcohol


def fit_wine_loss_weights():
    keras = _keras()
    x, y, alc = _wine_two_targets()
    model = _wine_two_heads()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        keras.losses.MeanSquaredError()],
                  loss_weights=[1.0, 0.3])
    model.fit(x, [y, alc], batch_size=16, epochs=1, shuffle=False, verbose=0)


def _tape_wine_two_heads(w_cls: float, w_alc: float):
    tf = _tf()
    keras = _keras()
    x, y, alc = _wine_two_targets()
    model = _wine_two_heads()
    opt = keras.optimizers.Adam(0.01)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb, ab):
        with tf.GradientTape() as tape:
            logits, pred = model(xb, training=True)
            loss = w_cls * ce(yb, logits) + w_alc * mse(ab, pred)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(len(x) // 16):
        sl = slice(i * 16, (i + 1) * 16)
        step(x[sl], y[sl], alc[sl])


def tape_wine_loss_weights():
    _tape_wine_two_heads(1.0, 0.3)


def tape_wine_loss_weights_swapped():
    _tape_wine_two_heads(0.3, 1.0)


# --- one-hot vs sparse labels; mse reductions; hand-written reductions -------------------------

def fit_iris_sparse_cce():
    keras = _keras()
    x, y = data.iris()
    keras.utils.set_random_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:144], y[:144], batch_size=16, epochs=1, shuffle=False, verbose=0)


def tape_iris_onehot_cce():
    keras = _keras()
    x, y = data.iris()
    keras.utils.set_random_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)])
    cce = keras.losses.CategoricalCrossentropy(from_logits=True)
    onehot = np.eye(3, dtype="float32")[y]
    _loop(model, keras.optimizers.SGD(0.2), lambda m, xb, yb: cce(yb, m(xb, training=True)), x[:144],
          onehot[:144], batch=16, steps=9)


def tape_iris_hand_softmax_log():
    """log(softmax) written out; numerically the same as from_logits=True on these logits."""
    tf = _tf()
    keras = _keras()
    x, y = data.iris()
    keras.utils.set_random_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)])

    def loss_of(m, xb, yb):
        p = tf.nn.softmax(m(xb, training=True))
        return -tf.reduce_mean(tf.math.log(tf.gather(p, yb, batch_dims=1)))

    _loop(model, keras.optimizers.SGD(0.2), loss_of, x[:144], y[:144], batch=16, steps=9)


def tape_iris_sum_reduction_lr_scaled():
    """reduction='sum' with the learning rate divided by the batch: the same SGD updates."""
    keras = _keras()
    x, y = data.iris()
    keras.utils.set_random_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    _loop(model, keras.optimizers.SGD(0.2 / 16), lambda m, xb, yb: ce(yb, m(xb, training=True)), x[:144], y[:144],
          batch=16, steps=9)


def _diabetes_three_targets():
    x, y = data.regression()
    t = np.stack([y, np.tanh(x[:, 2]), x[:, 3] * 0.5], axis=1).astype("float32")
    return x, t


def _reg_net():
    keras = _keras()
    keras.utils.set_random_seed(31)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def fit_three_targets_mse():
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()
    model.compile(optimizer=keras.optimizers.SGD(0.02), loss="mse")
    _fit(model, x, t)


def tape_three_targets_mse_sum_reduction():
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()
    mse = keras.losses.MeanSquaredError(reduction="sum")
    _loop(model, keras.optimizers.SGD(0.02), lambda m, xb, yb: mse(yb, m(xb, training=True)), x, t)


def tape_three_targets_mean_axis0_then_mean():
    """Mean over the batch first, then over the outputs: the same number as Keras mse."""
    tf = _tf()
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()

    def loss_of(m, xb, yb):
        return tf.reduce_mean(tf.reduce_mean(tf.square(yb - m(xb, training=True)), axis=0))

    _loop(model, keras.optimizers.SGD(0.02), loss_of, x, t)


def tape_three_targets_mean_axis0_then_sum():
    """Mean over the batch, then a sum over the outputs: 3x Keras mse."""
    tf = _tf()
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()

    def loss_of(m, xb, yb):
        return tf.reduce_sum(tf.reduce_mean(tf.square(yb - m(xb, training=True)), axis=0))

    _loop(model, keras.optimizers.SGD(0.02), loss_of, x, t)


# --- LayerNormalization (no training dependence), with and without Dropout -------------------

def _layernorm_net(dropout: float = 0.0):
    keras = _keras()
    keras.utils.set_random_seed(37)
    layers = [keras.Input((20,)), keras.layers.Dense(24), keras.layers.LayerNormalization(),
              keras.layers.Activation("gelu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(2))
    return keras.Sequential(layers)


def fit_layernorm(dropout: float = 0.0):
    keras = _keras()
    x, y = data.classification()
    model = _layernorm_net(dropout)
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_layernorm_no_training_flag(dropout: float = 0.0):
    keras = _keras()
    x, y = data.classification()
    model = _layernorm_net(dropout)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(5e-3), lambda m, xb, yb: ce(yb, m(xb)), x, y)


def fit_layernorm_dropout():
    fit_layernorm(0.25)


def tape_layernorm_dropout_no_training_flag():
    tape_layernorm_no_training_flag(0.25)


# --- fine-tuning: a frozen base with BatchNormalization ---------------------------------------

def _fine_tune_model(training_arg: bool):
    keras = _keras()
    keras.utils.set_random_seed(41)
    base = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
    ], name="base")
    base.trainable = False
    inp = keras.Input((64,))
    h = base(inp, training=False) if training_arg else base(inp)
    out = keras.layers.Dense(10)(h)
    return keras.Model(inp, out)


def fit_frozen_base():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _fine_tune_model(True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_frozen_base_training_true():
    """The base called without training=False, the model with training=True: frozen BN stays in
    inference mode anyway (Keras 3)."""
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _fine_tune_model(False)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- optimizer settings ----------------------------------------------------------------------

def _digits_mlp(seed: int = 43):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


def fit_digits_adam_eps(eps: float = 1e-7, **fit_kw):
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2, epsilon=eps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y, **fit_kw)


def tape_digits_adam_eps_1e8():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(1e-2, epsilon=1e-8), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def fit_digits_clipnorm():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.5, clipnorm=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_digits_global_clipnorm():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.5, global_clipnorm=0.5), lambda m, xb, yb: ce(yb, m(xb, training=True)),
          x, y)


def fit_digits_schedule_per_step():
    """ExponentialDecay steps with the optimizer's iterations: the rate falls every step."""
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    model = _digits_mlp()
    lr = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=1, decay_rate=0.7)
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)


def tape_digits_schedule_per_epoch():
    """The same decay applied by hand once per epoch (4 steps)."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    model = _digits_mlp()
    opt = keras.optimizers.SGD(0.2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for epoch in range(3):
        opt.learning_rate.assign(0.2 * 0.7 ** epoch)
        for xb, yb in data.batches(x, y, BATCH, 4):
            step(xb, yb)


def tape_digits_applies_every_other_batch():
    """`if i % 2 == 0: apply` meant for accumulation, without accumulating: every other batch is lost."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i, (xb, yb) in enumerate(data.batches(x, y, BATCH, STEPS)):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if i % 2 == 0:
            opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_digits_batch_64():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(1e-2, epsilon=1e-7), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          batch=64, steps=STEPS // 2)


def tape_digits_adam_subclassed():
    """The same network as a subclassed model, its weights copied from the Sequential one."""
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    ref = _digits_mlp()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, inputs, training=False):
            return self.out(self.hidden(inputs))

    model = Net()
    model(x[:1])
    model.set_weights(ref.get_weights())
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def fit_digits_mixed_precision():
    keras = _keras()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fit_digits_adam_eps()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def fit_digits_adam_steps_per_execution():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4)
    _fit(model, x, y)


def fit_digits_maxnorm(loop: bool = False):
    """A kernel constraint: Keras's optimizer applies it after each update, in fit() and in a loop."""
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    keras.utils.set_random_seed(47)
    model = keras.Sequential([keras.Input((64,)),
                              keras.layers.Dense(32, activation="relu", kernel_constraint=keras.constraints.MaxNorm(0.5)),
                              keras.layers.Dense(10)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if loop:
        _loop(model, keras.optimizers.SGD(0.5), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)
    else:
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=ce)
        _fit(model, x, y)


def tape_digits_maxnorm():
    fit_digits_maxnorm(loop=True)


# --- class_weight in fit() vs the same weights by hand -----------------------------------------

def fit_breast_cancer_class_weight():
    keras = _keras()
    x, y = _breast_cancer()
    model = _bc_net()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y.reshape(-1, 1).astype("float32"), class_weight={0: 2.0, 1: 0.7})


def tape_breast_cancer_weights_by_hand():
    tf = _tf()
    keras = _keras()
    x, y = _breast_cancer()
    model = _bc_net()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    cw = tf.constant([2.0, 0.7])

    def loss_of(m, xb, yb):
        w = tf.gather(cw, tf.cast(tf.reshape(yb, [-1]), tf.int32))
        return bce(yb, m(xb, training=True), sample_weight=w)

    _loop(model, keras.optimizers.SGD(0.05), loss_of, x, y.reshape(-1, 1).astype("float32"))


def tape_breast_cancer_unweighted():
    keras = _keras()
    x, y = _breast_cancer()
    model = _bc_net()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.05), lambda m, xb, yb: bce(yb, m(xb, training=True)), x,
          y.reshape(-1, 1).astype("float32"))


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(d.target))
    x = d.data[order].astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    return x, d.target[order].astype("int32")


def _bc_net():
    keras = _keras()
    keras.utils.set_random_seed(53)
    return keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])


# --- more written-two-ways pairs ---------------------------------------------------------------

def _bn_mlp():
    keras = _keras()
    keras.utils.set_random_seed(59)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dense(2)])


def fit_bn_mlp():
    keras = _keras()
    x, y = data.classification()
    model = _bn_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_bn_mlp_metric_forward_in_training_mode():
    """A second forward pass in training mode to compute accuracy: BN's moving statistics move twice."""
    tf = _tf()
    keras = _keras()
    x, y = data.classification()
    model = _bn_mlp()
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        acc.update_state(yb, model(xb, training=True))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def fit_huber():
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3), loss=keras.losses.Huber(delta=0.5))
    _fit(model, x, t * 3.0)


def tape_huber_by_hand():
    tf = _tf()
    keras = _keras()
    x, t = _diabetes_three_targets()
    model = _reg_net()

    def loss_of(m, xb, yb):
        err = tf.abs(yb - m(xb, training=True))
        per = tf.where(err <= 0.5, 0.5 * tf.square(err), 0.5 * (err - 0.25))
        return tf.reduce_mean(tf.reduce_mean(per, axis=-1))

    _loop(model, keras.optimizers.RMSprop(5e-3), loss_of, x, t * 3.0)


def fit_bc_sigmoid():
    keras = _keras()
    x, y = _breast_cancer()
    keras.utils.set_random_seed(61)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    _fit(model, x, y.reshape(-1, 1).astype("float32"), validation_data=(x[-64:], y[-64:].reshape(-1, 1)))


def tape_bc_sigmoid_hand_log_loss():
    tf = _tf()
    keras = _keras()
    x, y = _breast_cancer()
    keras.utils.set_random_seed(61)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])

    def loss_of(m, xb, yb):
        p = m(xb, training=True)
        return -tf.reduce_mean(yb * tf.math.log(p) + (1.0 - yb) * tf.math.log(1.0 - p))

    _loop(model, keras.optimizers.Adam(1e-2), loss_of, x, y.reshape(-1, 1).astype("float32"))


def fit_digits_softmax_two_epochs():
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    keras.utils.set_random_seed(67)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, clipvalue=0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)


def tape_digits_softmax_two_epochs_clip_by_hand():
    """Clipped by value by hand, the optimizer without clipvalue; two epochs of the same 4 batches."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    keras.utils.set_random_seed(67)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.clip_by_value(g, -0.05, 0.05) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _epoch in range(2):
        for xb, yb in data.batches(x, y, BATCH, 4):
            step(xb, yb)


# --- the last, partial batch; fit() called per batch; two losses differentiated one by one -------

def _digits_mlp_small(seed: int = 71):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


def fit_digits_partial_last_batch():
    """250 examples in batches of 32: fit() steps on a last batch of 26 in each epoch."""
    keras = _keras()
    x, y = data.digits(250)
    model = _digits_mlp_small()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)


def tape_digits_drop_remainder():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(250)
    model = _digits_mlp_small()
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _epoch in range(2):
        for xb, yb in ds:
            step(xb, yb)


def fit_digits_once():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp_small()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_digits_per_batch():
    """fit() called once per batch (the optimizer and its state carry over between calls)."""
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp_small()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        model.fit(x[sl], y[sl], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_wine_unweighted():
    keras = _keras()
    x, y, alc = _wine_two_targets()
    model = _wine_two_heads()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        keras.losses.MeanSquaredError()])
    model.fit(x, [y, alc], batch_size=16, epochs=1, shuffle=False, verbose=0)


def tape_wine_two_gradients_summed():
    """Each output's loss differentiated on its own (a persistent tape) and the gradients added: the
    gradient of the sum, and the step records the sum of both losses (the tracer sees the addition)."""
    tf = _tf()
    keras = _keras()
    x, y, alc = _wine_two_targets()
    model = _wine_two_heads()
    opt = keras.optimizers.Adam(0.01)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb, ab):
        with tf.GradientTape(persistent=True) as tape:
            logits, pred = model(xb, training=True)
            l_cls, l_alc = ce(yb, logits), mse(ab, pred)
        g_cls = tape.gradient(l_cls, model.trainable_variables)
        g_alc = tape.gradient(l_alc, model.trainable_variables)
        grads = [g1 if g2 is None else (g2 if g1 is None else g1 + g2) for g1, g2 in zip(g_cls, g_alc)]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(len(x) // 16):
        sl = slice(i * 16, (i + 1) * 16)
        step(x[sl], y[sl], alc[sl])


def tape_digits_adamw_no_decay():
    """AdamW with weight_decay=0: Adam under another name."""
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.AdamW(1e-2, weight_decay=0.0), lambda m, xb, yb: ce(yb, m(xb, training=True)),
          x, y)


def fit_digits_piecewise_schedule():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([3], [0.1, 0.02])
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_digits_schedule_one_step_early():
    """The same schedule set by hand from a step counter that starts at 1."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([3], [0.1, 0.02])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i, (xb, yb) in enumerate(data.batches(x, y, BATCH, STEPS)):
        opt.learning_rate.assign(schedule(i + 1))
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


# --- equivalent in other styles: Functional with copied weights, masked pooling, a noise layer ----

def fit_digits_rmsprop():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_digits_functional_copied_weights():
    keras = _keras()
    x, y = data.digits(STEPS * BATCH)
    ref = _digits_mlp()
    inp = keras.Input((64,))
    out = keras.layers.Dense(10)(keras.layers.Dense(32, activation="relu")(inp))
    model = keras.Model(inp, out)
    model.set_weights(ref.get_weights())
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.RMSprop(1e-3), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def _masked_pooling():
    keras = _keras()
    keras.utils.set_random_seed(73)
    return keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(24, 8, mask_zero=True),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])


def fit_text_masked_pooling():
    keras = _keras()
    x, y = _text()
    model = _masked_pooling()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y.reshape(-1, 1).astype("float32"))


def tape_text_masked_pooling():
    keras = _keras()
    x, y = _text()
    model = _masked_pooling()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(0.01), lambda m, xb, yb: bce(yb, m(xb, training=True)), x,
          y.reshape(-1, 1).astype("float32"))


def _noisy_net():
    keras = _keras()
    keras.utils.set_random_seed(79)
    return keras.Sequential([keras.Input((20,)), keras.layers.GaussianNoise(0.3),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])


def fit_gaussian_noise():
    keras = _keras()
    x, y = data.classification()
    model = _noisy_net()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_gaussian_noise():
    keras = _keras()
    x, y = data.classification()
    model = _noisy_net()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.Adam(5e-3), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


# --- the model built again inside the epoch loop ---------------------------------------------

def fit_digits_two_epochs_sgd():
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)


def tape_digits_model_built_each_epoch():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _epoch in range(2):
        model = _digits_mlp()  # built (and seeded) inside the epoch loop
        opt = keras.optimizers.SGD(0.1)
        for xb, yb in data.batches(x, y, BATCH, 4):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
