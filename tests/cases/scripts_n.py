# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A tenth set (see scripts.py for the conventions), from scripts written for kinds of training the
other sets cover little: layer arguments that change nothing at their settings (a max-norm
constraint that never binds, an activation given as a layer of its own, L2 penalties added by an
overridden ``compute_loss`` instead of ``kernel_regularizer``), label smoothing beside a loss class
that has none, a head fine-tuned by a new optimizer after fit(), and the penalties' gradients taken
by a gradient call of their own and added to the data loss's; and single runs that train nothing or
less than they seem to (the forward pass before the tape, a learning rate of 0, a schedule that
reaches 0 early, Keras 3's ``reduction=None`` on a partial batch), eager loops whose
cross-entropy reads logits as probabilities or the other way round, and keras.io's GAN as fit() with
a custom train_step and as a loop; a constant factor moved between the loss and the learning rate;
two equal-shaped hidden layers a subclassed model creates in the other order than it calls them;
labels sliced one row off their inputs.
"""

from __future__ import annotations

from . import data
from .scripts import BATCH, STEPS, _digits_slice, _keras
from .scripts_models import _fit, _loop, _tf

L2 = 1e-3


def _net(seed: int = 31, activation_layer: bool = False, l2: float | None = None, max_norm: float | None = None,
         model_class=None):
    """The digits MLP 64-32-10 (logits), its arguments as given."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    kw = {}
    if l2 is not None:
        kw["kernel_regularizer"] = keras.regularizers.L2(l2)
    if max_norm is not None:
        kw["kernel_constraint"] = keras.constraints.MaxNorm(max_norm)
    inp = keras.Input((64,))
    if activation_layer:
        h = keras.layers.Activation("relu")(keras.layers.Dense(32, **kw)(inp))
    else:
        h = keras.layers.Dense(32, activation="relu", **kw)(inp)
    out = keras.layers.Dense(10, **kw)(h)
    return (model_class or keras.Model)(inp, out)


def _fit_net(model, one_hot: bool = False, label_smoothing: float | None = None):
    keras = _keras()
    x, y = _digits_slice()
    loss = (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing or 0.0)
            if one_hot else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    _fit(model, x, keras.utils.to_categorical(y, 10) if one_hot else y)


def fit_digits_plain_net():
    _fit_net(_net())


def fit_digits_relu_as_layer():
    """``Dense(32)`` then ``Activation("relu")``: the same function as ``Dense(32, activation="relu")``."""
    _fit_net(_net(activation_layer=True))


def fit_digits_max_norm_never_binds():
    """``MaxNorm(100)`` on every kernel: no column's norm comes near 100 in these steps."""
    _fit_net(_net(max_norm=100.0))


def fit_digits_l2_regularizers():
    _fit_net(_net(l2=L2))


def fit_digits_l2_strong():
    """The regularizers of the tape loops below (``L2(1e-2)``), in fit()."""
    _fit_net(_net(l2=1e-2))


def fit_digits_l2_in_compute_loss():
    """The same L2 penalty added by an overridden ``compute_loss`` instead of the layers' regularizers."""
    tf = _tf()
    keras = _keras()

    class Penalised(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            kernels = [layer.kernel for layer in self.layers if hasattr(layer, "kernel")]
            return loss + L2 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])

    _fit_net(_net(model_class=Penalised))


def fit_digits_one_hot_smoothed():
    """Categorical cross-entropy on one-hot labels with ``label_smoothing=0.1``."""
    _fit_net(_net(), one_hot=True, label_smoothing=0.1)


def fit_digits_one_hot():
    _fit_net(_net(), one_hot=True)


