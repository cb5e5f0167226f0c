# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A fifth set of pairs (see scripts.py for the conventions): autoencoders (dense, convolutional with
UpSampling2D, denoising with GaussianDropout), Conv1D + GRU over the digit rows, a two-input
functional model, residual blocks with Add and LayerNormalization, self-attention over the digit
rows, GroupNormalization, Reshape/Permute, an Embedding + max-pooling text model; the losses
KLDivergence, Poisson, CosineSimilarity, Hinge, BinaryFocalCrossentropy and CategoricalCrossentropy
with label_smoothing; Adadelta, Adamax, Nadam, centered RMSprop, nesterov SGD with weight decay,
ExponentialDecay(staircase) and CosineDecay schedules, tf.data pipelines with cache/map.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts_models import BATCH, STEPS, _ce_loop, _digits, _fit, _keras, _loop, _sparse_ce, _tf

# --- a dense autoencoder on the digits: fit(x, x) with mse ----------------------------------------

def _autoencoder():
    keras = _keras()
    keras.utils.set_random_seed(311)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                             keras.layers.Dense(8, activation="relu"), keras.layers.Dense(24, activation="relu"),
                             keras.layers.Dense(64, activation="sigmoid")])


def fit_autoencoder():
    keras = _keras()
    x, _ = _digits()
    model = _autoencoder()
    model.compile(optimizer=keras.optimizers.Adamax(1e-2), loss="mse")
    _fit(model, x, x)


def tape_autoencoder():
    keras = _keras()
    x, _ = _digits()
    mse = keras.losses.MeanSquaredError()
    _loop(_autoencoder(), keras.optimizers.Adamax(1e-2), lambda m, xb, yb: mse(yb, m(xb, training=True)), x, x)


def tape_autoencoder_summed_over_pixels():
    """The reconstruction error summed over the 64 pixels, averaged over the batch: 64 x Keras mse."""
    tf = _tf()
    keras = _keras()
    x, _ = _digits()

    def loss_of(m, xb, yb):
        return tf.reduce_mean(tf.reduce_sum(tf.square(m(xb, training=True) - yb), axis=-1))

    _loop(_autoencoder(), keras.optimizers.Adamax(1e-2), loss_of, x, x)


# --- a convolutional autoencoder with UpSampling2D, fed by tf.data --------------------------------

def _conv_autoencoder():
    keras = _keras()
    keras.utils.set_random_seed(313)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                             keras.layers.MaxPooling2D(2), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                             keras.layers.UpSampling2D(2), keras.layers.Conv2D(1, 3, padding="same")])


def fit_conv_autoencoder_dataset():
    """fit() on a cached tf.data pipeline of (image, image) pairs."""
    tf = _tf()
    keras = _keras()
    x, _ = _digits()
    img = x.reshape(-1, 8, 8, 1)
    ds = tf.data.Dataset.from_tensor_slices((img, img)).cache().batch(BATCH)
    model = _conv_autoencoder()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.MeanSquaredError())
    model.fit(ds, epochs=1, verbose=0)


def tape_conv_autoencoder_dataset_map():
    """A loop over flat rows reshaped into images by .map() after batching: the same batches."""
    tf = _tf()
    keras = _keras()
    x, _ = _digits()
    ds = (tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
          .map(lambda r: (tf.reshape(r, (-1, 8, 8, 1)), tf.reshape(r, (-1, 8, 8, 1)))))
    model = _conv_autoencoder()
    opt = keras.optimizers.Adam(1e-2)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = mse(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in ds:
        step(xb, yb)


# --- a denoising autoencoder: GaussianDropout on the inputs ---------------------------------------

def _denoising():
    keras = _keras()
    keras.utils.set_random_seed(317)
    return keras.Sequential([keras.Input((64,)), keras.layers.GaussianDropout(0.3),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(64)])


def fit_denoising():
    keras = _keras()
    x, _ = _digits()
    model = _denoising()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.MeanSquaredError())
    _fit(model, x, x)


