# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Training scripts as users write them, in pairs that should (or should not) be the same.

Each function is one small training run (10-24 optimizer steps on real data);
the test harness runs it inside ``gradtrace.trace``. Both scripts of a pair
seed Keras identically, so they start from the same weights and see the same
batches unless the user's mistake is exactly that.
"""

from __future__ import annotations

import numpy as np

from . import data

BATCH = 32
STEPS = 8


def _keras():
    import keras

    return keras


def _mlp(inputs: int, outputs: int, activation: str | None = None, seed: int = 7, hidden: int = 32):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(hidden // 2, activation="relu"),
        keras.layers.Dense(outputs, activation=activation),
    ])


def _bn_dropout_net(inputs: int, outputs: int, seed: int = 11):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(32),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(outputs),
    ])


def _digits_slice(steps: int = STEPS):
    x, y = data.digits()
    n = steps * BATCH
    return x[:n], y[:n]


# --- seed 002: fit(mse) vs a hand-written sum/batch -----------------------------------

def fit_mse_sgd():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["accuracy"])
    model.fit(x, np.eye(10, dtype="float32")[y], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_sum_over_batch_sgd(optimizer: str = "sgd"):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.05) if optimizer == "sgd" else keras.optimizers.Adam(1e-3)
    acc = keras.metrics.Accuracy()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            out = model(xb, training=True)
            loss = tf.reduce_sum(tf.square(out - tf.one_hot(yb, 10))) / BATCH
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return out

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        out = train_step(xb, yb)
        acc.update_state(yb, tf.argmax(out, axis=1))


def fit_mse_adam():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, np.eye(10, dtype="float32")[y], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_sum_over_batch_adam():
    tape_sum_over_batch_sgd("adam")


# --- seeds 000/003: BatchNormalization and Dropout outside training mode ---------------

def fit_bn_dropout():
    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_bn_dropout_no_training_flag():
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            logits = model(tf.stop_gradient(xb))  # training= forgotten
            loss = loss_fn(yb, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_bn_dropout_training(run_eagerly: bool = True):
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    step = step if run_eagerly else tf.function(step)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def fit_bn_dropout_xla():
    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


# --- equivalent pairs ------------------------------------------------------------------

def fit_digits_sgd_sparse(shuffle: bool = False):
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=shuffle, verbose=0)


def tape_digits_sgd_sparse():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def _tape_digits_dataset(shuffle: bool):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=3)
    ds = ds.batch(BATCH).take(STEPS)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for xb, yb in ds:
        train_step(xb, yb)


def tape_digits_dataset():
    _tape_digits_dataset(shuffle=False)


def tape_digits_dataset_shuffled():
    _tape_digits_dataset(shuffle=True)


def _iris_tape(use_function: bool):
    import tensorflow as tf

    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, hidden=16)
    opt = keras.optimizers.Adam(0.01)

    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    if use_function:
        train_step = tf.function(train_step)
    for xb, yb in data.batches(x, y, 16, 16):
        train_step(xb, yb)


def iris_eager():
    _iris_tape(False)


def iris_tf_function():
    _iris_tape(True)


def _fit_classification(jit: bool):
    keras = _keras()
    x, y = data.classification()
    model = _mlp(20, 1, activation="sigmoid", seed=5)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy", jit_compile=jit)
    n = STEPS * BATCH
    model.fit(x[:n], y[:n].reshape(-1, 1).astype("float32"), batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)


def fit_no_xla():
    _fit_classification(False)


def fit_xla():
    _fit_classification(True)


def custom_train_step_fit():
    import tensorflow as tf

    keras = _keras()

    class Classifier(keras.Model):
        def train_step(self, data_):
            xb, yb = data_
            with tf.GradientTape() as tape:
                logits = self(xb, training=True)
                loss = self.compute_loss(x=xb, y=yb, y_pred=logits)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    x, y = _digits_slice()
    keras.utils.set_random_seed(7)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    model = Classifier(inputs, keras.layers.Dense(10)(h))
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def plain_fit_functional():
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(7)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _initial_weights(shapes):
    rng = np.random.default_rng(21)
    return [rng.normal(0, 0.2, s).astype("float32") for s in shapes]


def _fit_flavour(lib):
    x, y = _digits_slice()
    model = lib.Sequential([lib.layers.Dense(24, activation="tanh", input_shape=(64,)), lib.layers.Dense(10)])
    model.set_weights(_initial_weights([w.shape for w in model.get_weights()]))
    model.compile(optimizer=lib.optimizers.SGD(0.05),
                  loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_keras3():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input_shape= on a layer: written as tf-keras users do
        _fit_flavour(_keras())


def fit_tf_keras():
    import tf_keras

    _fit_flavour(tf_keras)


# --- seed 001: a tf.function-wrapped loss with targets that do not sum to 1 ---------------

def _seed001(decorated: bool):
    import tensorflow as tf

    keras = _keras()
    x, y = data.iris()
    weights = tf.constant([1.0, 1.0, 0.1])[tf.newaxis, :]

    def customloss(y_true, y_pred):
        y_true_one_hot = tf.one_hot(tf.cast(y_true, tf.uint8), 3)
        return tf.reduce_mean(keras.losses.categorical_crossentropy(y_true_one_hot * weights, y_pred))

    loss_fn = tf.function(customloss) if decorated else customloss
    keras.utils.set_random_seed(42)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    opt = keras.optimizers.RMSprop(1e-2)
    for xb, yb in data.batches(x, y, 25, 12):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def loss_plain():
    _seed001(False)


def loss_decorated():
    _seed001(True)


# --- other mistakes ----------------------------------------------------------------------

def _l2_net():
    keras = _keras()
    keras.utils.set_random_seed(3)
    reg = keras.regularizers.L2(1e-2)
    return keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=reg),
        keras.layers.Dense(1, kernel_regularizer=reg),
    ])


def fit_l2():
    keras = _keras()
    x, y = data.regression()
    model = _l2_net()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH].reshape(-1, 1), batch_size=BATCH, epochs=1,
              shuffle=False, verbose=0)


def tape_l2_forgotten():
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    model = _l2_net()
    opt = keras.optimizers.SGD(0.01)
    mse = keras.losses.MeanSquaredError()
    for xb, yb in data.batches(x, y.reshape(-1, 1), BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = mse(yb, model(xb, training=True))  # + sum(model.losses) forgotten
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_regression_mse():
    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_regression_broadcast():
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-2)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)  # (32, 1) against labels (32,)
            loss = tf.reduce_mean(tf.square(yb - pred))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_class_weight(weighted: bool = True):
    keras = _keras()
    x, y = data.classification(classes=2)
    model = _mlp(20, 2, seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = STEPS * BATCH
    model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              class_weight={0: 1.0, 1: 4.0} if weighted else None)


def fit_unweighted():
    fit_class_weight(False)


def fit_metric_sparse():
    _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:144], y[:144], batch_size=16, epochs=1, shuffle=False, verbose=0)


def fit_metric_onehot():
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:144], keras.utils.to_categorical(y[:144], 3), batch_size=16, epochs=1, shuffle=False,
              verbose=0)


def tape_optimizer_each_step():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, 5):
        opt = keras.optimizers.Adam(1e-3)  # a new optimizer every step: state and iterations reset
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_digits_adam():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_digits_momentum():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_per_sample_loss():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)  # (32,)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_clip_per_variable():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.clip_by_norm(g, 0.05) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_head_only():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    head = model.layers[-1]
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, head.trainable_weights)  # only the last layer's weights
        opt.apply_gradients(zip(grads, head.trainable_weights))


def tape_numpy_roundtrip():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    hidden, head = model.layers[:2], model.layers[2]
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            h = xb
            for layer in hidden:
                h = layer(h, training=True)
            h = tf.constant(np.asarray(h))  # numpy round trip: the tape loses the first layers
            loss = loss_fn(yb, head(h, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


def tape_log_of_linear():
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-2)
    y = np.abs(y).reshape(-1, 1)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = tf.reduce_mean(tf.square(tf.math.log(1.0 + pred) - tf.math.log(1.0 + yb)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_msle():
    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="msle")
    n = STEPS * BATCH
    model.fit(x[:n], np.abs(y[:n]).reshape(-1, 1), batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_other_seed():
    keras = _keras()
    x, y = data.digits()
    rng = np.random.default_rng(5)
    order = rng.permutation(len(x))[: STEPS * BATCH]
    keras.utils.set_random_seed(99)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_zeroed_gradients():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    frozen = {id(v) for v in model.layers[0].trainable_variables}  # "freeze" the first layer
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.zeros_like(g) if id(v) in frozen else g for g, v in zip(grads, model.trainable_variables)]
        opt.apply_gradients(zip(grads, model.trainable_variables))


def _separable():
    x, y = data.iris()
    return x * 4.0, (y == 0).astype("float32").reshape(-1, 1)


def _logistic():
    keras = _keras()
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])


def fit_bce_saturating():
    keras = _keras()
    x, y = _separable()
    model = _logistic()
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss="binary_crossentropy")
    model.fit(x[:120], y[:120], batch_size=10, epochs=1, shuffle=False, verbose=0)


def tape_hand_log_loss():
    import tensorflow as tf

    keras = _keras()
    x, y = _separable()
    model = _logistic()
    opt = keras.optimizers.SGD(5.0)
    for xb, yb in data.batches(x, y, 10, 12):
        with tf.GradientTape() as tape:
            p = model(xb, training=True)
            loss = -tf.reduce_mean(yb * tf.math.log(p) + (1 - yb) * tf.math.log(1 - p))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_bn_frozen():
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification()
    model = _bn_dropout_net(20, 2)
    model.layers[1].trainable = False  # a fine-tuning habit: freeze BatchNormalization
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


# --- loss denominators: sum(weights) and a mask's valid entries -------------------------

def fit_sample_weighted():
    keras = _keras()
    x, y = data.classification(classes=2)
    w = data.sample_weights(len(x))
    model = _mlp(20, 2, seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = STEPS * BATCH
    model.fit(x[:n], y[:n], sample_weight=w[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_weighted_mean_by_hand():
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification(classes=2)
    w = data.sample_weights(len(x))
    model = _mlp(20, 2, seed=4)
    opt = keras.optimizers.SGD(0.05)
    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        xb, yb, wb = x[sl], y[sl], w[sl]
        with tf.GradientTape() as tape:
            per_sample = keras.losses.sparse_categorical_crossentropy(yb, model(xb, training=True),
                                                                     from_logits=True)
            loss = tf.reduce_sum(per_sample * wb) / tf.reduce_sum(wb)  # a weighted mean
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def _tagger():
    keras = _keras()
    keras.utils.set_random_seed(13)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(20, 8, mask_zero=True),
        keras.layers.LSTM(16, return_sequences=True),
        keras.layers.Dense(3),
    ])


def fit_masked_tagger():
    keras = _keras()
    x, y = data.tagged_sequences()
    model = _tagger()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = STEPS * BATCH
    model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_masked_mean_over_all():
    import tensorflow as tf

    keras = _keras()
    x, y = data.tagged_sequences()
    model = _tagger()
    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            per_token = keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
            mask = tf.cast(tf.not_equal(xb, 0), per_token.dtype)
            loss = tf.reduce_mean(per_token * mask)  # padding excluded, but divided by every entry
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


# --- per-output loss weights: compile(loss_weights=...) vs an unweighted sum --------------

def _two_heads():
    keras = _keras()
    keras.utils.set_random_seed(21)
    inp = keras.Input((20,))
    h = keras.layers.Dense(24, activation="relu")(inp)
    cls = keras.layers.Dense(2, name="label")(h)
    reg = keras.layers.Dense(1, name="score")(h)
    return keras.Model(inp, [cls, reg])


def _two_head_data():
    x, y = data.classification(classes=2)
    score = (x[:, :3].sum(axis=1, keepdims=True) / 3.0).astype("float32")
    return x, y, score


def fit_loss_weights():
    keras = _keras()
    x, y, score = _two_head_data()
    model = _two_heads()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        keras.losses.MeanSquaredError()],
                  loss_weights=[1.0, 0.2])
    n = STEPS * BATCH
    model.fit(x[:n], [y[:n], score[:n]], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_loss_weights_forgotten():
    import tensorflow as tf

    keras = _keras()
    x, y, score = _two_head_data()
    model = _two_heads()
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(xb, yb, sb):
        with tf.GradientTape() as tape:
            logits, pred = model(xb, training=True)
            loss = ce(yb, logits) + mse(sb, pred)  # the 0.2 on the score head is gone
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        train_step(x[sl], y[sl], score[sl])


# --- mixed precision: the loss scale in one run only ------------------------------------

def _mixed(script):
    keras = _keras()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        script()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def fit_mixed_precision():
    _mixed(fit_digits_sgd_sparse)  # compile() wraps the optimizer in a LossScaleOptimizer


def tape_mixed_precision_unscaled():
    _mixed(tape_digits_sgd_sparse)  # a plain optimizer: small float16 gradients underflow


# --- fit() shuffles by default; a hand-written loop walks the data in order --------------

def fit_digits_shuffled():
    fit_digits_sgd_sparse(shuffle=True)  # what fit() does when shuffle is not given


# --- inputs scaled differently: x/16 forgotten in one run ---------------------------------

def fit_digits_unnormalised():
    keras = _keras()
    x, y = _digits_slice()
    x = x * 16.0  # the raw pixel values: the /16 of the other run forgotten
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_iris_centred_differently():
    """Iris standardised in one run, min-max scaled to [-1, 1] overall in the other: an
    affine map (x*k + c, one k and c for every feature) of the first run's inputs."""
    keras = _keras()
    x, y = data.iris()
    x = (x - x.min()) / (x.max() - x.min()) * 2.0 - 1.0
    model = _mlp(4, 3, hidden=16)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:144], y[:144], batch_size=16, epochs=1, shuffle=False, verbose=0)