def fit_then_head_fine_tuned():
    """fit() trains a backbone (Dense + BatchNormalization) and a head; then the backbone is
    frozen and a new optimizer fine-tunes the head in a tape loop: the backbone's variables get
    no gradient from then on, by design."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits()
    keras.utils.set_random_seed(33)
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
                                 keras.layers.Activation("relu")])
    head = keras.layers.Dense(10)
    model = keras.Sequential([backbone, head])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=ce)
    _fit(model, x, y, steps=6)
    backbone.trainable = False
    opt = keras.optimizers.Adam(1e-2)
    for xb, yb in data.batches(x[6 * BATCH:], y[6 * BATCH:], BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def _penalty_gradients_added(function: bool):
    """The data loss and ``add_n(model.losses)`` differentiated one by one (a persistent tape), their
    gradients added before one apply: the same training as one gradient of their sum."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    model = _net(l2=1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)

    def step(xb, yb):
        with tf.GradientTape(persistent=True) as tape:
            data_loss = ce(yb, model(xb, training=True))
            penalty = tf.add_n(model.losses)
        v = model.trainable_variables
        g1, g2 = tape.gradient(data_loss, v), tape.gradient(penalty, v)
        opt.apply_gradients(zip([a if b is None else a + b for a, b in zip(g1, g2)], v))

    if function:
        step = tf.function(step)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_penalty_gradients_added():
    _penalty_gradients_added(True)


def tape_penalty_gradients_added_eagerly():
    _penalty_gradients_added(False)


def _tf_keras_base_and_head():
    """A tf-keras Sequential base (Dense 64-32) inside a Sequential with a Dense head."""
    import tf_keras

    keras = tf_keras
    keras.utils.set_random_seed(35)
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu")], name="base")
    return keras, base, keras.Sequential([base, keras.layers.Dense(10)])


def fit_tf_keras_frozen_after_compile():
    """``base.trainable = False`` set after compile(): tf-keras's fit() still trains the base."""
    keras, base, model = _tf_keras_base_and_head()
    x, y = _digits_slice()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.trainable = False
    _fit(model, x, y)


def _tf_keras_head_loop(freeze: bool):
    """The head trained in a tf.function tape loop: over ``model.trainable_variables`` with the
    base frozen (``freeze``), else over the head's own variables."""
    tf = _tf()
    keras, base, model = _tf_keras_base_and_head()
    x, y = _digits_slice()
    model(x[:1])
    if freeze:
        base.trainable = False
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    head = model.layers[-1].trainable_variables

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        variables = model.trainable_variables if freeze else head
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_tf_keras_frozen_base():
    _tf_keras_head_loop(True)


def tape_tf_keras_head_variables_only():
    _tf_keras_head_loop(False)


def tape_numpy_round_trip_zeros():
    """The first layer's output goes through ``.numpy()`` inside the tape (to look at it), so the tape
    returns None for that layer, and the script puts zeros in their place: it never trains."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    first, head = model.layers[1], model.layers[2]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            h = first(xb).numpy()
            loss = ce(yb, head(h))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables)]
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_digits_logits_as_probabilities():
    """A model that outputs logits (no activation on its last layer) compiled with the sparse
    cross-entropy at its default ``from_logits=False``."""
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    _fit(model, x, y)


def fit_train_step_broadcast_loss():
    """A custom train_step (traced by fit() for any batch size: shapes ``(None, 1)``) computes a
    binary cross-entropy by hand between ``(N, 1)`` labels and the squeezed ``(N,)`` predictions:
    they broadcast to ``(N, N)``."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    y = (y % 2).astype("float32").reshape(-1, 1)

    class HandLoss(keras.Model):
        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                p = tf.clip_by_value(tf.squeeze(self(xb, training=True), -1), 1e-6, 1 - 1e-6)
                loss = -tf.reduce_mean(yb * tf.math.log(p) + (1 - yb) * tf.math.log(1 - p))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(37)
    inp = keras.Input((64,))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(16, activation="relu")(inp))
    model = HandLoss(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    _fit(model, x, y)


def _bn_base_and_head():
    keras = _keras()
    keras.utils.set_random_seed(39)
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu")], name="base")
    return keras, base, keras.Sequential([base, keras.layers.Dense(10)])


def fit_bn_base_frozen():
    """The base (with BatchNormalization) frozen, the head fine-tuned by fit(): in Keras 3 the
    frozen BatchNormalization runs in inference mode."""
    keras, base, model = _bn_base_and_head()
    x, y = _digits_slice()
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_bn_head_variables_only():
    """The head's variables alone differentiated and applied: the base is not trained either, but
    its BatchNormalization runs in training mode (batch statistics, moving statistics updated)."""
    tf = _tf()
    keras, _base, model = _bn_base_and_head()
    x, y = _digits_slice()
    head = model.layers[-1].trainable_variables
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, head)
        opt.apply_gradients(zip(grads, head))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def _warmup_net():
    """The digits MLP with a layer that scales its input up over its first 20 training calls,
    counted in a non-trainable variable of its own."""
    tf = _tf()
    keras = _keras()

    class WarmupScale(keras.layers.Layer):
        def build(self, input_shape):
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

        def call(self, x, training=None):
            if training:
                self.count.assign_add(1.0)
            return x * tf.minimum(1.0, (self.count + 1.0) / 20.0)

    keras.utils.set_random_seed(41)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), WarmupScale(),
                             keras.layers.Dense(10)])