def tape_denoising_no_training_flag():
    """model(x) in the tape: GaussianDropout corrupts nothing, the autoencoder learns the identity."""
    keras = _keras()
    x, _ = _digits()
    mse = keras.losses.MeanSquaredError()
    _loop(_denoising(), keras.optimizers.SGD(0.5), lambda m, xb, yb: mse(yb, m(xb)), x, x)


# --- Conv1D + GRU over the digit rows ---------------------------------------------------------------

def _digit_rows():
    x, y = _digits()
    return x.reshape(-1, 8, 8), y


def _conv_gru():
    keras = _keras()
    keras.utils.set_random_seed(331)
    return keras.Sequential([keras.Input((8, 8)), keras.layers.Conv1D(12, 3, activation="relu"),
                             keras.layers.GRU(12), keras.layers.Dense(10)])


def fit_conv_gru():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv_gru()
    model.compile(optimizer=keras.optimizers.Nadam(1e-2, clipvalue=0.05), loss=_sparse_ce())
    _fit(model, x, y)


def tape_conv_gru_eager():
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_conv_gru(), keras.optimizers.Nadam(1e-2, clipvalue=0.05), x, y, function=False)


def tape_conv_gru_clipnorm():
    """clipnorm=0.05 where fit()'s optimizer clips each value to 0.05."""
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_conv_gru(), keras.optimizers.Nadam(1e-2, clipnorm=0.05), x, y)


# --- a two-input functional model (breast cancer: mean features, the rest) ------------------------

def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    order = np.random.default_rng(5).permutation(len(d.target))[: STEPS * BATCH]
    x = d.data[order].astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    return x, d.target[order].astype("float32").reshape(-1, 1)


def _two_input_net():
    keras = _keras()
    keras.utils.set_random_seed(337)
    means = keras.Input((10,), name="means")
    rest = keras.Input((20,), name="rest")
    a = keras.layers.Dense(8, activation="relu")(means)
    b = keras.layers.Dense(8, activation="relu")(rest)
    h = keras.layers.Concatenate()([a, b])
    return keras.Model([means, rest], keras.layers.Dense(1)(h))


def _bc_split():
    x, y = _breast_cancer()
    return x[:, :10], x[:, 10:], y


def fit_two_input_rmsprop_centered():
    keras = _keras()
    xm, xr, y = _bc_split()
    model = _two_input_net()
    model.compile(optimizer=keras.optimizers.RMSprop(3e-3, centered=True),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    n = STEPS * BATCH
    model.fit({"means": xm[:n], "rest": xr[:n]}, y[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _tape_two_input(opt):
    tf = _tf()
    keras = _keras()
    xm, xr, y = _bc_split()
    model = _two_input_net()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(am, ar, yb):
        with tf.GradientTape() as tape:
            loss = bce(yb, model([am, ar], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        step(xm[sl], xr[sl], y[sl])


def tape_two_input_rmsprop_centered():
    _tape_two_input(_keras().optimizers.RMSprop(3e-3, centered=True))


def tape_two_input_rmsprop_plain():
    """RMSprop without centered=True: the variance estimate is not centred."""
    _tape_two_input(_keras().optimizers.RMSprop(3e-3))


def _tape_two_input_temperature(apply_all: bool):
    """A learned temperature outside the model divides the logits; both are differentiated."""
    tf = _tf()
    keras = _keras()
    xm, xr, y = _bc_split()
    model = _two_input_net()
    temperature = tf.Variable(1.0, name="temperature")
    opt = keras.optimizers.SGD(0.1)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    variables = model.trainable_variables + [temperature]

    @tf.function
    def step(am, ar, yb):
        with tf.GradientTape() as tape:
            loss = bce(yb, model([am, ar], training=True) / temperature)
        grads = tape.gradient(loss, variables)
        if apply_all:
            opt.apply_gradients(zip(grads, variables))
        else:
            opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        step(xm[sl], xr[sl], y[sl])


def tape_two_input_temperature():
    _tape_two_input_temperature(True)


def tape_two_input_temperature_not_applied():
    """zip(grads, model.trainable_variables): the temperature's gradient is dropped by zip."""
    _tape_two_input_temperature(False)


# --- residual blocks with Add and LayerNormalization, L2 regularized ----------------------------------

def _residual_net():
    keras = _keras()
    keras.utils.set_random_seed(347)
    reg = keras.regularizers.L2(1e-3)
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu")(inp)
    for _ in range(2):
        f = keras.layers.Dense(32, activation="relu", kernel_regularizer=reg)(h)
        f = keras.layers.Dense(32, kernel_regularizer=reg)(f)
        h = keras.layers.LayerNormalization()(keras.layers.Add()([h, f]))
    return keras.Model(inp, keras.layers.Dense(10)(h))


def fit_residual():
    keras = _keras()
    x, y = _digits()
    model = _residual_net()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), loss=_sparse_ce())
    _fit(model, x, y)


def _tape_residual(add_losses: bool):
    keras = _keras()
    x, y = _digits()
    ce = _sparse_ce()

    def loss_of(m, xb, yb):
        loss = ce(yb, m(xb, training=True))
        return loss + sum(m.losses) if add_losses else loss

    _loop(_residual_net(), keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), loss_of, x, y)


def tape_residual():
    _tape_residual(True)


def tape_residual_reg_losses_left_out():
    _tape_residual(False)


# --- self-attention over the digit rows, a cosine-decayed rate -----------------------------------------

def _row_attention():
    keras = _keras()
    keras.utils.set_random_seed(349)
    inp = keras.Input((8, 8))
    h = keras.layers.Dense(16)(inp)
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, a]))
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, keras.layers.Dense(10)(h))


