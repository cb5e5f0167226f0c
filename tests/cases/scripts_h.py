# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A sixth set of pairs (see scripts.py for the conventions): CategoricalHinge and SquaredHinge,
CategoricalFocalCrossentropy, multi-label sigmoid cross-entropy, Huber on a recurrent regressor;
PiecewiseConstantDecay against a LearningRateScheduler callback and against a rate assigned by the
loop, ExponentialDecay; a subclassed model whose layers are created in another order than they
are called, TimeDistributed(Dense) against Dense on a sequence, a Bidirectional LSTM's merge mode,
MultiHeadAttention with a causal mask, MaxNorm constraints, L1 against L2 and bias regularizers,
BatchNormalization with validation passes and train_on_batch, tf.data shuffles that reshuffle
each epoch or not.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts_models import BATCH, STEPS, _ce_loop, _digits, _fit, _keras, _loop, _sparse_ce, _tf

# --- CategoricalHinge / SquaredHinge on one-hot iris ---------------------------------------------


def _iris_onehot():
    x, y = data.iris()
    return x, np.eye(3, dtype="float32")[y]


def _iris_net(seed: int = 601):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def _iris_fit(loss, opt=None, **kw):
    keras = _keras()
    x, y = _iris_onehot()
    model = _iris_net()
    model.compile(optimizer=opt or keras.optimizers.SGD(0.05), loss=loss)
    _fit(model, x, y, batch=16, steps=8, **kw)


def _iris_loop(loss_of, opt=None):
    keras = _keras()
    x, y = _iris_onehot()
    _loop(_iris_net(), opt or keras.optimizers.SGD(0.05), loss_of, x, y, batch=16, steps=8)


def fit_categorical_hinge():
    _iris_fit(_keras().losses.CategoricalHinge())


def tape_categorical_hinge_by_hand():
    """max(0, 1 + max_{wrong} out - out_{true}), averaged over the batch."""
    tf = _tf()

    def loss_of(m, xb, yb):
        out = m(xb, training=True)
        pos = tf.reduce_sum(yb * out, axis=-1)
        neg = tf.reduce_max((1.0 - yb) * out, axis=-1)
        return tf.reduce_mean(tf.maximum(0.0, neg - pos + 1.0))

    _iris_loop(loss_of)


def tape_squared_hinge_for_categorical():
    """SquaredHinge on the one-hot labels (read as -1/+1 per class) where fit() uses CategoricalHinge."""
    sq = _keras().losses.SquaredHinge()
    _iris_loop(lambda m, xb, yb: sq(yb, m(xb, training=True)))


# --- CategoricalFocalCrossentropy: gamma=0, alpha=1 is cross-entropy; its defaults are not -------


def fit_iris_cce_logits():
    _iris_fit(_keras().losses.CategoricalCrossentropy(from_logits=True), _keras().optimizers.Adam(1e-2))


def tape_iris_focal_gamma0_alpha1():
    keras = _keras()
    focal = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=0.0, from_logits=True)
    _iris_loop(lambda m, xb, yb: focal(yb, m(xb, training=True)), keras.optimizers.Adam(1e-2))


def tape_iris_focal_defaults():
    """CategoricalFocalCrossentropy with its defaults (alpha=0.25, gamma=2) for cross-entropy."""
    keras = _keras()
    focal = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    _iris_loop(lambda m, xb, yb: focal(yb, m(xb, training=True)), keras.optimizers.Adam(1e-2))


# --- multi-label: BinaryCrossentropy(from_logits) vs tf.nn.sigmoid_cross_entropy_with_logits -----


def _multilabel():
    """Digits with three yes/no labels: odd, >= 5, a multiple of 3."""
    x, y = _digits()
    return x, np.stack([y % 2, y >= 5, y % 3 == 0], axis=1).astype("float32")


def _multilabel_net():
    keras = _keras()
    keras.utils.set_random_seed(607)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(3)])