def fit_warmup_counter():
    keras = _keras()
    x, y = _digits_slice()
    model = _warmup_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _fit(model, x, y)


def tape_warmup_counter_metric_in_training_mode():
    """The loop's metric calls the updated model again with ``training=True``, outside the tape:
    the counter advances twice per step, so the scale the next step's forward pass uses differs."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    model = _warmup_net()
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        acc.update_state(yb, model(xb, training=True))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def _transfer_model():
    """keras.io's transfer-learning recipe on the digits: a base (Dense, BatchNormalization, Dense)
    frozen and called with ``training=False``, a new head."""
    keras = _keras()
    keras.utils.set_random_seed(43)
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(16, activation="relu")],
                            name="base")
    base.trainable = False
    inputs = keras.Input((64,))
    outputs = keras.layers.Dense(10)(base(inputs, training=False))
    return keras, base, keras.Model(inputs, outputs)


def fit_transfer_then_fine_tune():
    """The head trained by fit(), then the base unfrozen and the whole model recompiled with a low
    learning rate and fitted again."""
    keras, base, model = _transfer_model()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=ce)
    _fit(model, x, y)
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=ce)
    _fit(model, x, y)


def fit_transfer_head_only():
    """The first phase alone: the base frozen (its BatchNormalization runs in inference mode
    whatever `training` says), the head trained by fit()."""
    keras, _base, model = _transfer_model()
    x, y = _digits_slice()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_base_pretrained_then_head_only():
    """The base trained on its own first (its BatchNormalization in training mode, no functional
    model around it yet), then frozen under the functional model's `training=False`."""
    keras, base, model = _transfer_model()
    x, y = _digits_slice()
    base.trainable = True
    base.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    _fit(base, x, base.predict(x, verbose=0) * 0.5)
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_functional_dropout():
    """A functional model with a Dropout called without `training` (Keras fills in its call's default,
    False, at the node), trained by fit()."""
    keras = _keras()
    keras.utils.set_random_seed(31)
    inp = keras.Input((64,))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(32, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    _fit_net(model)


def tape_transfer_then_fine_tune():
    """The same two phases as tape loops: a step function per phase, each with its optimizer."""
    keras, base, model = _transfer_model()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for lr in (1e-3, 1e-5):
        base.trainable = lr < 1e-3
        _loop(model, keras.optimizers.Adam(lr), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_forward_before_the_tape():
    """The model is called before the tape opens: every gradient is None, and the script puts zeros
    in their place (so Keras raises nothing): nothing trains."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        logits = model(xb, training=True)
        with tf.GradientTape() as tape:
            loss = ce(yb, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables)]
        opt.apply_gradients(zip(grads, model.trainable_variables))


def _digits_scheduled(schedule) -> None:
    """The digits MLP in a tf.function tape loop under Adam at ``schedule``."""
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_net(), keras.optimizers.Adam(schedule), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y)


def tape_learning_rate_zero():
    """Adam with ``learning_rate=0.0`` (a rate meant to come from a config that was never read)."""
    _digits_scheduled(0.0)


def tape_schedule_decays_to_zero_early():
    """An exponential decay with ``decay_rate=0.0`` (meant 0.9): the rate is 0 from the second step on."""
    keras = _keras()
    _digits_scheduled(keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.0))


def tape_schedule_ends_at_zero():
    """A polynomial decay to 0 over the run: 0 at its last step only, every step before it trains."""
    keras = _keras()
    _digits_scheduled(keras.optimizers.schedules.PolynomialDecay(1e-2, decay_steps=STEPS - 1, end_learning_rate=0.0))


def tape_digits_partial_batch_reduction_none():
    """Keras 3's ``reduction=None`` per-example losses summed and divided by 32 on a partial batch."""
    from . import scripts_l as l10

    tf = _tf()
    l10._digits_partial_batch_loop(lambda losses: tf.reduce_sum(losses) / 32.0, reduction=None)


def _eager_softmax_loop(squash: bool, from_logits: bool) -> None:
    """A subclassed digits classifier whose ``call`` ends in ``tf.nn.softmax`` (``squash``) or in
    the logits, trained eagerly with the sparse cross-entropy at ``from_logits``."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(31)

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, x, training=False):
            logits = self.out(self.hidden(x))
            return tf.nn.softmax(logits) if squash else logits

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    _loop(Classifier(), keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          function=False)


def tape_eager_softmax_twice():
    """``tf.nn.softmax`` in ``call`` and ``from_logits=True``: eagerly Keras cannot see the softmax."""
    _eager_softmax_loop(squash=True, from_logits=True)


def tape_eager_logits_as_probabilities():
    """Logits and the default ``from_logits=False``, eagerly."""
    _eager_softmax_loop(squash=False, from_logits=False)


def tape_eager_softmax_probabilities():
    """``tf.nn.softmax`` in ``call`` and ``from_logits=False``: right."""
    _eager_softmax_loop(squash=True, from_logits=False)


_LATENT = 4


def _gan():
    """keras.io's GAN at toy size: a generator of 8-feature points, a discriminator on them."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    disc = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.LeakyReLU(0.2),
                             keras.layers.Dense(1)], name="discriminator")
    gen = keras.Sequential([keras.Input((_LATENT,)), keras.layers.Dense(16), keras.layers.LeakyReLU(0.2),
                            keras.layers.Dense(8)], name="generator")
    import numpy as np

    real = np.random.default_rng(5).normal(size=(256, 8)).astype("float32")
    return keras, disc, gen, real, keras.losses.BinaryCrossentropy(from_logits=True)