def _cosine(decay_steps: int = STEPS):
    return _keras().optimizers.schedules.CosineDecay(0.1, decay_steps=decay_steps, alpha=0.1)


def fit_row_attention():
    keras = _keras()
    x, y = _digit_rows()
    model = _row_attention()
    model.compile(optimizer=keras.optimizers.SGD(_cosine(), momentum=0.9), loss=_sparse_ce())
    _fit(model, x, y)


def tape_row_attention_jit():
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_row_attention(), keras.optimizers.SGD(_cosine(), momentum=0.9), x, y, jit=True)


def tape_row_attention_decay_steps_in_epochs():
    """decay_steps=1 (the one epoch) where fit()'s schedule decays over the 8 steps."""
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_row_attention(), keras.optimizers.SGD(_cosine(1), momentum=0.9), x, y)


# --- GroupNormalization in a small Conv2D classifier ---------------------------------------------------

def _digit_images():
    x, y = _digits()
    return x.reshape(-1, 8, 8, 1), y


def _groupnorm_conv():
    keras = _keras()
    keras.utils.set_random_seed(353)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, padding="same"),
                             keras.layers.GroupNormalization(groups=4), keras.layers.Activation("relu"),
                             keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)])


def fit_groupnorm_weight_decay():
    keras = _keras()
    x, y = _digit_images()
    model = _groupnorm_conv()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01), loss=_sparse_ce())
    _fit(model, x, y)


def tape_groupnorm_no_weight_decay():
    """The loop's SGD without weight_decay=0.01."""
    keras = _keras()
    x, y = _digit_images()
    _ce_loop(_groupnorm_conv(), keras.optimizers.SGD(0.1, momentum=0.9), x, y)


def tape_groupnorm_weight_decay_conv_frozen():
    """The convolution frozen in the loop's model (trainable=False) only."""
    keras = _keras()
    x, y = _digit_images()
    model = _groupnorm_conv()
    model.layers[0].trainable = False
    _ce_loop(model, keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01), x, y)


# --- Reshape + Permute: the columns of the image read as a sequence -------------------------------------

