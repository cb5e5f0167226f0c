# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A fourth set of pairs (see scripts.py for the conventions): LSTMs (masked, bidirectional, with
recurrent dropout), separable and depthwise convolutions, spatial dropout, regression losses and
their reductions, the less common optimizers and their settings, warm-up schedules, clipping by
hand, class weights as sample weights, custom train steps with metrics, tf.data input, activity
regularizers and add_loss, EMA of the weights.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts_models import BATCH, STEPS, _ce_loop, _digits, _fit, _keras, _loop, _sparse_ce, _tf

# --- LSTM over the digit rows; masked and bidirectional LSTMs over padded text -----------------

def _digit_rows():
    x, y = _digits()
    return x.reshape(-1, 8, 8), y


def _lstm_rows(recurrent_dropout: float = 0.0, unroll: bool = False):
    keras = _keras()
    keras.utils.set_random_seed(211)
    return keras.Sequential([keras.Input((8, 8)),
                             keras.layers.LSTM(12, recurrent_dropout=recurrent_dropout, unroll=unroll),
                             keras.layers.Dense(10)])


def fit_lstm_rows():
    keras = _keras()
    x, y = _digit_rows()
    model = _lstm_rows()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_lstm_rows_unrolled():
    """LSTM(unroll=True) in the loop: the same recurrence written out step by step."""
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_lstm_rows(unroll=True), keras.optimizers.Adam(1e-2), x, y)


def fit_lstm_rows_recurrent_dropout():
    keras = _keras()
    x, y = _digit_rows()
    model = _lstm_rows(recurrent_dropout=0.3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_lstm_rows_recurrent_dropout_no_training_flag():
    """model(x) in the tape: the recurrent dropout never drops anything."""
    keras = _keras()
    x, y = _digit_rows()
    model = _lstm_rows(recurrent_dropout=0.3)
    ce = _sparse_ce()
    _loop(model, keras.optimizers.Adam(1e-2), lambda m, xb, yb: ce(yb, m(xb)), x, y)


def _padded_text():
    x, _ = data.tagged_sequences(n=STEPS * BATCH, length=12, vocab=20, seed=13)
    y = (x == 6).any(axis=1).astype("int32")
    return x, y


def _bilstm(mask_zero: bool = True):
    keras = _keras()
    keras.utils.set_random_seed(223)
    return keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(20, 8, mask_zero=mask_zero),
                             keras.layers.Bidirectional(keras.layers.LSTM(8)), keras.layers.Dense(2)])


def fit_bilstm_masked():
    keras = _keras()
    x, y = _padded_text()
    model = _bilstm()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_bilstm_masked():
    keras = _keras()
    x, y = _padded_text()
    _ce_loop(_bilstm(), keras.optimizers.Adam(1e-2), x, y)


def tape_bilstm_mask_forgotten():
    """The loop's copy built without mask_zero: the backward LSTM starts on the padding."""
    keras = _keras()
    x, y = _padded_text()
    _ce_loop(_bilstm(mask_zero=False), keras.optimizers.Adam(1e-2), x, y)


def _masked_lstm_floats(masking: bool):
    keras = _keras()
    keras.utils.set_random_seed(227)
    layers = [keras.Input((12, 1))]
    if masking:
        layers.append(keras.layers.Masking(0.0))
    layers += [keras.layers.LSTM(8), keras.layers.Dense(2)]
    return keras.Sequential(layers)


def _padded_floats():
    x, y = _padded_text()
    return (x[..., None] / 20.0).astype("float32"), y


def fit_lstm_masking_layer():
    keras = _keras()
    x, y = _padded_floats()
    model = _masked_lstm_floats(masking=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_lstm_without_masking_layer():
    """The loop's model has no Masking layer: the LSTM reads the zero padding as inputs."""
    keras = _keras()
    x, y = _padded_floats()
    _ce_loop(_masked_lstm_floats(masking=False), keras.optimizers.Adam(1e-2), x, y)


# --- separable and depthwise convolutions; spatial dropout in a Conv1D model ------------------

def _digit_images():
    x, y = _digits()
    return x.reshape(-1, 8, 8, 1), y


def _separable(padding: str = "same"):
    keras = _keras()
    keras.utils.set_random_seed(229)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.SeparableConv2D(8, 3, padding=padding,
                                                                                 activation="relu"),
                             keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])