def fit_iris():
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, hidden=16)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:144], y[:144], batch_size=16, epochs=1, shuffle=False, verbose=0)


# --- the same gradients applied twice per batch -------------------------------------------

def tape_applied_twice():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        opt.apply_gradients(zip(grads, model.trainable_variables))  # pasted twice
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def tape_step_called_twice():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)
        loss = train_step(xb, yb)  # meant to log the loss: steps the optimizer again  # noqa: F841


# --- regularization: a hand-written penalty with another factor, or added twice -----------

def tape_l2_by_hand_other_factor():
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([  # the same net as _l2_net without kernel_regularizer
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    opt = keras.optimizers.SGD(0.01)
    mse = keras.losses.MeanSquaredError()
    kernels = [layer.kernel for layer in model.layers]
    for xb, yb in data.batches(x, y.reshape(-1, 1), BATCH, STEPS):
        with tf.GradientTape() as tape:
            # L2(1e-2) is 1e-2 * sum(w^2); tf.nn.l2_loss halves it: 5e-3 * sum(w^2)
            loss = mse(yb, model(xb, training=True)) + 1e-2 * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_l2_train_step_adds_twice():
    import tensorflow as tf

    keras = _keras()

    class Regressor(keras.Sequential):
        def train_step(self, data_):
            xb, yb = data_
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                # compute_loss already adds self.losses; added again by hand
                loss = self.compute_loss(x=xb, y=yb, y_pred=pred) + tf.add_n(self.losses)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    x, y = data.regression()
    keras.utils.set_random_seed(3)
    reg = keras.regularizers.L2(1e-2)
    model = Regressor([
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=reg),
        keras.layers.Dense(1, kernel_regularizer=reg),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH].reshape(-1, 1), batch_size=BATCH, epochs=1,
              shuffle=False, verbose=0)


# --- a metric class that cannot fit the label encoding -------------------------------------

def fit_metric_accuracy_class():
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="categorical_crossentropy",
                  metrics=[keras.metrics.Accuracy()])  # compares one-hot labels with probabilities
    model.fit(x[:144], keras.utils.to_categorical(y[:144], 3), batch_size=16, epochs=1, shuffle=False,
              verbose=0)