def _columns_conv(permute: bool):
    keras = _keras()
    keras.utils.set_random_seed(359)
    layers = [keras.Input((64,)), keras.layers.Reshape((8, 8))]
    if permute:
        layers.append(keras.layers.Permute((2, 1)))
    layers += [keras.layers.Conv1D(12, 3, activation="relu"), keras.layers.GlobalMaxPooling1D(),
               keras.layers.Dense(10)]
    return keras.Sequential(layers)


def fit_columns_conv():
    keras = _keras()
    x, y = _digits()
    model = _columns_conv(True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_columns_conv_permute_left_out():
    """The loop's copy of the model has no Permute: it reads the rows, not the columns."""
    keras = _keras()
    x, y = _digits()
    _ce_loop(_columns_conv(False), keras.optimizers.Adam(1e-2), x, y)


# --- an Embedding + GlobalMaxPooling1D text classifier; one-hot labels from a tf.data map ---------------

def _text4():
    x, _ = data.tagged_sequences(n=STEPS * BATCH, length=10, vocab=20, seed=31)
    y = (x[:, 0] % 4).astype("int32")
    return x, y


def _bag_max():
    keras = _keras()
    keras.utils.set_random_seed(367)
    return keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(20, 8),
                             keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(4)])


def _staircase(staircase: bool):
    return _keras().optimizers.schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5, staircase=staircase)


def fit_text_max_pool():
    keras = _keras()
    x, y = _text4()
    model = _bag_max()
    model.compile(optimizer=keras.optimizers.SGD(_staircase(True)), loss=_sparse_ce())
    _fit(model, x, y)


def tape_text_max_pool_onehot_dataset():
    """Labels one-hot encoded by .map() and CategoricalCrossentropy: the same loss as sparse labels."""
    tf = _tf()
    keras = _keras()
    x, y = _text4()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).map(lambda a, b: (a, tf.one_hot(b, 4)))
    model = _bag_max()
    opt = keras.optimizers.SGD(_staircase(True))
    cce = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = cce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in ds:
        step(xb, yb)


def tape_text_max_pool_smooth_decay():
    """ExponentialDecay without staircase=True: the rate decays every step, not every 3."""
    keras = _keras()
    x, y = _text4()
    _ce_loop(_bag_max(), keras.optimizers.SGD(_staircase(False)), x, y)



# --- the same text classifier clipped to a global norm: its Embedding's gradient is an IndexedSlices ------

def fit_text_max_pool_global_clipnorm():
    keras = _keras()
    x, y = _text4()
    model = _bag_max()
    model.compile(optimizer=keras.optimizers.SGD(0.5, global_clipnorm=0.3), loss=_sparse_ce())
    _fit(model, x, y)


def _text_clip_loop(clip):
    x, y = _text4()
    _ce_loop(_bag_max(), _keras().optimizers.SGD(0.5), x, y, then=clip)


def tape_text_max_pool_clip_by_global_norm():
    """tf.clip_by_global_norm(grads, 0.3) before apply_gradients, the Embedding's gradient an
    IndexedSlices: the global norm over its values, repeated rows apart, as the optimizer's own."""
    _text_clip_loop(lambda grads: _tf().clip_by_global_norm(grads, 0.3)[0])


def tape_text_max_pool_clip_each_norm():
    """Each gradient clipped to 0.3 (tf.clip_by_norm) where fit() clips their global norm to 0.3:
    every gradient stays under 0.3, while their global norm passes it at one step, whose update
    only fit() scales down (the losses agree until then; the update is what parts)."""
    _text_clip_loop(lambda grads: [_tf().clip_by_norm(g, 0.3) for g in grads])


# --- KLDivergence towards smoothed targets (softmax output) -------------------------------------------

def _soft_targets():
    x, y = _digits()
    return x, (0.9 * np.eye(10)[y] + 0.01).astype("float32")


def _softmax_net():
    keras = _keras()
    keras.utils.set_random_seed(373)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def fit_kl_divergence():
    keras = _keras()
    x, t = _soft_targets()
    model = _softmax_net()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.KLDivergence())
    _fit(model, x, t)