def fit_multilabel_bce():
    keras = _keras()
    x, y = _multilabel()
    model = _multilabel_net()
    model.compile(optimizer=keras.optimizers.RMSprop(3e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_multilabel_sigmoid_ce_by_hand():
    tf = _tf()
    keras = _keras()
    x, y = _multilabel()

    def loss_of(m, xb, yb):
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=m(xb, training=True)))

    _loop(_multilabel_net(), keras.optimizers.RMSprop(3e-3), loss_of, x, y)


def tape_multilabel_softmax_ce():
    """Softmax cross-entropy over the three independent labels: one distribution where there are three."""
    keras = _keras()
    x, y = _multilabel()
    cce = keras.losses.CategoricalCrossentropy(from_logits=True)
    _loop(_multilabel_net(), keras.optimizers.RMSprop(3e-3), lambda m, xb, yb: cce(yb, m(xb, training=True)), x, y)


# --- a piecewise-constant rate: schedule, LearningRateScheduler callback, assigned by the loop ---


def _digits_mlp(seed: int = 611):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"), keras.layers.Dense(10)])


def _digits_three_epochs(opt, callbacks=()):
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    model = _digits_mlp()
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=list(callbacks))


def fit_piecewise_per_epoch():
    """0.2 for the first epoch (4 steps), 0.05 after: the rate changes once the iteration passes 3."""
    keras = _keras()
    _digits_three_epochs(keras.optimizers.SGD(keras.optimizers.schedules.PiecewiseConstantDecay([3], [0.2, 0.05])))


def fit_lr_scheduler_callback():
    keras = _keras()
    _digits_three_epochs(keras.optimizers.SGD(0.2),
                         [keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.2 if epoch < 1 else 0.05)])


def fit_lr_scheduler_callback_epoch_late():
    """The callback lowers the rate from the third epoch, the schedule from the second."""
    keras = _keras()
    _digits_three_epochs(keras.optimizers.SGD(0.2),
                         [keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.2 if epoch < 2 else 0.05)])


def _tape_lr_assigned(rate_of_step):
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

    i = 0
    for _epoch in range(3):
        for xb, yb in data.batches(x, y, BATCH, 4):
            opt.learning_rate.assign(rate_of_step(i))
            step(xb, yb)
            i += 1


def tape_lr_assigned_per_step():
    """The loop sets the rate itself before each step: the same rates as the schedule."""
    _tape_lr_assigned(lambda i: 0.2 if i < 4 else 0.05)


def tape_lr_assigned_decayed_each_epoch():
    """The loop divides the rate by 4 at each epoch: 0.2, 0.05, 0.0125."""
    _tape_lr_assigned(lambda i: 0.2 / 4 ** (i // 4))


# --- ExponentialDecay against the same rate assigned by hand from optimizer.iterations ----------


def fit_exponential_decay():
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(613)
    lr = keras.optimizers.schedules.ExponentialDecay(0.3, decay_steps=2, decay_rate=0.6)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.5), loss=_sparse_ce())
    _fit(model, x, y)