def _gan_step(tf, keras, disc, gen, d_opt, g_opt, loss_fn, seed, real):
    """One step of each: the discriminator on generated and real points concatenated, then the
    generator through the discriminator."""
    b = tf.shape(real)[0]
    fake = gen(keras.random.normal((b, _LATENT), seed=seed))
    both = tf.concat([fake, real], 0)
    labels = tf.concat([tf.ones((b, 1)), tf.zeros((b, 1))], 0)
    with tf.GradientTape() as tape:
        d_loss = loss_fn(labels, disc(both))
    d_opt.apply_gradients(zip(tape.gradient(d_loss, disc.trainable_weights), disc.trainable_weights))
    with tf.GradientTape() as tape:
        g_loss = loss_fn(tf.zeros((b, 1)), disc(gen(keras.random.normal((b, _LATENT), seed=seed))))
    g_opt.apply_gradients(zip(tape.gradient(g_loss, gen.trainable_weights), gen.trainable_weights))
    return d_loss, g_loss


def fit_gan_train_step():
    """The GAN as a keras.Model whose train_step takes both steps, trained by fit()."""
    tf = _tf()
    keras, disc, gen, real, loss_fn = _gan()

    class GAN(keras.Model):
        def __init__(self):
            super().__init__()
            self.disc, self.gen, self.seed = disc, gen, keras.random.SeedGenerator(1)

        def compile(self, d_opt, g_opt):
            super().compile()
            self.d_opt, self.g_opt = d_opt, g_opt

        def train_step(self, batch):
            d, g = _gan_step(tf, keras, self.disc, self.gen, self.d_opt, self.g_opt, loss_fn, self.seed, batch)
            return {"d_loss": d, "g_loss": g}

    gan = GAN()
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    gan.fit(real, batch_size=32, epochs=1, shuffle=False, verbose=0)


def tape_gan_loop():
    """The same two steps in a tf.function loop over the real batches."""
    tf = _tf()
    keras, disc, gen, real, loss_fn = _gan()
    d_opt, g_opt, seed = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), keras.random.SeedGenerator(1)

    @tf.function
    def step(batch):
        _gan_step(tf, keras, disc, gen, d_opt, g_opt, loss_fn, seed, batch)

    for i in range(0, len(real), 32):
        step(real[i:i + 32])


def _fit_net_with(opt) -> None:
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def _loop_net_times(factor: float, opt) -> None:
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_net(), opt, lambda m, xb, yb: factor * ce(yb, m(xb, training=True)), x, y)


