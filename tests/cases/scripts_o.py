# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""An eleventh set (see scripts.py for the conventions): single runs for ``gradtrace check`` whose
bug leaves no trace a pair would need, and the correct designs beside them that a checker must
not flag: class indices 0/1/2 under a binary cross-entropy in fit() (with a last batch of 0s and
1s only), a hinge loss on -1/1 labels, a head used only outside the steps with its None
gradients filtered, a BatchNormalization frozen before it learned any statistics, Keras 3's
LossScaleOptimizer handed the gradients of a loss never scaled, gradients clipped to [0, 1],
a sigmoid under a categorical cross-entropy, Monte Carlo dropout after fit(), two heads trained
at alternate steps, and a head trained by a second optimizer after a pretraining fit().
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts import BATCH, STEPS, _digits_slice, _keras
from .scripts_models import _fit, _loop, _tf


def _mlp(outputs: int, activation: str | None = None, seed: int = 71, inputs: int = 64):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(24, activation="relu"),
                             keras.layers.Dense(outputs, activation=activation)])


def fit_binary_on_class_indices():
    """``binary_crossentropy`` on the digits' labels modulo 3 (0, 1, 2), with a last partial batch
    whose labels are 0 and 1 only: a batch in range is no counter-example."""
    keras = _keras()
    x, y = data.digits()
    y = (y % 3).astype("float32")
    n = STEPS * BATCH
    tail = np.flatnonzero(y[n:] < 2)[:6] + n
    x, y = np.concatenate([x[:n], x[tail]]), np.concatenate([y[:n], y[tail]])
    model = _mlp(1, "sigmoid")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_hinge_on_plus_minus_one():
    """A hinge loss on labels coded -1/1, as Keras documents them."""
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(1, "tanh")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.Hinge())
    _fit(model, x, np.where(y == 0, 1.0, -1.0).astype("float32"))


def tape_auxiliary_head_unused():
    """A subclassed model whose auxiliary head only a method outside the steps calls; the step
    asks for every trainable variable and drops the None gradients before apply_gradients."""
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(72)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(24, activation="relu")
            self.out = keras.layers.Dense(10)
            self.aux = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.out(self.hidden(x))

        def score(self, x):
            return self.aux(self.hidden(x))

    x, y = _digits_slice()
    model = Net()
    model(x[:1])
    model.score(x[:1])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def _bn_first(frozen: bool):
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(73)
    bn = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((64,)), bn, keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10)])
    if frozen:
        bn.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x * 16.0, y)


def fit_bn_frozen_from_scratch():
    """``bn.trainable = False`` on a new BatchNormalization: inference mode, statistics 0 and 1."""
    _bn_first(frozen=True)


def fit_bn_trained_from_scratch():
    _bn_first(frozen=False)


def _mixed_loop(scaled: bool, called: bool = False) -> None:
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(74)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                                  keras.layers.Dense(10, dtype="float32")])
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
                target = opt.scale_loss(loss) if scaled else loss
                if called:
                    opt.scale_loss(loss)  # called, its result never differentiated
            grads = tape.gradient(target, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        for xb, yb in data.batches(x, y, BATCH, STEPS):
            step(xb, yb)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def tape_mixed_loss_never_scaled():
    """Keras 3's LossScaleOptimizer applies the gradients of the unscaled loss: it divides them by
    the loss scale all the same."""
    _mixed_loop(scaled=False)


def tape_mixed_loss_scaled():
    _mixed_loop(scaled=True)


def tape_mixed_scale_loss_called_unused():
    """``opt.scale_loss(loss)`` is called inside the tape, but ``tape.gradient`` gets ``loss``: the
    LossScaleOptimizer divides gradients of the unscaled loss by the loss scale all the same."""
    _mixed_loop(scaled=False, called=True)


def _clipped_loop(low: float) -> None:
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _loop(_mlp(10), keras.optimizers.SGD(0.1), lambda m, xb, yb: ce(yb, m(xb, training=True)), x, y,
          then=lambda grads: [tf.clip_by_value(g, low, 1.0) for g in grads])


def tape_gradients_clipped_to_0_1():
    """``tf.clip_by_value(g, 0.0, 1.0)`` meant as -1..1: every negative entry zeroed."""
    _clipped_loop(0.0)


def tape_gradients_clipped_symmetrically():
    _clipped_loop(-1.0)


def _fit_squashed(activation: str) -> None:
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(10, activation)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    _fit(model, x, keras.utils.to_categorical(y, 10))


def fit_sigmoid_under_categorical_ce():
    _fit_squashed("sigmoid")


def fit_softmax_under_categorical_ce():
    _fit_squashed("softmax")


def fit_then_monte_carlo_dropout():
    """Dropout (no BatchNormalization) trained with fit(), then ten predictions in training mode."""
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(75)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)
    np.mean([model(x[:64], training=True).numpy() for _ in range(10)], axis=0)