def tape_exponential_decay_by_hand():
    """The rate computed from the optimizer's own counter inside the step."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(613)
    opt = keras.optimizers.SGD(0.3, momentum=0.5)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.learning_rate.assign(0.3 * tf.pow(0.6, tf.cast(opt.iterations, tf.float32) / 2.0))
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


# --- a subclassed model whose layers are created in another order than they are called ----------


def _wine_standardised():
    x, y = data.wine(STEPS * 16)
    return (x - x.mean(0)) / x.std(0), y


def _wine_functional():
    keras = _keras()
    keras.utils.set_random_seed(617)
    inp = keras.Input((13,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.Dense(8, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def fit_wine_functional():
    keras = _keras()
    x, y = _wine_standardised()
    model = _wine_functional()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_sparse_ce())
    _fit(model, x, y, batch=16)


def _wine_head_first():
    """The head is created first: model.trainable_variables lists it before the hidden layers."""
    keras = _keras()

    class HeadFirst(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(3)
            self.second = keras.layers.Dense(8, activation="relu")
            self.first = keras.layers.Dense(16, activation="relu")

        def call(self, x):
            return self.head(self.second(self.first(x)))

    ref = _wine_functional()
    model = HeadFirst()
    model(np.zeros((1, 13), "float32"))
    dense = [la for la in ref.layers if isinstance(la, keras.layers.Dense)]
    for mine, theirs in zip((model.first, model.second, model.head), dense):
        mine.set_weights(theirs.get_weights())
    return model


def tape_wine_head_first_subclass():
    keras = _keras()
    x, y = _wine_standardised()
    _ce_loop(_wine_head_first(), keras.optimizers.Adam(5e-3), x, y, batch=16)


# --- TimeDistributed(Dense) against Dense on a sequence (a per-step tagger) ---------------------


def _tags():
    return data.tagged_sequences(n=STEPS * BATCH, length=10, vocab=16, seed=19)


def _tagger(time_distributed: bool, bidirectional_merge: str | None = None):
    keras = _keras()
    keras.utils.set_random_seed(619)
    inp = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(16, 8)(inp)
    rnn = keras.layers.LSTM(12, return_sequences=True)
    h = keras.layers.Bidirectional(rnn, merge_mode=bidirectional_merge)(h) if bidirectional_merge else rnn(h)
    head = keras.layers.Dense(3)
    out = keras.layers.TimeDistributed(head)(h) if time_distributed else head(h)
    return keras.Model(inp, out)


def fit_tagger_time_distributed():
    keras = _keras()
    x, y = _tags()
    model = _tagger(True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_tagger_dense_on_sequence():
    keras = _keras()
    x, y = _tags()
    _ce_loop(_tagger(False), keras.optimizers.Adam(1e-2), x, y)


def fit_tagger_bidirectional_sum():
    keras = _keras()
    x, y = _tags()
    model = _tagger(False, "sum")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_tagger_bidirectional_ave():
    """merge_mode='ave' where fit()'s model sums the two directions: the same shapes, half the sum."""
    keras = _keras()
    x, y = _tags()
    _ce_loop(_tagger(False, "ave"), keras.optimizers.Adam(1e-2), x, y)


# --- next-row prediction with MultiHeadAttention: the causal mask in one run only -----------------


def _rows_next():
    """The digit rows as a sequence; the target at each row is the next row (the last predicts zeros)."""
    x, _ = _digits()
    rows = x.reshape(-1, 8, 8)
    return rows, np.concatenate([rows[:, 1:], np.zeros_like(rows[:, :1])], axis=1)


def _next_row_model():
    keras = _keras()

    class NextRow(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Dense(16)
            self.att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)
            self.norm = keras.layers.LayerNormalization()
            self.out = keras.layers.Dense(8)

        def call(self, x, causal=True):
            h = self.embed(x)
            h = self.norm(h + self.att(h, h, use_causal_mask=causal))
            return self.out(h)

    keras.utils.set_random_seed(623)
    model = NextRow()
    model(np.zeros((1, 8, 8), "float32"))
    return model


def fit_next_row_causal():
    keras = _keras()
    x, y = _rows_next()
    model = _next_row_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    _fit(model, x, y)


def tape_next_row_causal():
    keras = _keras()
    x, y = _rows_next()
    mse = keras.losses.MeanSquaredError()
    _loop(_next_row_model(), keras.optimizers.Adam(3e-3), lambda m, xb, yb: mse(yb, m(xb, training=True)), x, y)


def tape_next_row_mask_forgotten():
    """Without the causal mask each row attends to the row it must predict."""
    keras = _keras()
    x, y = _rows_next()
    mse = keras.losses.MeanSquaredError()
    _loop(_next_row_model(), keras.optimizers.Adam(3e-3),
          lambda m, xb, yb: mse(yb, m(xb, training=True, causal=False)), x, y)