def fit_separable():
    keras = _keras()
    x, y = _digit_images()
    model = _separable()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_separable_eager():
    keras = _keras()
    x, y = _digit_images()
    _ce_loop(_separable(), keras.optimizers.Adam(1e-2), x, y, function=False)


def tape_separable_valid_padding():
    """padding='valid' where fit()'s model pads: the same variables, another output size."""
    keras = _keras()
    x, y = _digit_images()
    _ce_loop(_separable(padding="valid"), keras.optimizers.Adam(1e-2), x, y)


def _conv1d_spatial_dropout():
    keras = _keras()
    keras.utils.set_random_seed(233)
    return keras.Sequential([keras.Input((8, 8)), keras.layers.Conv1D(16, 3, activation="relu"),
                             keras.layers.SpatialDropout1D(0.3), keras.layers.Conv1D(16, 3, activation="relu"),
                             keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(10)])


def fit_conv1d_spatial_dropout():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d_spatial_dropout()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=_sparse_ce())
    _fit(model, x, y)


def tape_conv1d_spatial_dropout_no_training_flag():
    keras = _keras()
    x, y = _digit_rows()
    model = _conv1d_spatial_dropout()
    ce = _sparse_ce()
    _loop(model, keras.optimizers.SGD(0.1, momentum=0.9), lambda m, xb, yb: ce(yb, m(xb)), x, y)


# --- LayerNormalization in one model, BatchNormalization in the other -------------------------

def _norm_mlp(norm: str):
    keras = _keras()
    keras.utils.set_random_seed(239)
    layer = keras.layers.LayerNormalization() if norm == "ln" else keras.layers.BatchNormalization()
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), layer, keras.layers.Activation("relu"),
                             keras.layers.Dense(10)])


def fit_layernorm_mlp():
    keras = _keras()
    x, y = _digits()
    model = _norm_mlp("ln")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_batchnorm_mlp():
    keras = _keras()
    x, y = _digits()
    _ce_loop(_norm_mlp("bn"), keras.optimizers.Adam(1e-2), x, y)


# --- regression losses: LogCosh by hand, MAE summed, Huber against LogCosh --------------------

def _diabetes():
    x, y = data.regression(STEPS * BATCH)
    return x, y.reshape(-1, 1)


def _reg_mlp():
    keras = _keras()
    keras.utils.set_random_seed(241)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])


def fit_logcosh():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.LogCosh())
    _fit(model, x, y)


def tape_logcosh_by_hand():
    """log(cosh(e)) written the stable way: e + softplus(-2e) - log 2, averaged."""
    tf = _tf()
    keras = _keras()
    x, y = _diabetes()

    def loss_of(m, xb, yb):
        e = m(xb, training=True) - yb
        return tf.reduce_mean(e + tf.nn.softplus(-2.0 * e) - tf.math.log(2.0))

    _loop(_reg_mlp(), keras.optimizers.SGD(0.05), loss_of, x, y)


def tape_huber_instead_of_logcosh():
    keras = _keras()
    x, y = _diabetes()
    huber = keras.losses.Huber()
    _loop(_reg_mlp(), keras.optimizers.SGD(0.05), lambda m, xb, yb: huber(yb, m(xb, training=True)), x, y)


def fit_mae():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.MeanAbsoluteError())
    _fit(model, x, y)


def tape_mae_sum_reduction():
    """MeanAbsoluteError(reduction='sum'): the loss and every gradient x batch size."""
    keras = _keras()
    x, y = _diabetes()
    mae = keras.losses.MeanAbsoluteError(reduction="sum")
    _loop(_reg_mlp(), keras.optimizers.SGD(0.01), lambda m, xb, yb: mae(yb, m(xb, training=True)), x, y)


def fit_mae_sgd():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.MeanAbsoluteError())
    _fit(model, x, y)


# --- less common optimizers and their settings -----------------------------------------------

def _fit_digits(opt, seed: int = 251, **fit_kw):
    x, y = _digits()
    from .scripts_models import _digits_mlp

    model = _digits_mlp(seed=seed)
    model.compile(optimizer=opt, loss=_sparse_ce())
    _fit(model, x, y, **fit_kw)


def _tape_digits(opt, seed: int = 251, **kw):
    x, y = _digits()
    from .scripts_models import _digits_mlp

    _ce_loop(_digits_mlp(seed=seed), opt, x, y, **kw)