def tape_two_heads_alternate():
    """A trunk with a classification and a regression head: even steps train the first head's
    loss, odd steps the second's (one optimizer, None gradients filtered)."""
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(76)
    x, y = _digits_slice()
    inp = keras.Input((64,))
    h = keras.layers.Dense(24, activation="relu")(inp)
    model = keras.Model(inp, [keras.layers.Dense(10, name="cls")(h), keras.layers.Dense(1, name="reg")(h)])
    opt = keras.optimizers.Adam(1e-2)
    opt.build(model.trainable_variables)  # Keras 3: every variable it will see, before the first subset
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    def step(xb, yb, which):
        with tf.GradientTape() as tape:
            cls, reg = model(xb, training=True)
            loss = ce(yb, cls) if which == 0 else mse(tf.cast(yb, tf.float32)[:, None] / 9.0, reg)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])

    @tf.function
    def classify(xb, yb):
        step(xb, yb, 0)

    @tf.function
    def regress(xb, yb):
        step(xb, yb, 1)

    for i, (xb, yb) in enumerate(data.batches(x, y, BATCH, STEPS * 2)):
        (classify if i % 2 == 0 else regress)(xb, yb)


def tape_head_after_pretraining_fit():
    """A base pretrained with a throwaway head in fit(), frozen, then a new head trained by a second
    optimizer in a tf.function loop long enough for the tracer's light steps."""
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(77)
    x, y = data.digits()
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu")], name="base")
    pre = keras.Sequential([base, keras.layers.Dense(10)])
    pre.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pre.fit(x[:256], y[:256], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    base.trainable = False
    head = keras.layers.Dense(10)
    opt = keras.optimizers.Adam(1e-2)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, head(base(xb, training=False)))
        grads = tape.gradient(loss, head.trainable_variables)
        opt.apply_gradients(zip(grads, head.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, 40):
        step(xb, yb)


def _fit_binary_head(logits: bool) -> None:
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(1, None if logits else "sigmoid", seed=78)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy(from_logits=logits))
    _fit(model, x, (y == 0).astype("float32"))


def fit_binary_logits_from_logits():
    """A last layer without activation and ``BinaryCrossentropy(from_logits=True)``."""
    _fit_binary_head(logits=True)


def fit_binary_sigmoid_probabilities():
    """The same model ending in a sigmoid, and ``from_logits=False``: the same loss."""
    _fit_binary_head(logits=False)


def fit_cosine_similarity_onto_one_hot():
    """Keras' CosineSimilarity loss (minus the cosine, by definition) onto one-hot directions."""
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(10, seed=79)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.CosineSimilarity())
    _fit(model, x, keras.utils.to_categorical(y, 10).astype("float32"))


def tape_cosine_minimised():
    """The cosine written by hand without the minus: the loop minimises the similarity."""
    tf = _tf()
    keras = _keras()
    x, y = _digits_slice()

    def loss_of(m, xb, yb):
        p = m(xb, training=True)
        return tf.reduce_mean(tf.reduce_sum(tf.math.l2_normalize(yb, -1) * tf.math.l2_normalize(p, -1), -1))

    _loop(_mlp(10, seed=79), keras.optimizers.SGD(0.5), loss_of, x, keras.utils.to_categorical(y, 10).astype("float32"))