def fit_digits_sgd_005():
    _fit_net_with(_keras().optimizers.SGD(0.05))


def tape_digits_loss_doubled_sgd_0025():
    """The loss times 2 and SGD's rate halved: the same updates."""
    _loop_net_times(2.0, _keras().optimizers.SGD(0.025))


def fit_digits_adam_005():
    _fit_net_with(_keras().optimizers.Adam(0.05))


def tape_digits_loss_times_005_adam_1():
    """The learning rate folded into the loss (x0.05) with Adam(1.0): Adam normalises the factor away."""
    _loop_net_times(0.05, _keras().optimizers.Adam(1.0))


def _two_hidden_weights():
    import numpy as np

    rng = np.random.default_rng(66)
    return [rng.normal(scale=0.2, size=sh).astype("float32")
            for sh in [(64, 64), (64,), (64, 64), (64,), (64, 10), (10,)]]


def _loop_digits(model) -> None:
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y, function=False)


def tape_digits_two_hidden_sequential():
    """64-64-64-10 as a Sequential model, its weights given: the hidden layers' kernels of one shape."""
    keras = _keras()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="tanh"),
                              keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(10)])
    model.set_weights(_two_hidden_weights())
    _loop_digits(model)


def tape_digits_two_hidden_created_backwards():
    """The same network subclassed, its layers created head first and the two hidden ones the other way
    round (h2 before h1) but called h1, h2, head: the same training."""
    keras = _keras()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(10)
            self.h2 = keras.layers.Dense(64, activation="tanh")
            self.h1 = keras.layers.Dense(64, activation="tanh")

        def call(self, x, training=False):
            return self.head(self.h2(self.h1(x)))

    import numpy as np

    model = Net()
    model(np.zeros((1, 64), "float32"))  # builds the layers, in the order they are called
    w = _two_hidden_weights()
    model.h1.set_weights(w[0:2])
    model.h2.set_weights(w[2:4])
    model.head.set_weights(w[4:6])
    _loop_digits(model)


def tape_digits_labels_shifted():
    """Each batch's labels sliced one row further than its inputs (``y[i + 1:j + 1]``)."""
    keras = _keras()
    x, y = data.digits()  # one row more than the steps take
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    batches = [(x[i:i + BATCH], y[i + 1:i + 1 + BATCH]) for i in range(0, BATCH * STEPS, BATCH)]
    _loop(_net(), keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          batches=batches)


def tape_digits_gradients_negated():
    """Each gradient negated between tape.gradient and apply_gradients (``-g``): gradient ascent."""
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_net(), keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          then=lambda grads: [-g for g in grads])


def tape_digits_loss_negated_eagerly():
    """``loss = -ce(y, model(x))``, eagerly: the optimizer climbs the cross-entropy."""
    _loop_net_negated(function=False)


def tape_digits_loss_negated():
    """``loss = -ce(y, model(x))`` in a ``tf.function`` step."""
    _loop_net_negated(function=True)


def _loop_net_negated(function: bool) -> None:
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_net(), keras.optimizers.SGD(0.1), lambda m, xb, yb: -ce(yb, m(xb, training=True)), x, y,
          function=function)


def fit_tf_keras_unfrozen_without_compile():
    """The base frozen and compiled, trained, then ``base.trainable = True`` for a second fit()
    with no compile() in between: fit() keeps the train function it built for the head alone."""
    keras, base, model = _tf_keras_base_and_head()
    x, y = _digits_slice()
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)
    base.trainable = True
    _fit(model, x, y)