# --- MaxNorm and regularizers on a breast-cancer classifier -------------------------------------


def _bc():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    order = np.random.default_rng(7).permutation(len(d.target))[: STEPS * BATCH]
    x = d.data[order].astype("float32")
    return (x - x.mean(0)) / x.std(0), d.target[order].astype("float32").reshape(-1, 1)


def _bc_net(**dense_kw):
    keras = _keras()
    keras.utils.set_random_seed(629)
    return keras.Sequential([keras.Input((30,)), keras.layers.Dense(16, activation="relu", **dense_kw),
                             keras.layers.Dense(1)])


def _bc_fit(model, lr: float = 0.5):
    keras = _keras()
    x, y = _bc()
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_bc_plain():
    _bc_fit(_bc_net())


def fit_bc_maxnorm():
    """MaxNorm(0.5) on the hidden kernel: columns longer than 0.5 are scaled back after each update."""
    _bc_fit(_bc_net(kernel_constraint=_keras().constraints.MaxNorm(0.5)))


def fit_bc_l2():
    _bc_fit(_bc_net(kernel_regularizer=_keras().regularizers.L2(0.01)), lr=0.1)


def fit_bc_l1():
    """L1(0.01) where the other run has L2(0.01)."""
    _bc_fit(_bc_net(kernel_regularizer=_keras().regularizers.L1(0.01)), lr=0.1)


def tape_bc_l2_bias_regularized_too():
    """The loop's model also regularizes the bias (bias_regularizer=L2(0.01)), adding sum(model.losses)."""
    tf = _tf()
    keras = _keras()
    x, y = _bc()
    l2 = keras.regularizers.L2(0.01)
    model = _bc_net(kernel_regularizer=l2, bias_regularizer=keras.regularizers.L2(0.01))
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1),
          lambda m, xb, yb: bce(yb, m(xb, training=True)) + tf.add_n(m.losses), x, y)


# --- BatchNormalization + Dropout: validation passes and train_on_batch -----------------------------


def _bn_net():
    keras = _keras()
    keras.utils.set_random_seed(631)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dropout(0.2), keras.layers.Dense(10)])


def fit_bn_validation_data():
    """fit() with validation_data: a validation pass (inference mode) after the epoch's steps."""
    keras = _keras()
    x, y = data.digits(4 * BATCH + 64)
    model = _bn_net()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_sparse_ce())
    model.fit(x[:4 * BATCH], y[:4 * BATCH], batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
              validation_data=(x[4 * BATCH:], y[4 * BATCH:]))