def fit_metric_categorical_on_onehot():
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["categorical_accuracy"])
    model.fit(x[:144], keras.utils.to_categorical(y[:144], 3), batch_size=16, epochs=1, shuffle=False,
              verbose=0)


def fit_metric_categorical_on_sparse():  # the labels made integer, the metric kept
    _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["categorical_accuracy"])
    model.fit(x[:144], y[:144], batch_size=16, epochs=1, shuffle=False, verbose=0)


def fit_metric_binary_on_multiclass():
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, activation="softmax", hidden=16)
    model.compile(optimizer="adam", loss="categorical_crossentropy",
                  metrics=["binary_accuracy"])  # scores each of the 3 outputs as a yes/no question
    model.fit(x[:144], keras.utils.to_categorical(y[:144], 3), batch_size=16, epochs=1, shuffle=False,
              verbose=0)


# --- gradients zipped with the variables in another order ---------------------------------

def _twin_hidden():
    """Two hidden layers of the same shape: their variables fit each other's gradients."""
    keras = _keras()
    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def fit_twin_hidden():
    keras = _keras()
    x, y = _digits_slice()
    model = _twin_hidden()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_grads_zipped_reordered(function: bool = True):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _twin_hidden()
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # the variables to update, written out layer by layer: the hidden layers the wrong way round
    hidden_1, hidden_2, head = model.layers
    var_list = hidden_2.trainable_variables + hidden_1.trainable_variables + head.trainable_variables

    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, var_list))

    step = tf.function(train_step) if function else train_step
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_grads_zipped_reordered_eager():
    tape_grads_zipped_reordered(function=False)


