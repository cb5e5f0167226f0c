# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A ninth set of pairs (see scripts.py for the conventions): fit(validation_split=...) against a loop
over all the data, gradients clipped by hand per variable against an optimizer's global clipping (and
the reverse), compute_average_loss given another global batch size than the batch.
"""

from __future__ import annotations

from . import data
from .scripts_models import BATCH, STEPS, _digits, _fit, _keras, _sparse_ce, _tf


def _mlp(seed: int = 907):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10)])


# --- fit(validation_split=0.2) trains on the first 80%; the loop on all of x -----------------------


def fit_validation_split_fifth():
    keras = _keras()
    x, y = _digits()
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, validation_split=0.2)


def _tape_epochs(x, y, epochs: int = 2):
    tf = _tf()
    keras = _keras()
    model = _mlp()
    opt = keras.optimizers.SGD(0.1)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(epochs):
        for i in range(0, len(x), BATCH):
            step(x[i:i + BATCH], y[i:i + BATCH])


def tape_all_data_two_epochs():
    """The loop over all of x: its batches after the first 80% are the ones fit() held out."""
    x, y = _digits()
    _tape_epochs(x, y)


def tape_first_fifth_held_out_two_epochs():
    """The same loop on x[:int(len(x) * 0.8)] (fit() splits at that index)."""
    x, y = _digits()
    n = int(len(x) * 0.8)
    _tape_epochs(x[:n], y[:n])


def fit_validation_split_one_epoch():
    """320 examples: fit() trains on the first 256 (8 full batches) and validates on the last 64."""
    keras = _keras()
    x, y = data.digits(320)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, validation_split=0.2)


def tape_all_data_one_epoch():
    """One epoch over all 320: the same 8 batches, then 2 of the examples fit() held out."""
    x, y = data.digits(320)
    _tape_epochs(x, y, epochs=1)


# --- clipping: per variable by hand against the optimizer's global norm, and the reverse -----------

CLIP = 0.5  # below the gradients' norms here: every step clips


def fit_global_clipnorm():
    keras = _keras()
    x, y = _digits()
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1, global_clipnorm=CLIP), loss=_sparse_ce())
    _fit(model, x, y)


def fit_clipnorm():
    keras = _keras()
    x, y = _digits()
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1, clipnorm=CLIP), loss=_sparse_ce())
    _fit(model, x, y)


def _tape_clipped(clip):
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model = _mlp()
    opt = keras.optimizers.SGD(0.1)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = clip(tf, tape.gradient(loss, model.trainable_variables))
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_clip_by_norm_each():
    _tape_clipped(lambda tf, grads: [tf.clip_by_norm(g, CLIP) for g in grads])


def tape_clip_by_global_norm():
    _tape_clipped(lambda tf, grads: tf.clip_by_global_norm(grads, CLIP)[0])


# --- compute_average_loss with a global batch size that is not the batch's -------------------------


def _mirrored_mlp(strategy):
    keras = _keras()
    keras.utils.set_random_seed(917)
    with strategy.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10)])
        opt = keras.optimizers.SGD(0.1)
    return model, opt


def fit_mirrored_sgd():
    tf = _tf()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _digits()
    model, opt = _mirrored_mlp(strategy)
    with strategy.scope():
        model.compile(optimizer=opt, loss=_sparse_ce())
    _fit(model, x, y)


def _tape_mirrored_average(global_batch: int):
    tf = _tf()
    keras = _keras()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _digits()
    model, opt = _mirrored_mlp(strategy)
    with strategy.scope():
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x[:BATCH * STEPS], y[:BATCH * STEPS])).batch(BATCH))

    @tf.function
    def train(batch):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                per_example = ce(yb, model(xb, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=batch), axis=None)

    for batch in ds:
        train(batch)


def tape_mirrored_global_batch_doubled():
    """global_batch_size=2 * BATCH (as if for two replicas) on one replica: the loss is half fit()'s."""
    _tape_mirrored_average(2 * BATCH)


def tape_average_loss_no_strategy_global_batch_doubled():
    """compute_average_loss outside any strategy, global_batch_size twice the batch."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model, opt = _mirrored_mlp(tf.distribute.get_strategy())
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(ce(yb, model(xb, training=True)), global_batch_size=2 * BATCH)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


# --- a GRU tagger over a padding mask whose first batch has no padding: the loop averages over all ---


def _tags_full_first():
    """The tagger's sequences with full-length ones moved to the front: the first batch pads nothing."""
    import numpy as np

    from .scripts_i import _tags

    x, y = _tags()
    full = (x != 0).all(axis=1)
    order = np.concatenate([np.flatnonzero(full)[:24], np.flatnonzero(~full), np.flatnonzero(full)[24:]])
    return x[order], y[order]


def fit_masked_tagger_full_first_batch():
    from .scripts_i import _tagger

    keras = _keras()
    x, y = _tags_full_first()
    model = _tagger()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=24, epochs=1, shuffle=False, verbose=0)


def tape_masked_tagger_full_first_batch_mask_ignored():
    """The loss function on the output, then a mean over every entry: the padding counts from step 1."""
    from .scripts_i import _tagger

    tf, keras = _tf(), _keras()
    x, y = _tags_full_first()
    model = _tagger()
    opt = keras.optimizers.Adam(5e-3)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            out = model(xb, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(0, len(x), 24):
        step(x[i:i + 24], y[i:i + 24])