def tape_kl_divergence_by_hand():
    """sum(t * log(t / p)) with Keras's clipping, averaged over the batch."""
    tf = _tf()
    keras = _keras()
    x, t = _soft_targets()

    def loss_of(m, xb, tb):
        p = tf.clip_by_value(m(xb, training=True), 1e-7, 1.0)
        tb = tf.clip_by_value(tb, 1e-7, 1.0)
        return tf.reduce_mean(tf.reduce_sum(tb * tf.math.log(tb / p), axis=-1))

    _loop(_softmax_net(), keras.optimizers.SGD(0.5), loss_of, x, t)


def tape_kl_divergence_arguments_swapped():
    """kl(y_pred, y_true), PyTorch's KLDivLoss(input, target) order: KL(p || t) instead of KL(t || p)."""
    keras = _keras()
    x, t = _soft_targets()
    kl = keras.losses.KLDivergence()
    _loop(_softmax_net(), keras.optimizers.SGD(0.5), lambda m, xb, tb: kl(m(xb, training=True), tb), x, t)


# --- Poisson regression on the diabetes progression score -----------------------------------------------

def _counts():
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    n = STEPS * BATCH
    x = (d.data[:n] * 10).astype("float32")
    return x, (d.target[:n] / 100.0).astype("float32")


def _poisson_net():
    keras = _keras()
    keras.utils.set_random_seed(379)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(1, activation="softplus")])


def fit_poisson():
    keras = _keras()
    x, y = _counts()
    model = _poisson_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.Poisson())
    _fit(model, x, y.reshape(-1, 1))


def tape_poisson_by_hand_flat_targets():
    """mean(p - y log p) written by hand on targets of shape (N,) against predictions (N, 1)."""
    tf = _tf()
    keras = _keras()
    x, y = _counts()

    def loss_of(m, xb, yb):
        p = m(xb, training=True)
        return tf.reduce_mean(p - yb * tf.math.log(p + 1e-7))

    _loop(_poisson_net(), keras.optimizers.Adam(1e-2), loss_of, x, y)


def _exposure():
    return np.random.default_rng(41).uniform(0.5, 1.5, size=STEPS * BATCH).astype("float32")


def fit_poisson_exposure_weights():
    """Each sample weighted by its exposure."""
    keras = _keras()
    x, y = _counts()
    model = _poisson_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.Poisson())
    _fit(model, x, y.reshape(-1, 1), sample_weight=_exposure())


def tape_poisson_exposure_weights_forgotten():
    keras = _keras()
    x, y = _counts()
    poisson = keras.losses.Poisson()
    _loop(_poisson_net(), keras.optimizers.Adam(1e-2), lambda m, xb, yb: poisson(yb, m(xb, training=True)), x,
          y.reshape(-1, 1))


# --- CosineSimilarity towards one-hot targets -----------------------------------------------------------

def _onehot_digits():
    x, y = _digits()
    return x, np.eye(10, dtype="float32")[y]


def _cos_net():
    keras = _keras()
    keras.utils.set_random_seed(383)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(10)])


def fit_cosine_similarity():
    keras = _keras()
    x, t = _onehot_digits()
    model = _cos_net()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.CosineSimilarity())
    _fit(model, x, t)


def tape_cosine_similarity_sum_reduction():
    keras = _keras()
    x, t = _onehot_digits()
    cos = keras.losses.CosineSimilarity(reduction="sum")
    _loop(_cos_net(), keras.optimizers.SGD(0.5), lambda m, xb, tb: cos(tb, m(xb, training=True)), x, t)


# --- Hinge on 0/1 labels (Keras maps them to -1/1) ------------------------------------------------------

def _margin_net():
    keras = _keras()
    keras.utils.set_random_seed(389)
    return keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])


def fit_hinge():
    keras = _keras()
    x, y = _breast_cancer()
    model = _margin_net()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.Hinge())
    _fit(model, x, y)