def fit_digits_rescaled_in_model():
    """Raw pixel values, scaled by the model's first layer: the same training as x/16 outside."""
    keras = _keras()
    x, y = _digits_slice()
    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Rescaling(1.0 / 16.0),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x * 16.0, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_full_batch():
    """Full-batch training: every step on the same (whole) dataset, which is not a repeat."""
    import tensorflow as tf

    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 3, hidden=16)
    opt = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(6):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def _tape_l2_hand_mse(factor: float):
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(3)
    reg = keras.regularizers.L2(factor)
    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=reg),
        keras.layers.Dense(1, kernel_regularizer=reg),
    ])
    opt = keras.optimizers.SGD(0.01)
    for xb, yb in data.batches(x, y.reshape(-1, 1), BATCH, STEPS):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = tf.reduce_mean(tf.square(yb - pred)) + tf.add_n(model.losses)  # no Keras loss object
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def tape_l2_hand_mse():
    _tape_l2_hand_mse(1e-2)


def tape_l2_hand_mse_weaker():
    _tape_l2_hand_mse(1e-3)  # a tenth of the other run's regularization


# --- Keras loss functions (not objects) called in the tape --------------------------------

def _tape_digits_loss_function(loss_of):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_of(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def tape_loss_function_logits_forgotten():
    import tensorflow as tf

    keras = _keras()
    # the model outputs logits; the function's default from_logits=False treats them as probabilities
    _tape_digits_loss_function(lambda yb, out: tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, out)))