def _accumulated(reset: bool) -> None:
    """Gradients of 4 micro-batches of 8 accumulated in variables by one tf.function and applied by
    another; the accumulators zeroed after each apply, or never."""
    tf = _tf()
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    y = y[:, None]
    keras.utils.set_random_seed(80)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.02, momentum=0.9)
    mse = keras.losses.MeanSquaredError()
    acc = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]

    @tf.function
    def accumulate(xb, yb):
        with tf.GradientTape() as tape:
            loss = mse(yb, model(xb, training=True))
        for a, g in zip(acc, tape.gradient(loss, model.trainable_variables)):
            a.assign_add(g / 4.0)

    @tf.function
    def apply():
        opt.apply_gradients(zip([a.read_value() for a in acc], model.trainable_variables))
        if reset:
            for a in acc:
                a.assign(tf.zeros_like(a))

    for i in range(0, len(x), BATCH):
        for j in range(i, i + BATCH, 8):
            accumulate(x[j:j + 8], y[j:j + 8])
        apply()


def tape_accumulated_and_reset():
    _accumulated(reset=True)


def tape_accumulated_never_reset():
    _accumulated(reset=False)


def tape_masked_gru_tagger_tf_nn_loss():
    """The tagger's loss written with ``tf.nn.sparse_softmax_cross_entropy_with_logits`` and a mean
    over every entry: no Keras loss records the mask it leaves out."""
    from .scripts_i import _tagger_loop

    tf = _tf()
    _tagger_loop(lambda xb, yb, out: tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(yb, tf.int32), logits=out)))


def _fit_initialized(init: str) -> None:
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(81)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu", kernel_initializer=init),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def fit_hidden_glorot_uniform():
    _fit_initialized("glorot_uniform")


def fit_hidden_he_normal():
    """The same seed; the hidden layer's kernel drawn by another initializer."""
    _fit_initialized("he_normal")


def tape_digits_two_micro_batches_averaged():
    """Each batch of 32 as two micro-batches of 16 whose gradients are averaged and applied once:
    the same training as fit()'s batches of 32 (scripts.fit_digits_sgd_sparse), though each step
    records its last micro-batch."""
    tf = _tf()
    keras = _keras()
    from .scripts import _mlp as _digits_mlp

    x, y = _digits_slice()
    model = _digits_mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    half = BATCH // 2
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        total = None
        for lo in (0, half):
            with tf.GradientTape() as tape:
                loss = ce(yb[lo:lo + half], model(xb[lo:lo + half], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
        opt.apply_gradients(zip([t / 2.0 for t in total], model.trainable_variables))


def _fit_regression_weights(dataset: bool) -> None:
    tf = _tf()
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    w = np.where(y > 0, 2.0, 1.0).astype("float32")
    keras.utils.set_random_seed(82)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    if dataset:
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), epochs=1, verbose=0)
    else:
        model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_regression_sample_weighted():
    _fit_regression_weights(dataset=False)


def fit_regression_dataset_weights_lost():
    """The same fit() moved to a tf.data pipeline of (x, y): the sample weights are gone."""
    _fit_regression_weights(dataset=True)


def _digits_pipeline_loop(batches_of) -> None:
    """The digits MLP of scripts.fit_digits_sgd_sparse in a tape loop fed by ``batches_of(ds)``,
    ``ds`` the digits as a tf.data pipeline of STEPS batches of BATCH."""
    tf = _tf()
    keras = _keras()
    from .scripts import _mlp as _digits_mlp

    x, y = _digits_slice()
    model = _digits_mlp(64, 10)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    _loop(model, keras.optimizers.SGD(0.1), lambda m, xb, yb: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)(yb, m(xb, training=True)), x, y, batches=batches_of(ds, tf, x, y))


def tape_digits_next_iter_every_step():
    """``xb, yb = next(iter(ds))`` at every step: the pipeline starts over and yields its first
    batch each time."""
    _digits_pipeline_loop(lambda ds, tf, x, y: (next(iter(ds)) for _ in range(STEPS)))


def tape_digits_whole_pipeline_as_one_batch():
    """Full-batch training: a pipeline of one element (the whole slice) iterated at every step."""
    def full(ds, tf, x, y):
        whole = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
        for _ in range(STEPS):
            yield from whole
    _digits_pipeline_loop(full)


def tape_digits_pipeline_iterator_kept():
    """``it = iter(ds)`` once, ``next(it)`` at every step: the batches fit() sees, in order."""
    def kept(ds, tf, x, y):
        it = iter(ds)
        for _ in range(STEPS):
            yield next(it)
    _digits_pipeline_loop(kept)