def fit_tf_keras_unfrozen_and_compiled():
    """The same fine-tuning done right: compile() again after ``base.trainable = True``."""
    keras, base, model = _tf_keras_base_and_head()
    x, y = _digits_slice()
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def tape_digits_gradients_clipped_to_zero():
    """``tf.clip_by_value(g, -c, c)`` with ``c = int(0.5)``: every gradient applied is 0."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    clip = float(int(0.5))
    _loop(_net(), keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          then=lambda grads: [tf.clip_by_value(g, -clip, clip) for g in grads])


def fit_digits_weights_reset_each_epoch():
    """A 'best weights' copy taken before training and set back at every epoch's end: each epoch
    starts again from the initialization."""
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    best = model.get_weights()

    class Restore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.set_weights(best)

    _fit(model, x, y, epochs=3, callbacks=[Restore()])


def fit_digits_best_weights_kept():
    """The same callback done right: the weights of the epoch with the lowest loss are kept and
    restored at the end."""
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Best(keras.callbacks.Callback):
        low, best = float("inf"), None

        def on_epoch_end(self, epoch, logs=None):
            if logs["loss"] < self.low:
                self.low, self.best = logs["loss"], self.model.get_weights()

        def on_train_end(self, logs=None):
            self.model.set_weights(self.best)

    _fit(model, x, y, epochs=3, callbacks=[Best()])


def _class_weighted_train_step(keep_weights: bool):
    """fit(class_weight=...) into a custom train_step that passes fit()'s weights on to
    compute_loss, or drops them (``x, y = data[0], data[1]``)."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    y = (y == 0).astype("float32")

    class Step(keras.Model):
        def train_step(self, data):
            xb, yb, sw = keras.utils.unpack_x_y_sample_weight(data)
            if not keep_weights:
                sw = None
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                loss = self.compute_loss(x=xb, y=yb, y_pred=pred, sample_weight=sw)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(41)
    inp = keras.Input((64,))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(16, activation="relu")(inp))
    model = Step(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy())
    _fit(model, x, y, class_weight={0: 1.0, 1: 9.0})


def fit_train_step_drops_class_weights():
    _class_weighted_train_step(keep_weights=False)


def fit_train_step_keeps_class_weights():
    _class_weighted_train_step(keep_weights=True)


def _two_phase_fine_tune(reuse: bool):
    """A base frozen for one pass over the digits, then unfrozen for another, in an eager loop; the
    second phase gets a new optimizer, or reuses the first (Keras 3 then raises ``Unknown
    variable``: it was built for the head's variables only)."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(47)
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu")], name="base")
    model = keras.Sequential([base, keras.layers.Dense(10)])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def phase(opt):
        for i in range(0, len(x), BATCH):
            with tf.GradientTape() as tape:
                loss = ce(y[i:i + BATCH], model(x[i:i + BATCH], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

    base.trainable = False
    first = keras.optimizers.Adam(3e-3)
    phase(first)
    base.trainable = True
    phase(first if reuse else keras.optimizers.Adam(3e-3))


def tape_fine_tune_new_optimizer():
    _two_phase_fine_tune(reuse=False)


def tape_fine_tune_reused_optimizer():
    _two_phase_fine_tune(reuse=True)


def _dropout_net():
    keras = _keras()
    keras.utils.set_random_seed(53)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dropout(0.4), keras.layers.Dense(10)])


def _loop_dropout(metric_pass: bool) -> None:
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = keras.metrics.SparseCategoricalAccuracy()

    def loss_of(m, xb, yb):
        if metric_pass:
            acc.update_state(yb, m(xb, training=True))  # a second forward pass, drawing its own masks
        return ce(yb, m(xb, training=True))

    _loop(_dropout_net(), keras.optimizers.Adam(2e-3), loss_of, x, y)


def tape_dropout_one_pass():
    """A Dropout MLP trained in a tf.function tape loop."""
    _loop_dropout(metric_pass=False)


def tape_dropout_metric_pass_first():
    """The same loop with an accuracy computed from another training-mode call made first: the
    Dropout masks of the loss's pass are the generator's second draw each step."""
    _loop_dropout(metric_pass=True)


def _fit_regression(labels_f16: bool) -> None:
    """A small regressor fitted on the diabetes targets shifted to around 100, the labels kept in
    float32 or round-tripped through float16 (a 'memory-saving' column)."""
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    y = (y.reshape(-1, 1) * 30.0 + 100.0).astype("float32")
    if labels_f16:
        y = y.astype("float16").astype("float32")
    keras.utils.set_random_seed(59)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses.Huber())
    _fit(model, x, y)


def fit_regression_labels_f32():
    _fit_regression(labels_f16=False)


def fit_regression_labels_f16():
    _fit_regression(labels_f16=True)


def _loop_hand_l2(inside: bool) -> None:
    """An L2 penalty on the kernels written by hand and added to the cross-entropy, computed inside
    the tape, or before it opens (its value in the loss, no gradient)."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    model = _net()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)

    def penalty():
        return 1e-2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in model.trainable_variables if len(w.shape) == 2])

    @tf.function
    def step(xb, yb):
        if not inside:
            l2 = penalty()
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True)) + (penalty() if inside else l2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_digits_l2_inside_tape():
    _loop_hand_l2(inside=True)


def tape_digits_l2_before_tape():
    _loop_hand_l2(inside=False)


def _loop_bn_over(all_weights: bool) -> None:
    """The BatchNormalization model trained in a tape loop over ``model.trainable_variables``, or over
    ``model.weights`` (the moving statistics get None gradients, which Keras 3 skips with a warning)."""
    keras, _base, model = _bn_base_and_head()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.1)
    tf = _tf()
    model(x[:1])

    @tf.function
    def step(xb, yb):
        variables = model.weights if all_weights else model.trainable_variables
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_bn_over_trainable_variables():
    _loop_bn_over(all_weights=False)