def tape_loss_function_summed():
    import tensorflow as tf

    keras = _keras()
    _tape_digits_loss_function(lambda yb, out: tf.reduce_sum(
        keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True)))


def tape_loss_function_mean():
    import tensorflow as tf

    _tape_digits_loss_function(lambda yb, out: tf.reduce_mean(
        tf.keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True)))


# --- the wrong loss differentiated in a two-output model -----------------------------------

def fit_two_outputs():
    keras = _keras()
    x, y, score = _two_head_data()
    model = _two_heads()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        keras.losses.MeanSquaredError()])
    n = STEPS * BATCH
    model.fit(x[:n], [y[:n], score[:n]], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _tape_two_outputs(loss_of, function: bool = True):
    import tensorflow as tf

    keras = _keras()
    x, y, score = _two_head_data()
    model = _two_heads()
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mse = keras.losses.MeanSquaredError()

    def train_step(xb, yb, sb):
        with tf.GradientTape() as tape:
            target = loss_of(model(xb, training=True), yb, sb, ce, mse)
        grads = tape.gradient(target, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    step = tf.function(train_step) if function else train_step
    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        step(x[sl], y[sl], score[sl])


def tape_one_output_loss_differentiated(function: bool = True):
    def loss_of(outputs, yb, sb, ce, mse):
        logits, pred = outputs
        label_loss = ce(yb, logits)
        score_loss = mse(sb, pred)
        loss = label_loss + score_loss  # noqa: F841  (logged; the total was meant to be differentiated)
        return label_loss

    _tape_two_outputs(loss_of, function)


def tape_one_output_loss_differentiated_eager():
    tape_one_output_loss_differentiated(function=False)



def tape_two_optimizers_one_batch():
    """Two optimizers take turns on each batch (body, then head, as a GAN's two players do):
    consecutive steps on one batch that are not a repeat."""
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    body = [v for layer in model.layers[:2] for v in layer.trainable_variables]
    head = model.layers[2].trainable_variables
    opt_body, opt_head = keras.optimizers.SGD(0.1), keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        for opt, variables in ((opt_body, body), (opt_head, head)):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables))


# --- tf.stop_gradient around an intermediate: the layers below it are not trained ----------