def tape_encoder_cut_by_stop_gradient():
    """A separate encoder model under ``tf.stop_gradient`` (meant for a target branch) before a
    head; the step asks tape.gradient for both models' variables and drops the None gradients,
    so no optimizer ever gets the encoder's."""
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(91)
    x, y = data.regression(STEPS * BATCH)
    encoder = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu")], name="enc")
    head = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)], name="head")
    opt = keras.optimizers.Adam(1e-3)
    params = encoder.trainable_variables + head.trainable_variables

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            z = tf.stop_gradient(encoder(xb, training=True))
            loss = tf.reduce_mean(tf.square(tf.reshape(yb, (-1, 1)) - head(z)))
        grads = tape.gradient(loss, params)
        opt.apply_gradients([(g, v) for g, v in zip(grads, params) if g is not None])

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def _feat_aux_model():
    """Two named Inputs ("feat", then "aux") and two heads ("cls", "reg")."""
    keras = _keras()
    keras.utils.set_random_seed(93)
    feat, aux = keras.Input((10,), name="feat"), keras.Input((4,), name="aux")
    h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(feat), aux])
    return keras.Model([feat, aux], [keras.layers.Dense(3, name="cls")(h), keras.layers.Dense(1, name="reg")(h)])


def _feat_aux_data():
    x, y = data.classification(classes=3)
    n = STEPS * BATCH
    x = x[:n, :10].astype("float32")
    return x, np.tanh(x[:, :4]).astype("float32"), y[:n], (x[:, :1] * 2 + x[:, 1:2]).astype("float32")


def fit_feat_aux_dicts():
    """fit() on dicts of inputs and labels keyed by name (flattened by key: "aux" before "feat")."""
    keras = _keras()
    feat, aux, yc, yr = _feat_aux_data()
    model = _feat_aux_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.2})
    model.fit({"feat": feat, "aux": aux}, {"cls": yc, "reg": yr}, batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)


def tape_feat_aux_lists():
    """The same training in a loop that passes the inputs as a list in the model's order and adds
    the two heads' losses, the weighted one last."""
    tf = _tf()
    keras = _keras()
    feat, aux, yc, yr = _feat_aux_data()
    model = _feat_aux_model()
    opt = keras.optimizers.SGD(0.05)
    ce, mse = keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()

    @tf.function
    def step(f, a, c, r):
        with tf.GradientTape() as tape:
            pc, pr = model([f, a], training=True)
            loss = ce(c, pc) + 0.2 * mse(r, pr)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        lo = i * BATCH
        step(feat[lo:lo + BATCH], aux[lo:lo + BATCH], yc[lo:lo + BATCH], yr[lo:lo + BATCH])