def fit_adagrad():
    _fit_digits(_keras().optimizers.Adagrad(0.1))


def tape_adagrad_accumulator_01():
    """initial_accumulator_value=0.01 where Keras's default is 0.1 (PyTorch's is 0)."""
    _tape_digits(_keras().optimizers.Adagrad(0.1, initial_accumulator_value=0.01))


def fit_adamax():
    _fit_digits(_keras().optimizers.Adamax(1e-2))


def tape_adamax():
    _tape_digits(_keras().optimizers.Adamax(1e-2))


def tape_nadam_for_adam():
    _tape_digits(_keras().optimizers.Nadam(1e-2))


def fit_adam_lr_1e2():
    _fit_digits(_keras().optimizers.Adam(1e-2))


def tape_adam_amsgrad():
    _tape_digits(_keras().optimizers.Adam(1e-2, amsgrad=True))


def fit_lion():
    _fit_digits(_keras().optimizers.Lion(1e-3))


def tape_lion_eager():
    _tape_digits(_keras().optimizers.Lion(1e-3), function=False)


def tape_lion_beta_1_09():
    _tape_digits(_keras().optimizers.Lion(1e-3, beta_1=0.95))


def fit_ftrl():
    _fit_digits(_keras().optimizers.Ftrl(0.1, l1_regularization_strength=0.001))


def tape_ftrl_no_l1():
    _tape_digits(_keras().optimizers.Ftrl(0.1))


def fit_adamw_decay_004():
    _fit_digits(_keras().optimizers.AdamW(1e-2, weight_decay=0.004))


def tape_adamw_decay_004():
    _tape_digits(_keras().optimizers.AdamW(1e-2, weight_decay=0.004))


def tape_adamw_decay_01():
    _tape_digits(_keras().optimizers.AdamW(1e-2, weight_decay=0.1))


# --- learning-rate schedules: warm-up and cosine decay -----------------------------------------

def _cosine_warmup():
    keras = _keras()
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=STEPS, warmup_target=0.2, warmup_steps=3)


def fit_cosine_warmup():
    _fit_digits(_keras().optimizers.SGD(_cosine_warmup()))


def tape_cosine_warmup():
    _tape_digits(_keras().optimizers.SGD(_cosine_warmup()))


def tape_constant_peak_rate():
    """The warm-up forgotten: the peak rate from the first step."""
    _tape_digits(_keras().optimizers.SGD(0.2))


# --- clipping: the optimizer's clipnorm/global_clipnorm against the same by hand ---------------

def fit_sgd_clipnorm():
    _fit_digits(_keras().optimizers.SGD(0.5, clipnorm=0.3))


def tape_clip_by_norm_by_hand():
    """Each gradient clipped to norm 0.3 before apply_gradients: what clipnorm=0.3 does."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    from .scripts_models import _digits_mlp

    model = _digits_mlp(seed=251)
    opt = keras.optimizers.SGD(0.5)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.clip_by_norm(g, 0.3) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def fit_sgd_global_clipnorm():
    _fit_digits(_keras().optimizers.SGD(0.5, global_clipnorm=0.3))


def tape_clip_by_global_norm_by_hand():
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    from .scripts_models import _digits_mlp

    model = _digits_mlp(seed=251)
    opt = keras.optimizers.SGD(0.5)
    ce = _sparse_ce()

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 0.3)
        opt.apply_gradients(zip(grads, model.trainable_variables))


# --- class weights given to fit() as per-sample weights ---------------------------------------

def _imbalanced():
    x, y = data.classification(STEPS * BATCH, classes=3)
    return x, y


def _cls_net():
    keras = _keras()
    keras.utils.set_random_seed(257)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


CLASS_WEIGHT = {0: 0.5, 1: 2.0, 2: 1.0}


def fit_class_weight_dict():
    keras = _keras()
    x, y = _imbalanced()
    model = _cls_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y, class_weight=CLASS_WEIGHT)


def fit_class_weight_as_sample_weight():
    """The class weights looked up per sample and given as sample_weight: what class_weight does."""
    keras = _keras()
    x, y = _imbalanced()
    model = _cls_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y, sample_weight=np.array([CLASS_WEIGHT[int(c)] for c in y], "float32"))


def tape_class_weight_by_label_position():
    """The weights looked up by the label's position in the batch, not by the class."""
    tf = _tf()
    keras = _keras()
    x, y = _imbalanced()
    ce = _sparse_ce()
    table = tf.constant([CLASS_WEIGHT[c] for c in range(3)])

    def loss_of(m, xb, yb):
        w = tf.gather(table, tf.range(tf.shape(yb)[0]) % 3)
        return ce(yb, m(xb, training=True), sample_weight=w)

    _loop(_cls_net(), keras.optimizers.SGD(0.1), loss_of, x, y)