def _encoder_head(stop: bool):
    import tensorflow as tf

    keras = _keras()

    class EncoderHead(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = keras.Sequential([keras.layers.Dense(32, activation="relu"),
                                             keras.layers.Dense(16, activation="relu")])
            self.head = keras.layers.Dense(10)

        def call(self, x, training=None):
            h = self.encoder(x, training=training)
            if stop:  # copied from a fine-tuning recipe that freezes the features
                h = tf.stop_gradient(h)
            return self.head(h)

    keras.utils.set_random_seed(17)
    model = EncoderHead()
    model(np.zeros((1, 64), "float32"))
    return model


def fit_encoder_head():
    keras = _keras()
    x, y = _digits_slice()
    model = _encoder_head(stop=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _tape_encoder_head(zeros_for_none: bool):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _encoder_head(stop=True)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if zeros_for_none:  # silences Keras' "Gradients do not exist" warning
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables)]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def tape_stop_gradient_intermediate():
    _tape_encoder_head(zeros_for_none=False)


def tape_stop_gradient_zero_gradients():
    _tape_encoder_head(zeros_for_none=True)


def tape_hand_mse_hand_penalty():
    """Regularization by hand on an unregularized model, with half the other run's factor."""
    import tensorflow as tf

    keras = _keras()
    x, y = data.regression()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)
    kernels = [layer.kernel for layer in model.layers]
    for xb, yb in data.batches(x, y.reshape(-1, 1), BATCH, STEPS):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            penalty = 1e-2 * tf.add_n([tf.nn.l2_loss(k) for k in kernels])  # half of L2(1e-2)
            loss = tf.reduce_mean(tf.square(yb - pred)) + penalty
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


def fit_multilabel_accuracy():
    """Three independent yes/no labels per example: "accuracy" resolves to CategoricalAccuracy."""
    keras = _keras()
    x, y = data.classification(classes=2)
    labels = np.stack([y, 1 - y, (x[:, 0] > 0).astype("int32")], axis=1).astype("float32")
    model = _mlp(20, 3, activation="sigmoid")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    n = STEPS * BATCH
    model.fit(x[:n], labels[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


# --- a two-input model: fit() on a dict vs a loop that swaps the inputs ---------------------

def _two_input_data():
    x, y = data.classification(n=STEPS * BATCH, features=12)
    return x[:, :6], x[:, 6:], y


def _two_inputs():
    keras = _keras()
    keras.utils.set_random_seed(4)
    ia, ib = keras.Input((6,), name="num"), keras.Input((6,), name="aux")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(ia),
                                    keras.layers.Dense(8, activation="relu")(ib)])
    return keras.Model({"num": ia, "aux": ib}, keras.layers.Dense(2)(h))