def fit_pretrained_on_regression_then_class_head():
    """A base fit() first on 8 regression targets (mse), then frozen under a new head compiled with
    a sparse cross-entropy and metrics=["accuracy"] on class indices: the metric belongs to the
    second compile's labels."""
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(94)
    base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu")], name="base")
    pre = keras.Sequential([base, keras.layers.Dense(8)])
    pre.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    pre.fit(x, x[:, :8], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    base.trainable = False
    clf = keras.Sequential([base, keras.layers.Dense(10)])
    clf.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_multi_label_binary_accuracy_under_categorical_ce():
    """Four independent 0/1 labels per example (several 1s a row) under sigmoid outputs, a
    categorical cross-entropy (the slip) and BinaryAccuracy (the right metric for such labels)."""
    keras = _keras()
    x, y = _digits_slice()
    labels = np.stack([y % 2, (y > 4), (y % 3 == 0), (y < 2)], axis=1).astype("float32")
    model = _mlp(4, "sigmoid", seed=95)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy()])
    model.fit(x, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_model_rebuilt_each_epoch():
    """build + compile + fit(epochs=1) inside an epoch loop, four times, 12 steps each: every
    epoch starts from fresh weights (copies beyond the first eight steps show only in the steps
    that list the old copy's variables without a gradient)."""
    keras = _keras()
    x, y = data.digits(12 * BATCH)
    for epoch in range(4):
        model = _mlp(10, seed=96 + epoch)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_gaussian_log_likelihood_minimised():
    """A Gaussian log-likelihood of the targets minimised as it is (the minus of the negative
    log-likelihood forgotten): the optimizer pushes the predicted mean away from the targets and
    the loss falls without a floor until it overflows."""
    tf = _tf()
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    model = _mlp(2, seed=97, inputs=10)
    opt = keras.optimizers.SGD(0.5)

    def loss_of(m, xb, yb):
        out = m(xb, training=True)
        mu, log_var = out[:, 0], out[:, 1]
        return tf.reduce_mean(-0.5 * (log_var + tf.square(yb - mu) / tf.exp(log_var)))

    _loop(model, opt, loss_of, x, y)


def _fit_regression_loss(loss) -> None:
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    model = _mlp(1, seed=98, inputs=10)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
    model.fit(x, y[:, None], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_regression_mse_string():
    _fit_regression_loss("mse")


def fit_regression_own_summed_squares():
    """compile(loss=my_mse), a function of the script's own that sums the squares over the batch."""
    tf = _tf()

    def my_mse(y_true, y_pred):
        return tf.reduce_sum(tf.square(y_true - y_pred))

    _fit_regression_loss(my_mse)


def _four_classes(order: str):
    """The digits of classes 0-3 (the first 512 digits: 204 examples) in the given order: 'sorted'
    by label (as data built by concatenating one array per class comes), or 'shuffled' once."""
    x, y = data.digits()
    keep = y < 4
    x, y = x[keep], y[keep]
    idx = np.argsort(y, kind="stable") if order == "sorted" else np.random.default_rng(5).permutation(len(y))
    return x[idx], y[idx]


def _four_classes_loop(x, y, shuffle: bool) -> None:
    """A tape loop over a tf.data pipeline of ``(x, y)`` in batches of 8, one epoch."""
    tf = _tf()
    keras = _keras()
    model = _mlp(4, seed=93)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=3)
    _loop(model, keras.optimizers.Adam(1e-3), lambda m, xb, yb: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)(yb, m(xb, training=True)), x, y, batches=ds.batch(8))


def tape_four_classes_sorted():
    """Data sorted by label, batched without a shuffle: each batch holds one class, class after class."""
    _four_classes_loop(*_four_classes("sorted"), shuffle=False)


def tape_four_classes_shuffled_by_pipeline():
    """The same sorted data, shuffled by the pipeline with a buffer as large as the data."""
    _four_classes_loop(*_four_classes("sorted"), shuffle=True)


def fit_four_classes_one_hot_sorted():
    """fit() on one-hot labels sorted by class, with shuffle=False."""
    keras = _keras()
    x, y = _four_classes("sorted")
    model = _mlp(4, seed=93)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, np.eye(4, dtype="float32")[y], batch_size=8, epochs=1, shuffle=False, verbose=0)


def fit_four_classes_one_hot_shuffled():
    """The same sorted one-hot data under fit()'s default shuffle=True."""
    keras = _keras()
    x, y = _four_classes("sorted")
    model = _mlp(4, seed=93)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, np.eye(4, dtype="float32")[y], batch_size=8, epochs=1, verbose=0)


def tape_rare_class_shuffled_small_batches():
    """A rare positive class (every other digit 0, about 5 %) shuffled, in batches of 4: four
    fifths of the batches hold negatives only, in long runs, none of them a sign of sorted data."""
    tf = _tf()
    keras = _keras()
    x, y = data.digits()
    y = ((y == 0) & (np.arange(len(y)) % 2 == 0)).astype("float32")[:, None]
    model = _mlp(1, seed=94)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=4).batch(4)
    _loop(model, keras.optimizers.Adam(1e-3), lambda m, xb, yb: keras.losses.BinaryCrossentropy(
        from_logits=True)(yb, m(xb, training=True)), x, y, batches=ds)