# --- custom train_step that updates metrics; one that calls the model without training= -------

def _dropout_net(base):
    keras = _keras()
    keras.utils.set_random_seed(263)
    return base([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(0.25),
                 keras.layers.Dense(10)])


def fit_dropout_net():
    keras = _keras()
    x, y = _digits()
    model = _dropout_net(keras.Sequential)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(), metrics=["accuracy"])
    _fit(model, x, y)


def _train_step_model(training):
    tf = _tf()
    keras = _keras()

    class WithMetrics(keras.Sequential):
        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                y_pred = self(xb, training=training)
                loss = self.compute_loss(x=xb, y=yb, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(yb, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return _dropout_net(WithMetrics)


def _fit_train_step(training):
    keras = _keras()
    x, y = _digits()
    model = _train_step_model(training)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(), metrics=["accuracy"])
    _fit(model, x, y)


def fit_train_step_with_metrics():
    _fit_train_step(True)


def fit_train_step_no_training_flag():
    """self(x) in the custom train_step: Dropout never drops (Keras 3 models default to inference)."""
    _fit_train_step(None)


def fit_dropout_net_steps_per_execution():
    keras = _keras()
    x, y = _digits()
    model = _dropout_net(keras.Sequential)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(), metrics=["accuracy"],
                  steps_per_execution=3)
    _fit(model, x, y)


# --- tf.data input against numpy arrays ---------------------------------------------------------

def _bn_net():
    keras = _keras()
    keras.utils.set_random_seed(269)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dense(10)])


def fit_bn_net_numpy():
    keras = _keras()
    x, y = _digits()
    model = _bn_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=_sparse_ce())
    _fit(model, x, y)


def fit_bn_net_dataset():
    """fit() on a tf.data pipeline batched the same way (no shuffle), with prefetch and a cache."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model = _bn_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=_sparse_ce())
    model.fit(ds, epochs=1, verbose=0)


def tape_bn_net_dataset_map():
    """A tape loop over a pipeline that scales inside .map(): the same numbers as the arrays."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    raw = (x * 16.0).astype("float32")
    ds = (tf.data.Dataset.from_tensor_slices((raw, y)).batch(BATCH)
          .map(lambda a, b: (a / 16.0, b)).prefetch(2))
    model = _bn_net()
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in ds:
        step(xb, yb)