def tape_bn_over_all_weights():
    _loop_bn_over(all_weights=True)


def _fit_sequence_regressor(per_step_output: bool) -> None:
    """An LSTM regressor of one target per sequence (its sum), fitted with Keras mse; the LSTM left
    with ``return_sequences=True`` (a prediction per time step, (N, T, 1) against (N, 1) labels)."""
    import numpy as np

    keras = _keras()
    rng = np.random.default_rng(61)
    xs = rng.normal(size=(STEPS * BATCH, 6, 1)).astype("float32")
    y = (xs[:, :, 0].sum(1, keepdims=True) / np.sqrt(6)).astype("float32")
    keras.utils.set_random_seed(61)
    model = keras.Sequential([keras.Input((6, 1)), keras.layers.LSTM(8, return_sequences=per_step_output),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    _fit(model, xs, y)


def fit_lstm_one_output_per_sequence():
    _fit_sequence_regressor(per_step_output=False)


def fit_lstm_return_sequences_left_on():
    _fit_sequence_regressor(per_step_output=True)


def _fit_binary(coded_12: bool) -> None:
    """A binary classifier of digit 0 against the rest, fitted with binary cross-entropy on labels
    coded 0/1, or 1/2 (a class column taken as it came)."""
    keras = _keras()
    x, y = _digits_slice()
    y = (y == 0).astype("float32") + (1.0 if coded_12 else 0.0)
    keras.utils.set_random_seed(67)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy())
    _fit(model, x, y)


def fit_binary_labels_01():
    _fit_binary(coded_12=False)


def fit_binary_labels_12():
    _fit_binary(coded_12=True)


def _autoencoder_loop(decoder_trained: bool) -> None:
    """A digits autoencoder (encoder and decoder two Sequential models) trained with Keras mse in a
    tf.function loop over the encoder's and the decoder's variables, or the encoder's only."""
    tf = _tf()
    keras = _keras()
    x, _y = _digits_slice()
    keras.utils.set_random_seed(71)
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(8)])
    decoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(64, activation="sigmoid")])
    mse = keras.losses.MeanSquaredError()
    opt = keras.optimizers.Adam(1e-2)
    variables = encoder.trainable_variables + (decoder.trainable_variables if decoder_trained else [])

    @tf.function
    def step(xb):
        with tf.GradientTape() as tape:
            loss = mse(xb, decoder(encoder(xb, training=True), training=True))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    for i in range(0, len(x), BATCH):
        step(x[i:i + BATCH])


def tape_autoencoder_both_trained():
    _autoencoder_loop(decoder_trained=True)


def tape_autoencoder_decoder_left_out():
    _autoencoder_loop(decoder_trained=False)


def fit_digits_adam_global_clipnorm_unreached():
    """Adam with ``global_clipnorm=100.0``, a bound the digits' gradients never reach."""
    _fit_net_with(_keras().optimizers.Adam(0.01, global_clipnorm=100.0))


def _loop_clip_by_hand(function: bool) -> None:
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_net(), keras.optimizers.Adam(0.01), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          then=lambda grads: tf.clip_by_global_norm(grads, 100.0)[0], function=function)


def tape_digits_clip_by_global_norm_unreached():
    """The same bound applied by hand with ``tf.clip_by_global_norm`` in a tf.function step."""
    _loop_clip_by_hand(function=True)


def tape_digits_clip_by_global_norm_unreached_eagerly():
    """The same, eagerly."""
    _loop_clip_by_hand(function=False)
