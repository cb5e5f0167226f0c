# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A fourth set of training scripts as users write them, each through ``tf.keras`` so that it
runs on Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on tf-keras. Same contract as
:mod:`scripts_c`: each returns :class:`Out` with its final weights, the optimizer steps it
counted and, in ``extra``, what the script itself knows about its steps (see check_c.check).

The scripts whose names start with ``mirrored_`` need two logical CPU devices, configured
before TensorFlow initialises (:func:`two_cpus`): they run in a fresh process only.
"""

from __future__ import annotations

import numpy as np

from . import data
from .scripts import Out
from .scripts_c import (
    _BatchLosses,
    _fp,
    _iters,
    _keras,
    _legacy,
    _norm,
    _sizes,
    _tf,
    _vname,
    _weights,
)

B = 16


def two_cpus() -> None:
    """Split the host CPU into two logical devices (before TensorFlow initialises)."""
    tf = _tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _ce():
    return _keras().losses.SparseCategoricalCrossentropy(from_logits=True)


# --- 1. a small transformer block: MultiHeadAttention with a causal mask, LayerNormalization,
#        Dropout, a residual feed-forward, in a tf.function tape loop ------------------------------

def transformer_block_causal_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.sequences(64, length=8, features=4)
    keras.utils.set_random_seed(101)
    inp = keras.Input((8, 4))
    h = keras.layers.Dense(8)(inp)
    mask = np.tril(np.ones((8, 8), bool))[None]
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)(h, h, attention_mask=mask)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dropout(0.1)(att))
    ff = keras.layers.Dense(8)(keras.layers.Dense(16, activation="relu")(h))
    h = keras.layers.LayerNormalization()(h + ff)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out)
    opt = keras.optimizers.Adam(3e-3)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[2])

    losses, grads, xs = [], [], []
    for _ in range(2):
        for i in range(0, 64, B):
            loss, gn = step(x[i:i + B], y[i:i + B])
            grads.append((len(losses), _vname(model.trainable_variables[2]), float(gn)))
            losses.append(float(loss))
            xs.append(_fp(x[i:i + B]))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "x_fp": xs,
                                              "modes": {"dropout": True}})


# --- 2. Embedding gradients (IndexedSlices, repeated ids in a batch) clipped by hand with
#        tf.clip_by_global_norm in an eager tape loop -------------------------------------------

def embedding_repeated_ids_clip_global_norm_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.tokens(64, length=10, vocab=12)  # 12 ids, 160 tokens a batch: every id repeats
    keras.utils.set_random_seed(102)
    model = keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(12, 4),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    opt = keras.optimizers.SGD(0.5)
    ce = _ce()
    losses, grads = [], []
    for i in range(0, 64, B):
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        assert isinstance(g[0], tf.IndexedSlices)
        g, _ = tf.clip_by_global_norm(g, 0.05)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        grads.append((len(losses), _vname(model.trainable_variables[1]), _norm(g[1])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 3. MirroredStrategy over two logical CPUs, fit() -----------------------------------------

def mirrored_fit_two_replicas():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(103)
        model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_ce())
    model.fit(x[:128], y[:128], batch_size=32, epochs=2, shuffle=False, verbose=0)
    return Out(_weights(model), _iters(model.optimizer),
               {"run_warnings": ["replicas in sync"], "meta": {"strategy": "MirroredStrategy", "replicas": 2}})


# --- 4. MirroredStrategy over two logical CPUs, strategy.run in a custom loop, LayerNormalization
#        and Dropout, a Keras loss with reduction "none" averaged by compute_average_loss ----------

def mirrored_strategy_run_custom_loop():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    gb = 32
    with strategy.scope():
        keras.utils.set_random_seed(104)
        model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8), keras.layers.LayerNormalization(),
                                  keras.layers.ReLU(), keras.layers.Dropout(0.1), keras.layers.Dense(3)])
        opt = keras.optimizers.SGD(0.1)  # Keras 3: momentum or Adam raise here, untraced too
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(gb))

    @tf.function
    def step(xb, yb):
        def replica(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(ce(yb, model(xb, training=True)), global_batch_size=gb)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(replica, args=(xb, yb)), axis=None)

    losses = []
    for _ in range(2):
        for xb, yb in ds:
            losses.append(float(step(xb, yb)))
    return Out(_weights(model), _iters(opt), {"losses": losses, "run_warnings": ["replicas in sync"],
                                              "modes": {"dropout": True}, "batch_sizes": [gb // 2] * 8,
                                              "meta": {"strategy": "MirroredStrategy", "replicas": 2}})


# --- 5. one Dense applied twice in a row (tied weights) and a shared embedding of two inputs,
#        functional model, tape in a tf.function ------------------------------------------------

def tied_layer_applied_twice_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(105)
    inp = keras.Input((10,))
    tied = keras.layers.Dense(10, activation="tanh", name="tied")
    h = tied(tied(inp))
    out = keras.layers.Dense(1, name="head")(h)
    model = keras.Model(inp, out)
    opt = keras.optimizers.RMSprop(3e-3)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True)[:, 0] - yb))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), "tied/kernel" if not _legacy() else _vname(model.trainable_variables[0]),
                      float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 6. nested models two levels deep (a Sequential inside a functional block inside the
#        model), one inner layer frozen, BatchNormalization inside, fit() --------------------------

def nested_models_partly_frozen_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(106)
    inner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name="inner_a"),
                              keras.layers.BatchNormalization(name="inner_bn"),
                              keras.layers.Dense(16, activation="relu", name="inner_b")], name="inner")
    binp = keras.Input((64,))
    block = keras.Model(binp, keras.layers.Dropout(0.1, name="block_drop")(inner(binp)), name="block")
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(10, name="top")(block(inp)))
    inner.get_layer("inner_a").trainable = False
    inner.get_layer("inner_bn").trainable = False
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    n = _iters(model.optimizer)
    return Out(_weights(model), n,
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "modes": {"inner_bn": True, "block_drop": True},
                "state": {"moving_mean": False},
                "frozen": {"inner_bn": [True] * n, "block_drop": [False] * n},
                "unchanged": ["inner_a/kernel", "inner_bn/gamma"],
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 7. three outputs, a list of losses and loss_weights, fit() -----------------------------

def three_outputs_loss_weights_fit():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(107)
    inp = keras.Input((13,))
    h = keras.layers.Dense(12, activation="relu")(inp)
    a = keras.layers.Dense(3, name="cls")(h)
    b = keras.layers.Dense(1, name="reg")(h)
    c = keras.layers.Dense(1, name="bin")(h)
    model = keras.Model(inp, [a, b, c])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=[_ce(), keras.losses.MeanSquaredError(), keras.losses.BinaryCrossentropy(from_logits=True)],
                  loss_weights=[1.0, 0.5, 2.0])
    ys = [y, x[:, :1] * 0.5, (y == 1).astype("float32")[:, None]]
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], [t[:128] for t in ys], batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "y_fp": [_fp(*[t[i:i + 32] for t in ys]) for i in range(0, 128, 32)],
                "meta": {"loss.loss_weights": [1.0, 0.5, 2.0],
                         "loss.class": "SparseCategoricalCrossentropy"}})


# --- 8. train_on_batch with sample weights, test_on_batch and predict_on_batch in between -----

def train_on_batch_with_test_and_predict():
    keras = _keras()
    x, y = data.breast_cancer(160)
    keras.utils.set_random_seed(108)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adagrad(0.05), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    sw = np.where(y > 0, 1.0, 3.0).astype("float32")
    losses, ws = [], []
    for i in range(0, 128, B):
        res = model.train_on_batch(x[i:i + B], y[i:i + B], sample_weight=sw[i:i + B])
        losses.append(float(res if np.ndim(res) == 0 else res[0]))
        ws.append(float(sw[i:i + B].sum()))
        if i % 32 == 0:
            model.test_on_batch(x[128:], y[128:])
            model.predict_on_batch(x[128:])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": losses, "weight_sum0": ws[0], "modes": {"dropout": True},
                "x_fp": [_fp(x[i:i + B]) for i in range(0, 128, B)]})


# --- 9. a custom train_step using compute_loss and compute_metrics, sample weights unpacked with
#        keras.utils.unpack_x_y_sample_weight -----------------------------------------------------

def train_step_compute_loss_and_metrics():
    tf = _tf()
    keras = _keras()
    legacy = _legacy()
    x, y = data.wine()

    class Net(keras.Model):
        def train_step(self, batch):
            xb, yb, sw = keras.utils.unpack_x_y_sample_weight(batch)
            with tf.GradientTape() as tape:
                pred = self(xb, training=True)
                if legacy:
                    loss = self.compute_loss(xb, yb, pred, sw)
                else:
                    loss = self.compute_loss(x=xb, y=yb, y_pred=pred, sample_weight=sw)
            g = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(g, self.trainable_variables))
            return self.compute_metrics(xb, yb, pred, sw)

    keras.utils.set_random_seed(109)
    inp = keras.Input((13,))
    h = keras.layers.Dropout(0.1)(keras.layers.Dense(10, activation="relu")(inp))
    model = Net(inp, keras.layers.Dense(3)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5), loss=_ce(), metrics=["accuracy"])
    sw = np.linspace(0.5, 1.5, 128).astype("float32")
    model.fit(x[:128], y[:128], sample_weight=sw, batch_size=32, epochs=2, shuffle=False, verbose=0)
    return Out(_weights(model), _iters(model.optimizer),
               {"modes": {"dropout": True}, "weight_sum0": float(sw[:32].sum()),
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] * 2,
                "meta": {"loss.class": "SparseCategoricalCrossentropy", "fit.sample_weight": True}})


# --- 10. mixed_float16 with an explicit LossScaleOptimizer in an EAGER tape loop, the first
#         steps overflowing (an initial scale far too high): skipped steps ---------------------

def loss_scale_optimizer_eager_overflow():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(110)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, dtype="float32")])
        opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=2.0 ** 22)
        ce = _ce()
        losses, skipped, grads = [], [], []
        for i in range(0, 128, 8):
            before = np.array(model.trainable_variables[0])
            with tf.GradientTape() as tape:
                loss = ce(y[i:i + 8], model(x[i:i + 8], training=True))
                scaled = opt.get_scaled_loss(loss) if _legacy() else opt.scale_loss(loss)
            g = tape.gradient(scaled, model.trainable_variables)
            if _legacy():
                g = opt.get_unscaled_gradients(g)
                gn = _norm(tf.cast(g[0], tf.float32))
            else:  # Keras 3's apply divides them by the scale in effect itself
                gn = _norm(tf.cast(g[0], tf.float32)) / float(scaled / loss)  # a power of two: exact
            opt.apply_gradients(zip(g, model.trainable_variables))
            skipped.append(bool(np.array_equal(before, np.array(model.trainable_variables[0]))))
            if not skipped[-1]:
                grads.append((len(losses), _vname(model.trainable_variables[0]), gn))
            losses.append(float(loss))
    finally:
        keras.mixed_precision.set_global_policy(prev)
    assert any(skipped) and not all(skipped), skipped
    return Out(_weights(model), len(losses), {"losses": losses, "loss_scaled": True, "skipped": skipped,
                                              "grads": grads})


# --- 11. one optimizer stepping a subset of the variables, later a different subset (Keras 3:
#         built on all, apply(grads, vars); tf-keras: apply_gradients) ---------------------------

def optimizer_apply_changing_subsets():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(128)
    keras.utils.set_random_seed(111)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu", name="body"),
                              keras.layers.Dense(1, name="head")])
    opt = keras.optimizers.Adam(1e-2)
    body, head = model.layers[0].trainable_variables, model.layers[1].trainable_variables
    opt.build(model.trainable_variables)  # both flavours refuse a variable they were not built with
    losses, grads = [], []
    for k, i in enumerate(range(0, 128, B)):
        part = head if k < 4 else body
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x[i:i + B], training=True)[:, 0] - y[i:i + B]))
        g = tape.gradient(loss, part)
        if _legacy():
            opt.apply_gradients(zip(g, part))
        else:
            opt.apply(g, part)
        grads.append((k, _vname(part[0]), _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "not_applied_until": {"body/kernel": 4}})


# --- 12. two optimizers on two parts of one model inside a custom train_step (the compiled one
#         for the body, a second one for the head) ----------------------------------------------

def two_optimizers_in_train_step_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)

    class TwoRates(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = keras.layers.Dense(16, activation="relu")
            self.head = keras.layers.Dense(10)
            self.head_opt = keras.optimizers.SGD(0.2)

        def call(self, inputs, training=False):
            return self.head(self.body(inputs))

        def train_step(self, batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = _ce()(yb, self(xb, training=True))
            bv, hv = self.body.trainable_variables, self.head.trainable_variables
            g = tape.gradient(loss, bv + hv)
            self.optimizer.apply_gradients(zip(g[:len(bv)], bv))
            self.head_opt.apply_gradients(zip(g[len(bv):], hv))
            return {"loss": loss}

    keras.utils.set_random_seed(112)
    model = TwoRates()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    n = 2 * _iters(model.optimizer)
    # each optimizer's step: the tape's gradients of the other part are present, not applied
    return Out(_weights(model), n, {"optimizers": ["Adam", "SGD"],
                                    "applied": {_vname(model.body.kernel): [True, False] * (n // 2),
                                                _vname(model.head.kernel): [False, True] * (n // 2)}})


# --- 13. gradient accumulation by hand: a tf.function adds each micro-batch's gradients into
#         variables, another applies them every 4 micro-batches and zeroes them ------------------

def grad_accumulation_by_hand_two_functions():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(113)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    opt = keras.optimizers.SGD(0.1)
    ce = _ce()
    acc = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]

    @tf.function
    def accumulate(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True)) / 4.0
        for a, g in zip(acc, tape.gradient(loss, model.trainable_variables)):
            a.assign_add(g)
        return loss

    @tf.function
    def apply():
        opt.apply_gradients(zip([a.read_value() for a in acc], model.trainable_variables))
        for a in acc:
            a.assign(tf.zeros_like(a))

    losses, grads = [], []
    for k, i in enumerate(range(0, 128, 8)):
        loss = accumulate(x[i:i + 8], y[i:i + 8])
        if k % 4 == 3:
            grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(acc[0])))
            apply()
            losses.append(float(loss))  # the last micro-batch's
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "x_fp": [_fp(x[i + 24:i + 32]) for i in range(0, 128, 32)]})


# --- 14. a tf.data pipeline (shuffle with a seed, map, cache, prefetch) iterated inside the
#         training tf.function -----------------------------------------------------------------

def tf_data_pipeline_inside_function():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(96)
    keras.utils.set_random_seed(114)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-2)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=7, reshuffle_each_iteration=False)
          .map(lambda a, b: (a * 0.5, tf.reshape(b, [1]))).cache().batch(B).prefetch(2))

    @tf.function
    def epoch():
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        i = 0
        for xb, yb in ds:
            with tf.GradientTape() as tape:
                loss = bce(yb, model(xb, training=True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            losses = losses.write(i, loss)
            i += 1
        return losses.stack()

    losses = []
    for _ in range(2):
        losses.extend(float(v) for v in epoch().numpy())
    batches = [(_fp(a.numpy()), _fp(b.numpy())) for a, b in ds]
    return Out(_weights(model), _iters(opt), {"losses": losses, "x_fp": [b[0] for b in batches] * 2,
                                              "y_fp": [b[1] for b in batches] * 2})


# --- 15. a convolutional autoencoder: Conv2D + MaxPooling down, Conv2DTranspose + UpSampling2D
#         up, fit(x, x) --------------------------------------------------------------------------

def conv_transpose_upsampling_autoencoder_fit():
    keras = _keras()
    x, _ = data.digits_images(96)
    keras.utils.set_random_seed(115)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu"),
        keras.layers.UpSampling2D(1),
        keras.layers.Conv2D(1, 3, padding="same"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    cb = _BatchLosses(_sizes(96, 32))
    model.fit(x, x, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    fps = [_fp(x[i:i + 32]) for i in range(0, 96, 32)] * 2
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "x_fp": fps, "y_fp": fps,
                "meta": {"loss.class": "MeanSquaredError"}})


# --- 16. a MaxNorm kernel constraint (and, where Keras has it, SpectralNormalization with its
#         power-iteration vector), in a tape loop ------------------------------------------------

def constraint_and_spectral_norm_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(116)
    spectral = hasattr(keras.layers, "SpectralNormalization")
    first = keras.layers.Dense(16, activation="relu", kernel_constraint=keras.constraints.MaxNorm(0.5))
    second = keras.layers.Dense(10)
    model = keras.Sequential([keras.Input((64,)), first,
                              keras.layers.SpectralNormalization(second) if spectral else second])
    opt = keras.optimizers.SGD(0.5)
    ce = _ce()
    losses, grads = [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        if _legacy():  # tf-keras optimizers apply constraints in apply_gradients as well
            pass
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
    k = np.array(first.kernel)
    assert np.sqrt((k ** 2).sum(0)).max() <= 0.5 + 1e-5
    extra = {"losses": losses, "grads": grads}
    if spectral:
        extra["state"] = {"vector_u": True}
    return Out(_weights(model), _iters(opt), extra)


# --- 17. no Keras layer at all: a tf.Module with tf.Variables, a non-trainable step counter
#         assigned in the step, Adam, a tf.function tape step --------------------------------------

def tf_module_variables_function():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    tf.random.set_seed(117)

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable(tf.random.normal([13, 8], stddev=0.3), name="w1")
            self.b1 = tf.Variable(tf.zeros([8]), name="b1")
            self.w2 = tf.Variable(tf.random.normal([8, 3], stddev=0.3), name="w2")
            self.seen = tf.Variable(0.0, trainable=False, name="seen")

        def __call__(self, a):
            self.seen.assign_add(tf.cast(tf.shape(a)[0], tf.float32))
            return tf.nn.relu(a @ self.w1 + self.b1) @ self.w2

    net = Mlp()
    opt = keras.optimizers.Adam(2e-2)
    params = [net.w1, net.b1, net.w2]

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, net(xb)))
        g = tape.gradient(loss, params)
        opt.apply_gradients(zip(g, params))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 128, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), "w1", float(gn)))
        losses.append(float(loss))
    return Out([v.numpy() for v in params] + [net.seen.numpy()], _iters(opt),
               {"losses": losses, "grads": grads})


# --- 18. a layer with a running mean of its inputs (non-trainable, assigned in call when
#         training), fit() compiled with XLA -----------------------------------------------------

def _running_mean_layer():
    tf = _tf()
    keras = _keras()

    class RunningCenter(keras.layers.Layer):
        def build(self, shape):
            self.mean = self.add_weight(name="running", shape=(shape[-1],), initializer="zeros", trainable=False)

        def call(self, inputs, training=None):
            if training:
                self.mean.assign(0.9 * self.mean + 0.1 * tf.reduce_mean(inputs, 0))
            return inputs - self.mean

    return RunningCenter


def running_mean_layer_xla_fit():
    keras = _keras()
    x, y = data.regression(128)
    keras.utils.set_random_seed(118)
    model = keras.Sequential([keras.Input((10,)), _running_mean_layer()(name="center"),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=True)
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    n = _iters(model.optimizer)
    return Out(_weights(model), n, {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"center": True},
                                    "state": {"running": True}, "meta": {"fit.jit_compile": True}})


# --- 19. keras.layers.Lambda (a scaling and a clip) inside a Sequential, fit(run_eagerly=True) --

def lambda_layers_run_eagerly_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(96)
    keras.utils.set_random_seed(119)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Lambda(lambda t: t * 0.5),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Lambda(lambda t: tf.clip_by_value(t, 0.0, 3.0)),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  run_eagerly=True)
    cb = _BatchLosses(_sizes(96, B))
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)],
                "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)], "meta": {"fit.run_eagerly": True}})


# --- 20. a callback that sets the learning rate before every batch (a hand-written warm-up) -----

def callback_sets_lr_every_batch_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(120)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=_ce())
    rates: list[float] = []

    class Warmup(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            lr = 0.1 * min(1.0, (len(rates) + 1) / 4)
            opt = self.model.optimizer
            if _legacy():
                keras.backend.set_value(opt.learning_rate, lr)
            else:
                opt.learning_rate = lr
            rates.append(float(np.float32(lr)))

    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[Warmup()])
    return Out(_weights(model), _iters(model.optimizer), {"lrs": rates})


# --- 21. EarlyStopping(restore_best_weights=True) stopping a fit() with validation -------------

def early_stopping_restore_best_fit():
    keras = _keras()
    x, y = data.regression(160)
    keras.utils.set_random_seed(121)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.3), loss="mse")  # too high a rate: val loss rises
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], y[:128], validation_data=(x[128:], y[128:]), batch_size=32, epochs=12,
              shuffle=False, verbose=0, callbacks=[cb, stop])
    n = _iters(model.optimizer)
    assert n < 12 * 4, n
    return Out(_weights(model), n, {"losses": cb.losses, "loss_rtol": 1e-4, "meta": {"fit.validation": True}})


# --- 22. fit() twice on one model, recompiled in between with another optimizer and loss -------

def fit_twice_recompiled_other_optimizer():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(122)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce())
    cb1 = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], y[:128], batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb1])
    n1 = _iters(model.optimizer)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    onehot = np.eye(3, dtype="float32")[y[:128]]
    cb2 = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], onehot, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb2])
    n2 = _iters(model.optimizer)
    return Out(_weights(model), n1 + n2,
               {"losses": cb1.losses + cb2.losses, "loss_rtol": 1e-4, "optimizers": ["SGD", "Adam"],
                "modes": {"dropout": True},
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] + [_fp(onehot[i:i + 32])
                                                                          for i in range(0, 128, 32)]})


# --- 23. evaluate() and predict() called from a callback at the end of every epoch (and at
#         batch 1), on a model with BatchNormalization and Dropout ----------------------------------

def evaluate_predict_inside_callbacks_fit():
    keras = _keras()
    x, y = data.digits(160)
    keras.utils.set_random_seed(123)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce(), metrics=["accuracy"])

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.predict(x[128:], batch_size=16, verbose=0)

        def on_epoch_end(self, epoch, logs=None):
            self.model.evaluate(x[128:], y[128:], batch_size=16, verbose=0)

    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x[:128], y[:128], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb, Probe()])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"batch_normalization": True, "dropout": True},
                "state": {"moving_mean": True}, "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 24. the mixed_bfloat16 policy in a tf.function tape loop (no loss scaling) ---------------

def mixed_bfloat16_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(124)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10), keras.layers.Activation("linear", dtype="float32")])
        opt = keras.optimizers.Adam(1e-2)
        ce = _ce()

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
            g = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(g, model.trainable_variables))
            return loss, tf.norm(tf.cast(g[0], tf.float32))

        losses, grads = [], []
        for i in range(0, 96, B):
            loss, gn = step(x[i:i + B], y[i:i + B])
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    finally:
        keras.mixed_precision.set_global_policy(prev)
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "meta": {"dtype_policy": "mixed_bfloat16"}})


# --- 25. DP-SGD by hand: per-example gradients from tape.jacobian of the per-example losses,
#         each clipped to a norm, summed, noised and averaged, then applied ----------------------

def per_example_clipped_gradients_jacobian():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(64)
    keras.utils.set_random_seed(125)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.2)
    noise = tf.random.Generator.from_seed(5)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)[:, 0]
            per_example = tf.nn.sigmoid_cross_entropy_with_logits(yb, logits)
        jac = tape.jacobian(per_example, model.trainable_variables)  # each (batch, *shape)
        n = tf.shape(xb)[0]
        norms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.reshape(j, [n, -1]) ** 2, 1) for j in jac]))
        factor = tf.minimum(1.0, 0.5 / (norms + 1e-12))
        grads = [(tf.tensordot(factor, j, 1) + noise.normal(j.shape[1:], stddev=0.01)) / tf.cast(n, tf.float32)
                 for j in jac]
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_sum(per_example), tf.norm(grads[0])

    grads, losses = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    # the tape's target is the vector of per-example losses: recorded as its sum and shape
    return Out(_weights(model), _iters(opt), {"grads": grads, "losses": losses, "target_shape": [B],
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 64, B)]})


# --- 26. a tf.data pipeline of dict features (two named inputs) into a functional model, fit() --

def dict_features_tf_data_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(126)
    a = keras.Input((10,), name="chem")
    b = keras.Input((3,), name="color")
    h = keras.layers.Concatenate()([keras.layers.Dense(6, activation="relu")(a), b])
    model = keras.Model({"chem": a, "color": b}, keras.layers.Dense(3)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce(), metrics=["accuracy"])
    feats = {"chem": x[:128, :10], "color": x[:128, 10:]}
    ds = tf.data.Dataset.from_tensor_slices((feats, y[:128])).batch(32)
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(ds, epochs=2, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "batch_sizes": [32] * 8,
                "x_fp": [_fp(x[i:i + 32, :10], x[i:i + 32, 10:]) for i in range(0, 128, 32)] * 2,
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 27. fit() on a keras.utils.PyDataset (tf-keras: keras.utils.Sequence) ---------------------

def py_dataset_fit():
    keras = _keras()
    x, y = data.breast_cancer(112)
    base = keras.utils.Sequence if _legacy() else keras.utils.PyDataset

    class Batches(base):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            lo = i * 28
            return x[lo:lo + 28], y[lo:lo + 28]

    keras.utils.set_random_seed(127)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    cb = _BatchLosses([28] * 4)
    model.fit(Batches(), epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "batch_sizes": [28] * 8,
                "x_fp": [_fp(x[i:i + 28]) for i in range(0, 112, 28)] * 2})


# --- 28. a stateful LSTM (fixed batch) carried across batches of one sequence, states reset per
#         epoch, eager tape --------------------------------------------------------------------------

def stateful_lstm_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.sequences(64, length=12, features=3)
    keras.utils.set_random_seed(128)
    lstm = keras.layers.LSTM(5, stateful=True, name="lstm")
    model = keras.Sequential([keras.Input(batch_shape=(8, 4, 3)), lstm, keras.layers.Dense(2)])
    opt = keras.optimizers.Adam(1e-2)
    ce = _ce()
    losses, grads = [], []
    for _epoch in range(2):
        if _legacy():
            model.reset_states()
        else:
            lstm.reset_states()
        for t in range(0, 12, 4):  # three chunks of the same 8 sequences
            with tf.GradientTape() as tape:
                loss = ce(y[:8], model(x[:8, t:t + 4], training=True))
            g = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(g, model.trainable_variables))
            grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
            losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 29. an input_signature with a None batch dimension (one trace for a ragged last batch) ----

def input_signature_ragged_last_batch():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(100)
    keras.utils.set_random_seed(129)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    opt = keras.optimizers.Nadam(5e-3)
    ce = _ce()

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32), tf.TensorSpec([None], tf.int32)])
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads, sizes = [], [], []
    for i in range(0, 100, 32):
        loss, gn = step(x[i:i + 32], y[i:i + 32])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
        sizes.append(len(x[i:i + 32]))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "batch_sizes": sizes,
                                              "modes": {"dropout": True},
                                              "x_fp": [_fp(x[i:i + 32]) for i in range(0, 100, 32)]})


# --- 30. the learning rate assigned between epochs of a tf.function tape loop -----------------

def lr_assigned_between_epochs_function():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(130)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    opt = keras.optimizers.SGD(0.1)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses, rates = [], []
    for epoch in range(3):
        lr = 0.1 * 0.5 ** epoch
        if _legacy():
            opt.learning_rate.assign(lr)
        else:
            opt.learning_rate = lr
        for i in range(0, 128, 32):
            losses.append(float(step(x[i:i + 32], y[i:i + 32])))
            rates.append(float(np.float32(lr)))
    return Out(_weights(model), _iters(opt), {"losses": losses, "lrs": rates})


# --- 31. TimeDistributed(Dense) with a Dropout inside TimeDistributed, an XLA tape step with
#         Embedding (sparse gradients under jit_compile) ------------------------------------------

def time_distributed_embedding_xla_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.token_tags(64, length=10, vocab=20)
    keras.utils.set_random_seed(131)
    model = keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(20, 6),
                              keras.layers.TimeDistributed(keras.layers.Dropout(0.2), name="td_drop"),
                              keras.layers.TimeDistributed(keras.layers.Dense(2), name="td_dense")])
    opt = keras.optimizers.Adam(1e-2)
    ce = _ce()

    @tf.function(jit_compile=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(tf.convert_to_tensor(g[0]))

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    # Keras 3's TimeDistributed runs the Dropout's call itself (the wrapper's mode is recorded);
    # tf-keras calls the Dropout layer
    mode = {"dropout": True} if _legacy() else {"td_drop": True}
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "modes": mode,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 64, B)]})


# --- 32. a callback freezing a block (Dense + BatchNormalization) after the first epoch and
#         rebuilding fit()'s train function so that it takes effect -----------------------------

def callback_freezes_block_mid_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(132)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, name="low"),
                              keras.layers.BatchNormalization(name="low_bn"), keras.layers.ReLU(),
                              keras.layers.Dense(10, name="top")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce())
    low, bn = model.get_layer("low"), model.get_layer("low_bn")
    moved, stats, frozen = [], [], []

    class Freeze(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.k, self.m = np.array(low.kernel), np.array(bn.moving_mean)
            frozen.append(not bn.trainable)

        def on_train_batch_end(self, batch, logs=None):
            moved.append(not np.array_equal(self.k, np.array(low.kernel)))
            stats.append(not np.array_equal(self.m, np.array(bn.moving_mean)))

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                low.trainable = False
                bn.trainable = False
                self.model.make_train_function(force=True)

    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[Freeze()])
    n = _iters(model.optimizer)
    assert moved[:4] == [True] * 4, moved
    return Out(_weights(model), n, {"applied": {_vname(low.kernel): moved, _vname(model.get_layer("top").kernel):
                                                [True] * n},
                                    "state": {"low_bn/moving_mean" if not _legacy() else _vname(bn.moving_mean): stats},
                                    "frozen": {"low_bn": frozen}})


# --- 33. a mean teacher: the student trained by a tape, the teacher (called in inference mode
#         inside the tape) following it by an exponential moving average assigned each step -----

def mean_teacher_ema_assign():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(128)

    def net(tag):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu", name=f"{tag}_h"),
                                 keras.layers.Dropout(0.2, name=f"{tag}_drop"), keras.layers.Dense(10, name=f"{tag}_out")],
                                name=tag)

    keras.utils.set_random_seed(133)
    student, teacher = net("student"), net("teacher")
    teacher.set_weights(student.get_weights())
    opt = keras.optimizers.Adam(5e-3)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = student(xb, training=True)
            target = tf.stop_gradient(tf.nn.softmax(teacher(xb, training=False)))
            consistency = tf.reduce_mean(tf.reduce_sum(tf.square(tf.nn.softmax(logits) - target), 1))
            loss = ce(yb, logits) + 0.5 * consistency
        g = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(g, student.trainable_variables))
        for t, s in zip(teacher.variables, student.variables):
            t.assign(0.9 * t + 0.1 * s)
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for _ in range(2):
        for i in range(0, 128, 32):
            loss, gn = step(x[i:i + 32], y[i:i + 32])
            grads.append((len(losses), _vname(student.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    n = len(losses)
    return Out(_weights(student, teacher), _iters(opt),
               {"losses": losses, "grads": grads, "modes": {"student_drop": True, "teacher_drop": False},
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2,
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] * 2,
                "unchanged": [_vname(teacher.trainable_variables[0])] if n else []})


# --- 34. tf.train.Checkpoint: save, train on, restore (weights, optimizer slots and iterations
#         roll back), train again; a PolynomialDecay schedule follows the restored iterations -----

def checkpoint_restore_rewinds_training():
    import tempfile

    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(134)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    sched = keras.optimizers.schedules.PolynomialDecay(0.05, decay_steps=10, end_learning_rate=0.005)
    opt = keras.optimizers.Adam(sched)
    opt.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True)[:, 0] - yb))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses, rates, iters = [], [], []

    def train(lo, hi):
        for i in range(lo, hi, B):
            rates.append(float(np.float32(sched(opt.iterations))))
            losses.append(float(step(x[i:i + B], y[i:i + B])))
            iters.append(_iters(opt))

    with tempfile.TemporaryDirectory() as tmp:
        train(0, 48)
        path = ckpt.save(f"{tmp}/ckpt")
        train(48, 96)
        ckpt.restore(path)
        assert _iters(opt) == 3
        train(48, 96)
    return Out(_weights(model), len(losses), {"losses": losses, "lrs": rates, "iterations": iters})


# --- 35. a user's recurrent cell (its call reads `training`: dropout on its input) inside
#         keras.layers.RNN, a tf.function tape loop --------------------------------------------------

def _noisy_cell_class():
    tf = _tf()
    keras = _keras()

    class NoisyCell(keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units
            self.state_size = units

        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1], self.units))
            self.u = self.add_weight(name="u", shape=(self.units, self.units), initializer="orthogonal")

        def call(self, inputs, states, training=None):
            if training:  # stateless: a stateful op's seed state may carry over between runs in one process
                inputs = tf.nn.experimental.stateless_dropout(inputs, 0.2, seed=[3, 4])
            h = tf.tanh(inputs @ self.w + states[0] @ self.u)
            return h, [h]

    return NoisyCell


def custom_rnn_cell_training_branch_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.sequences(64, length=6, features=3)
    keras.utils.set_random_seed(135)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.RNN(_noisy_cell_class()(5, name="noisy_cell")),
                              keras.layers.Dense(2)])
    opt = keras.optimizers.RMSprop(1e-2)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "modes": {"noisy_cell": True}})


# --- 36. per-example gradients with tf.vectorized_map (a tape inside the mapped function),
#         averaged and applied, then a plain batch gradient step every third batch ----------------

def per_example_grads_vectorized_map():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(136)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.05)

    def one(args):
        xi, yi = args
        with tf.GradientTape() as tape:
            loss = tf.square(model(xi[None], training=True)[0, 0] - yi)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def dp_step(xb, yb):
        per = tf.vectorized_map(one, (xb, yb))
        grads = [tf.reduce_mean(tf.clip_by_norm(g, 1.0, axes=list(range(1, len(g.shape)))), 0) for g in per]
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return tf.norm(grads[0])

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True)[:, 0] - yb))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    grads, losses, sizes = [], [], []
    for k, i in enumerate(range(0, 96, B)):
        if k % 3 == 2:
            loss, gn = step(x[i:i + B], y[i:i + B])
            losses.append(float(loss))
            sizes.append(B)
        else:  # no loss was differentiated (nor a batch seen) as a whole: the record says none
            gn = dp_step(x[i:i + B], y[i:i + B])
            losses.append(None)
            sizes.append(None)
        grads.append((k, _vname(model.trainable_variables[0]), float(gn)))
    return Out(_weights(model), _iters(opt), {"grads": grads, "losses_or_none": losses, "batch_sizes": sizes})