def tape_bn_net_dataset_batch_then_shuffle():
    """.batch() then .shuffle(): whole batches in another order (each batch's examples the same)."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).shuffle(STEPS, seed=1)
    model = _bn_net()
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in ds:
        step(xb, yb)


# --- activity regularizers and add_loss --------------------------------------------------------

def _activity_reg_net():
    keras = _keras()
    keras.utils.set_random_seed(271)
    return keras.Sequential([keras.Input((64,)),
                             keras.layers.Dense(32, activation="relu", activity_regularizer=keras.regularizers.L1(1e-3)),
                             keras.layers.Dense(10)])


def fit_activity_regularizer():
    keras = _keras()
    x, y = _digits()
    model = _activity_reg_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def _tape_activity(add_losses: bool):
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    ce = _sparse_ce()

    def loss_of(m, xb, yb):
        loss = ce(yb, m(xb, training=True))
        if add_losses:
            loss = loss + tf.add_n(m.losses)
        return loss

    _loop(_activity_reg_net(), keras.optimizers.SGD(0.1), loss_of, x, y)


def tape_activity_regularizer_added():
    _tape_activity(True)


def tape_activity_regularizer_left_out():
    """The activity penalty lives in model.losses after each call; the loop never adds it."""
    _tape_activity(False)


def _add_loss_model():
    keras = _keras()
    ops = keras.ops

    class Sparsity(keras.layers.Layer):
        def call(self, h):
            self.add_loss(1e-2 * ops.mean(ops.abs(h)))
            return h

    keras.utils.set_random_seed(277)
    inp = keras.Input((64,))
    h = Sparsity()(keras.layers.Dense(32, activation="relu")(inp))
    return keras.Model(inp, keras.layers.Dense(10)(h))


def fit_add_loss():
    keras = _keras()
    x, y = _digits()
    model = _add_loss_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def _tape_add_loss(add_losses: bool):
    keras = _keras()
    x, y = _digits()
    ce = _sparse_ce()

    def loss_of(m, xb, yb):
        loss = ce(yb, m(xb, training=True))
        return loss + sum(m.losses) if add_losses else loss

    _loop(_add_loss_model(), keras.optimizers.Adam(1e-2), loss_of, x, y)


def tape_add_loss_added():
    _tape_add_loss(True)


def tape_add_loss_left_out():
    _tape_add_loss(False)


# --- an exponential moving average of the weights ------------------------------------------------

def fit_adam_ema_overwrite():
    """use_ema with ema_overwrite_frequency=3: the weights are replaced by their average every 3 steps."""
    _fit_digits(_keras().optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3))


def fit_adam_ema():
    """use_ema without overwrite frequency: training steps as without; fit() swaps the average in at the end."""
    _fit_digits(_keras().optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))


# --- a bigger batch in one run; Huber summed ----------------------------------------------------

def fit_huber_default():
    keras = _keras()
    x, y = _diabetes()
    model = _reg_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.Huber(delta=0.5))
    _fit(model, x, y)


def tape_huber_sum_over_batch_by_hand():
    """Huber's per-sample values summed: reduce_sum instead of the mean."""
    tf = _tf()
    keras = _keras()
    x, y = _diabetes()
    huber = keras.losses.Huber(delta=0.5, reduction=None)
    _loop(_reg_mlp(), keras.optimizers.SGD(0.05), lambda m, xb, yb: tf.reduce_sum(huber(yb, m(xb, training=True))),
          x, y)


# --- causal convolutions; a Dropout layer in one model only -----------------------------------------

def _causal_conv1d(padding: str):
    keras = _keras()
    keras.utils.set_random_seed(283)
    return keras.Sequential([keras.Input((8, 8)), keras.layers.Conv1D(16, 3, padding=padding, activation="relu"),
                             keras.layers.Conv1D(16, 3, padding=padding, dilation_rate=2, activation="relu"),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(10)])


def fit_causal_conv1d():
    keras = _keras()
    x, y = _digit_rows()
    model = _causal_conv1d("causal")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce())
    _fit(model, x, y)


def tape_causal_conv1d_jit():
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_causal_conv1d("causal"), keras.optimizers.Adam(1e-2), x, y, jit=True)


def tape_same_padding_conv1d():
    keras = _keras()
    x, y = _digit_rows()
    _ce_loop(_causal_conv1d("same"), keras.optimizers.Adam(1e-2), x, y)


def _mlp_dropout(dropout: bool):
    keras = _keras()
    keras.utils.set_random_seed(293)
    layers = [keras.Input((64,)), keras.layers.Dense(32, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(0.3))
    return keras.Sequential(layers + [keras.layers.Dense(10)])


def fit_mlp_dropout():
    keras = _keras()
    x, y = _digits()
    model = _mlp_dropout(True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def tape_mlp_dropout_left_out():
    """The loop's copy of the model has no Dropout layer."""
    keras = _keras()
    x, y = _digits()
    _ce_loop(_mlp_dropout(False), keras.optimizers.SGD(0.1), x, y)


# --- mixed precision in both runs: fit() against a loop that scales the loss itself -------------

def _mixed(script):
    keras = _keras()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        script()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _mp_mlp():
    keras = _keras()
    keras.utils.set_random_seed(307)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, dtype="float32")])


def fit_mixed_precision_mlp():
    def script():
        keras = _keras()
        x, y = _digits()
        model = _mp_mlp()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
        _fit(model, x, y)

    _mixed(script)


def tape_mixed_precision_mlp_scaled():
    """A LossScaleOptimizer in the loop: scale_loss() inside the tape, apply() unscales."""
    def script():
        tf = _tf()
        keras = _keras()
        x, y = _digits()
        model = _mp_mlp()
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
        ce = _sparse_ce()

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        for xb, yb in data.batches(x, y, BATCH, STEPS):
            step(xb, yb)

    _mixed(script)