def _tape_hinge(signed: bool):
    tf = _tf()
    keras = _keras()
    x, y = _breast_cancer()

    def loss_of(m, xb, yb):
        t = 2.0 * yb - 1.0 if signed else yb
        return tf.reduce_mean(tf.maximum(1.0 - t * m(xb, training=True), 0.0))

    _loop(_margin_net(), keras.optimizers.SGD(0.05), loss_of, x, y)


def tape_hinge_by_hand():
    _tape_hinge(True)


def tape_hinge_by_hand_labels_not_signed():
    """max(0, 1 - y f(x)) on the 0/1 labels: the negatives contribute a constant 1, no gradient."""
    _tape_hinge(False)


# --- BinaryFocalCrossentropy on logits ------------------------------------------------------------------

def fit_focal():
    keras = _keras()
    x, y = _breast_cancer()
    model = _margin_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.BinaryFocalCrossentropy(gamma=2.0, from_logits=True))
    _fit(model, x, y)


def tape_focal_from_logits_forgotten():
    keras = _keras()
    x, y = _breast_cancer()
    focal = keras.losses.BinaryFocalCrossentropy(gamma=2.0)
    _loop(_margin_net(), keras.optimizers.Adam(1e-2), lambda m, xb, yb: focal(yb, m(xb, training=True)), x, y)


# --- CategoricalCrossentropy(label_smoothing) on one-hot labels with Adadelta ----------------------------

def _digits_net():
    keras = _keras()
    keras.utils.set_random_seed(397)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


def fit_cce_smoothing_adadelta():
    keras = _keras()
    x, t = _onehot_digits()
    model = _digits_net()
    model.compile(optimizer=keras.optimizers.Adadelta(1.0),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    _fit(model, x, t)


def tape_sparse_ce_smoothing_lost_adadelta():
    """The one-hot labels turned back into indices for SparseCategoricalCrossentropy: no smoothing."""
    tf = _tf()
    keras = _keras()
    x, t = _onehot_digits()
    ce = _sparse_ce()
    _loop(_digits_net(), keras.optimizers.Adadelta(1.0),
          lambda m, xb, tb: ce(tf.argmax(tb, axis=-1), m(xb, training=True)), x, t)


# --- losses that differ by a term the model does not change: the same gradients -----------------------

def tape_cross_entropy_for_kl_divergence():
    """CategoricalCrossentropy towards the same soft targets: KL(t || p) minus the targets' entropy."""
    keras = _keras()
    x, t = _soft_targets()
    cce = keras.losses.CategoricalCrossentropy()
    _loop(_softmax_net(), keras.optimizers.SGD(0.5), lambda m, xb, tb: cce(tb, m(xb, training=True)), x, t)


def tape_poisson_full_log_likelihood():
    """tf.nn.log_poisson_loss(compute_full_loss=True): Keras's Poisson plus Stirling's term for log(y!)."""
    tf = _tf()
    keras = _keras()
    x, y = _counts()

    def loss_of(m, xb, yb):
        p = m(xb, training=True)
        return tf.reduce_mean(tf.nn.log_poisson_loss(yb, tf.math.log(p + 1e-7), compute_full_loss=True))

    _loop(_poisson_net(), keras.optimizers.Adam(1e-2), loss_of, x, y.reshape(-1, 1))


# --- AdamW excluding biases and LayerNormalization from weight decay in one run (the BERT recipe) ----------

def _ln_net():
    keras = _keras()
    keras.utils.set_random_seed(401)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.LayerNormalization(),
                             keras.layers.Activation("gelu"), keras.layers.Dense(10)])


def _adamw(exclude: bool):
    opt = _keras().optimizers.AdamW(1e-2, weight_decay=0.1)
    if exclude:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def fit_adamw_norms_excluded():
    x, y = _digits()
    model = _ln_net()
    model.compile(optimizer=_adamw(True), loss=_sparse_ce())
    _fit(model, x, y)


def tape_adamw_norms_decayed():
    """The loop's AdamW decays every variable, LayerNormalization's scale (1.0 at the start) included."""
    x, y = _digits()
    _ce_loop(_ln_net(), _adamw(False), x, y)