def fit_two_inputs():
    keras = _keras()
    xa, xb, y = _two_input_data()
    model = _two_inputs()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit({"num": xa, "aux": xb}, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _tape_two_inputs(swap: bool):
    import tensorflow as tf

    keras = _keras()
    xa, xb, y = _two_input_data()
    model = _two_inputs()
    opt = keras.optimizers.Adam(3e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(num, aux, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model({"num": num, "aux": aux}, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    first, second = (xb, xa) if swap else (xa, xb)
    for i in range(0, STEPS * BATCH, BATCH):
        train_step(first[i:i + BATCH], second[i:i + BATCH], y[i:i + BATCH])


def tape_two_inputs():
    _tape_two_inputs(swap=False)


def tape_two_inputs_swapped():
    _tape_two_inputs(swap=True)


# --- per-sample weights as the third element of a tf.data dataset's batches ---------------

def _weighted_dataset():
    import tensorflow as tf

    x, y = data.classification(classes=2)
    n = STEPS * BATCH
    return tf.data.Dataset.from_tensor_slices((x[:n], y[:n], data.sample_weights(n))).batch(BATCH)


def fit_dataset_sample_weights():
    keras = _keras()
    model = _mlp(20, 2, seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_weighted_dataset(), epochs=1, verbose=0)


def tape_dataset_weights_forgotten():
    import tensorflow as tf

    keras = _keras()
    model = _mlp(20, 2, seed=4)
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb, _w in _weighted_dataset():
        train_step(xb, yb)


def tape_weighted_mean_by_hand_none_reduction():
    """The weighted mean by hand over a loss object's reduction='none' per-sample losses."""
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification(classes=2)
    w = data.sample_weights(len(x))
    model = _mlp(20, 2, seed=4)
    opt = keras.optimizers.SGD(0.05)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def train_step(xb, yb, wb):
        with tf.GradientTape() as tape:
            per_sample = ce(yb, model(xb, training=True))
            loss = tf.reduce_sum(per_sample * wb) / tf.reduce_sum(wb)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        train_step(x[sl], y[sl], w[sl])


# --- per-feature standardisation (scikit-learn's StandardScaler) in one run only, or in the model ----

WINE_STEPS = 5


def _wine_net():
    return _mlp(13, 3)


def _standardised(x):
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(x).astype("float32")


def fit_wine_standardised():
    keras = _keras()
    x, y = data.wine()
    model = _wine_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_standardised(x), y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _tape_wine(x, y):
    import tensorflow as tf

    keras = _keras()
    model = _wine_net()
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, WINE_STEPS):
        train_step(xb, yb)


def tape_wine_raw():  # the scaler forgotten: raw columns from ~0.1 to ~1000
    _tape_wine(*data.wine())


def tape_wine_standardised():
    x, y = data.wine()
    _tape_wine(_standardised(x), y)


def fit_wine_normalization_layer():  # the scaling in the model: raw data, a Normalization layer adapted on it
    keras = _keras()
    x, y = data.wine()
    norm = keras.layers.Normalization()
    norm.adapt(x)
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((13,)), norm, keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


# --- AdamW's weight decay meant as the L2 regularizers another run adds to its loss ---------

def _l2_mlp(l2: float | None):
    keras = _keras()
    keras.utils.set_random_seed(7)

    def reg():
        return keras.regularizers.L2(l2) if l2 else None

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu", kernel_regularizer=reg()),
        keras.layers.Dense(10, kernel_regularizer=reg()),
    ])


def fit_digits_adamw():
    keras = _keras()
    x, y = _digits_slice()
    model = _l2_mlp(None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_digits_adam_l2():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _l2_mlp(5e-3)
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True)) + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


# --- targets transformed in one run only: a standardised regression target, class indices from 1 ----

def _diabetes_raw(n: int = STEPS * BATCH):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return (d.data[:n] * 10).astype("float32"), d.target[:n].astype("float32")[:, None]


def fit_diabetes_raw_target():
    keras = _keras()
    x, y = _diabetes_raw()
    model = _mlp(10, 1)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_diabetes_standardised_target():
    import tensorflow as tf

    keras = _keras()
    x, y = _diabetes_raw()
    y = (y - y.mean()) / y.std()  # standardised here only
    model = _mlp(10, 1)
    opt = keras.optimizers.SGD(1e-3)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def _iris_four_units(shift: int):
    keras = _keras()
    x, y = data.iris()
    model = _mlp(4, 4, hidden=16)  # sized for class indices up to 3
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:128], y[:128] + shift, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_iris_labels_from_0():
    _iris_four_units(0)


def fit_iris_labels_from_1():  # the CSV's 1..3 kept
    _iris_four_units(1)


# --- gradient accumulation: the optimizer's (gradient_accumulation_steps=2) vs by hand ------------

def fit_digits_accumulated():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH // 2, epochs=1, shuffle=False, verbose=0)


def _tape_accumulated(average: bool):
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = None
    for i, (xb, yb) in enumerate(data.batches(x, y, BATCH // 2, 2 * STEPS)):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        acc = grads if acc is None else [s + g for s, g in zip(acc, grads)]
        if i % 2 == 1:
            opt.apply_gradients(zip([s / 2 for s in acc] if average else acc, model.trainable_variables))
            acc = None


def tape_accumulated_by_hand():
    _tape_accumulated(True)


def tape_accumulated_summed():  # the sum of the two micro-batch gradients applied
    _tape_accumulated(False)


# --- a custom train_step that drops the sample weights fit() hands it ----------------------------

def _fit_digits_weighted(model):
    keras = _keras()
    x, y = _digits_slice()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, sample_weight=data.sample_weights(len(x)), batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)


def fit_digits_sample_weights():
    _fit_digits_weighted(_mlp(64, 10))


def fit_train_step_drops_weights():
    import tensorflow as tf

    keras = _keras()

    class Net(keras.Sequential):
        def train_step(self, batch):
            xb, yb, _sw = keras.utils.unpack_x_y_sample_weight(batch)
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                loss = self.compute_loss(x=xb, y=yb, y_pred=pred, training=True)  # sample_weight= forgotten
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(7)
    _fit_digits_weighted(Net([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]))


# --- label smoothing in the Keras loss of one run, a hand-written log loss in the other -----------

def fit_bce_label_smoothing():
    keras = _keras()
    x, y = data.classification()
    model = _mlp(20, 1, activation="sigmoid")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.BinaryCrossentropy(label_smoothing=0.2))
    model.fit(x[: STEPS * BATCH], y[: STEPS * BATCH, None].astype("float32"), batch_size=BATCH, epochs=1,
              shuffle=False, verbose=0)