def _regression_head(activation: str, targets: str) -> None:
    """The diabetes regression (standardized targets, or rescaled into [-1, 1] or [0, 1]) under
    fit() with an mse, the output layer given ``activation``."""
    keras = _keras()
    x, y = data.regression(STEPS * BATCH)
    if targets != "standardized":
        y = (y - y.min()) / (y.max() - y.min())
        y = 2 * y - 1 if targets == "[-1, 1]" else y
    model = _mlp(1, activation, seed=99, inputs=10)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    model.fit(x, y[:, None], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_relu_head_on_standardized_targets():
    """A relu on the regression output while the targets are standardized (half of them negative)."""
    _regression_head("relu", "standardized")


def fit_tanh_head_on_standardized_targets():
    """A tanh on the output, targets standardized: some beyond [-1, 1]."""
    _regression_head("tanh", "standardized")


def fit_tanh_head_on_targets_in_range():
    """A tanh on the output, the targets rescaled into [-1, 1]: every target reachable."""
    _regression_head("tanh", "[-1, 1]")


def fit_relu_head_on_nonnegative_targets():
    """A relu on the output, the targets rescaled into [0, 1]: nonnegative, every target reachable."""
    _regression_head("relu", "[0, 1]")


def tape_feature_model_called_before_tape():
    """Two models, a feature extractor and a classifier; the eager step calls the extractor before
    the tape opens, asks tape.gradient for both models' variables and drops the None gradients:
    no optimizer ever gets the extractor's."""
    tf = _tf()
    keras = _keras()
    keras.utils.set_random_seed(95)
    x, y = _digits_slice()
    feat = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="relu")])
    clf = keras.Sequential([keras.Input((24,)), keras.layers.Dense(10)])
    variables = feat.trainable_variables + clf.trainable_variables
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i in range(STEPS):
        xb, yb = x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]
        f = feat(xb, training=True)
        with tf.GradientTape() as tape:
            loss = ce(yb, clf(f, training=True))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])


def fit_digits_adam_learning_rate_half():
    """``Adam(0.5)`` where ``Adam(5e-4)`` was meant: the first updates throw the loss far above where it started."""
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(10, seed=96)
    model.compile(optimizer=keras.optimizers.Adam(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, x, y)


def gan_generator_step_moves_discriminator():
    """The two-tape GAN of scripts_j whose generator step differentiates and applies its loss with
    respect to the discriminator's variables too: the generator's optimizer pushes the
    discriminator towards calling the fakes real."""
    from .scripts_j import _gan

    _gan(False, generator_moves_discriminator=True)


def _digits_loop_logging(every: int | None) -> None:
    """The digits MLP in a ``tf.function`` tape loop over fit(shuffle=False)'s batches; every
    ``every``-th batch the step is called a second time to log its loss (None: never)."""
    tf = _tf()
    keras = _keras()
    from .scripts import _mlp as _digits_mlp

    x, y = _digits_slice()
    model = _digits_mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    for i, (xb, yb) in enumerate(data.batches(x, y, BATCH, STEPS)):
        step(xb, yb)
        if every and i % every == 0:
            float(step(xb, yb))  # "log the loss": a second optimizer step on the batch


def tape_digits_step_called_again_to_log():
    """Every third batch the train step is called again to print the loss: three batches trained twice."""
    _digits_loop_logging(3)


def tape_digits_step_once_per_batch():
    _digits_loop_logging(None)


def _tf_keras_dropout_model():
    import tf_keras

    tf_keras.utils.set_random_seed(97)
    return tf_keras, tf_keras.Sequential([tf_keras.layers.Dense(32, input_shape=(64,)), tf_keras.layers.ReLU(),
                                          tf_keras.layers.Dropout(0.2), tf_keras.layers.Dense(10)])


def fit_tf_keras_dropout_partial_batch():
    """tf-keras fit() over 261 digits in batches of 32, the last one of 5, two epochs."""
    tf_keras, model = _tf_keras_dropout_model()
    x, y = data.digits(BATCH * STEPS + 5)
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)


def tape_tf_keras_dropout_partial_batch():
    """The same in a tf-keras ``tf.function`` tape loop: the partial batch traces the step again, and
    the new graph's Dropout draws other masks."""
    tf = _tf()
    tf_keras, model = _tf_keras_dropout_model()
    x, y = data.digits(BATCH * STEPS + 5)
    opt = tf_keras.optimizers.Adam(1e-3)
    ce = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    for _ in range(2):
        for xb, yb in ds:
            step(xb, yb)


def fit_binary_accuracy_named_accuracy_on_one_hot():
    """``metrics=[BinaryAccuracy(name="accuracy")]`` on one-hot labels: the class is the script's own
    choice under the name Keras gives its resolved 'accuracy'."""
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(10, seed=98)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    _fit(model, x, np.eye(10, dtype="float32")[y])