def tape_bn_validation_each_step():
    """A loop that scores the validation rows with training=False after every step."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits(4 * BATCH + 64)
    xv, yv = x[4 * BATCH:], y[4 * BATCH:]
    model = _bn_net()
    opt = keras.optimizers.Adam(5e-3)
    ce = _sparse_ce()
    metric = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _epoch in range(2):
        for xb, yb in data.batches(x[:4 * BATCH], y[:4 * BATCH], BATCH, 4):
            step(xb, yb)
            metric.update_state(yv, model(xv, training=False))


def fit_bn_train_on_batch():
    keras = _keras()
    x, y = data.digits(4 * BATCH + 64)
    model = _bn_net()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_sparse_ce())
    for _epoch in range(2):
        for xb, yb in data.batches(x[:4 * BATCH], y[:4 * BATCH], BATCH, 4):
            model.train_on_batch(xb, yb)


def fit_bc_class_weight():
    keras = _keras()
    x, y = _bc()
    model = _bc_net()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    _fit(model, x, y, class_weight={0: 1.6, 1: 0.7})


def fit_bc_train_on_batch_class_weight():
    """train_on_batch(class_weight=...) batch by batch: the same weighted steps."""
    keras = _keras()
    x, y = _bc()
    model = _bc_net()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        model.train_on_batch(xb, yb, class_weight={0: 1.6, 1: 0.7})


# --- a tf.data shuffle: reshuffled each epoch or not ---------------------------------------------


def _shuffled_ds(reshuffle: bool):
    tf = _tf()
    tf.random.set_seed(43)  # the pipeline's seed pair: the global seed with the op seed
    x, y = data.digits(4 * BATCH)
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(4 * BATCH, seed=41,
                                                               reshuffle_each_iteration=reshuffle).batch(BATCH)


def _digits_small(seed: int = 641):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(20, activation="relu"), keras.layers.Dense(10)])


def _loop_dataset(reshuffle: bool):
    """Three epochs of a tf.function tape loop over the shuffled pipeline."""
    tf = _tf()
    keras = _keras()
    ds = _shuffled_ds(reshuffle)
    model = _digits_small()
    opt = keras.optimizers.SGD(0.2, momentum=0.8)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _epoch in range(3):
        for xb, yb in ds:
            step(xb, yb)


def tape_dataset_shuffled_once():
    """One fixed shuffled order (reshuffle_each_iteration=False) for the three epochs."""
    _loop_dataset(reshuffle=False)


def tape_dataset_reshuffled_each_epoch():
    """The loop over the pipeline with reshuffle_each_iteration=True, as fit() is given it: the first
    epoch matches fit()'s, later ones take other orders of the same seed stream."""
    _loop_dataset(reshuffle=True)


def fit_dataset_order_materialised():
    """fit() on numpy arrays in the order the fixed shuffle gives (read once from the pipeline)."""
    keras = _keras()
    xs, ys = zip(*[(xb.numpy(), yb.numpy()) for xb, yb in _shuffled_ds(False)])
    x, y = np.concatenate(xs), np.concatenate(ys)
    model = _digits_small()
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.8), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)


def fit_dataset_reshuffled_each_epoch():
    """fit() on the pipeline with the default reshuffle_each_iteration=True: epochs 2 and 3 differ."""
    keras = _keras()
    model = _digits_small()
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.8), loss=_sparse_ce())
    model.fit(_shuffled_ds(True), epochs=3, verbose=0)


# --- Huber on a GRU regressor over the diabetes features -----------------------------------------


def _diabetes_seq():
    x, y = data.regression(STEPS * BATCH)
    return x.reshape(-1, 10, 1), y.reshape(-1, 1)


def _gru_regressor():
    keras = _keras()
    keras.utils.set_random_seed(643)
    return keras.Sequential([keras.Input((10, 1)), keras.layers.GRU(8), keras.layers.Dense(1)])


def fit_gru_huber():
    keras = _keras()
    x, y = _diabetes_seq()
    model = _gru_regressor()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.Huber(delta=0.5))
    _fit(model, x, y)


def tape_gru_huber_delta_2():
    keras = _keras()
    x, y = _diabetes_seq()
    huber = keras.losses.Huber(delta=2.0)
    _loop(_gru_regressor(), keras.optimizers.Adam(1e-2), lambda m, xb, yb: huber(yb, m(xb, training=True)), x, y)


def tape_gru_huber_eager():
    keras = _keras()
    x, y = _diabetes_seq()
    huber = keras.losses.Huber(delta=0.5)
    _loop(_gru_regressor(), keras.optimizers.Adam(1e-2), lambda m, xb, yb: huber(yb, m(xb, training=True)), x, y,
          function=False)


def tape_next_row_no_training_flag():
    """model(x) without training=: the attention layer has no dropout, so its mode changes nothing."""
    keras = _keras()
    x, y = _rows_next()
    mse = keras.losses.MeanSquaredError()
    _loop(_next_row_model(), keras.optimizers.Adam(3e-3), lambda m, xb, yb: mse(yb, m(xb)), x, y)