def tape_hand_log_loss_unsmoothed():
    import tensorflow as tf

    keras = _keras()
    x, y = data.classification()
    model = _mlp(20, 1, activation="sigmoid")
    opt = keras.optimizers.SGD(0.05)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            p = tf.clip_by_value(model(xb, training=True), 1e-7, 1 - 1e-7)
            loss = -tf.reduce_mean(yb * tf.math.log(p) + (1 - yb) * tf.math.log(1 - p))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y[:, None].astype("float32"), BATCH, STEPS):
        train_step(xb, yb)


# --- a LearningRateScheduler callback in fit() only (two epochs) ------------------------------

def _digits_two_epochs(callbacks):
    keras = _keras()
    x, y = data.digits(4 * BATCH)
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)


def fit_lr_callback_two_epochs():
    keras = _keras()
    _digits_two_epochs([keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.01)])


def fit_two_epochs():
    _digits_two_epochs([])


# --- mixed precision: a LossScaleOptimizer fed the gradients of the unscaled loss -----------------

def _tape_digits_loss_scale_optimizer():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))  # opt.scale_loss(loss) forgotten
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))  # divides them by the loss scale

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


def tape_loss_scale_optimizer_unscaled_loss():
    _mixed(_tape_digits_loss_scale_optimizer)


# --- a second forward pass in training mode per step (for a metric) draws Dropout's masks again ---

def _dropout_mlp():
    keras = _keras()
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dropout(0.4), keras.layers.Dense(10)])


def fit_dropout_mlp():
    keras = _keras()
    x, y = _digits_slice()
    model = _dropout_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_dropout_metric_forward():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    model = _dropout_mlp()
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        acc.update_state(yb, model(xb, training=True))  # a second forward pass for the metric

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        train_step(xb, yb)


# --- Dropout under Keras 3 and tf-keras: the same weights, random streams of two implementations --

def _fit_flavour_dropout(lib):
    x, y = _digits_slice()
    lib.utils.set_random_seed(5)
    model = lib.Sequential([lib.layers.Dense(24, activation="tanh", input_shape=(64,)), lib.layers.Dropout(0.3),
                            lib.layers.Dense(10)])
    model.set_weights(_initial_weights([w.shape for w in model.get_weights()]))
    model.compile(optimizer=lib.optimizers.SGD(0.05),
                  loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_keras3_dropout():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input_shape= on a layer: written as tf-keras users do
        _fit_flavour_dropout(_keras())


def fit_tf_keras_dropout():
    import tf_keras

    _fit_flavour_dropout(tf_keras)


# --- label smoothing by hand in the targets against label_smoothing= in the loss -------------------

def fit_cce_label_smoothing():
    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    model.fit(x, np.eye(10, dtype="float32")[y], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def tape_cce_smoothed_targets():
    import tensorflow as tf

    keras = _keras()
    x, y = _digits_slice()
    targets = np.eye(10, dtype="float32")[y] * 0.9 + 0.01  # smoothed by hand: y (1 - 0.1) + 0.1 / 10
    model = _mlp(64, 10)
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, targets, BATCH, STEPS):
        train_step(xb, yb)


# --- two regression targets, standardised column by column in one run only ------------------------

def _two_targets():
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=STEPS * BATCH, n_features=10, n_targets=2, noise=1.0, random_state=1)
    return x.astype("float32"), (y * np.array([1.0, 50.0]) + np.array([0.0, 300.0])).astype("float32")


def fit_two_targets_raw():
    keras = _keras()
    x, y = _two_targets()
    model = _mlp(10, 2)
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def fit_two_targets_standardised():
    keras = _keras()
    x, y = _two_targets()
    model = _mlp(10, 2)
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    model.fit(x, ((y - y.mean(0)) / y.std(0)).astype("float32"), batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)
