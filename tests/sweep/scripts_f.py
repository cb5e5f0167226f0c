# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""A sixth set of training scripts as users write them, through ``tf.keras`` so that most run on
Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on tf-keras (the ones using Keras 3's newer
optimizers and losses are Keras 3 only). Same contract as :mod:`scripts_c`: each returns
:class:`Out` with its final weights, the optimizer steps it counted and, in ``extra``, what the
script itself knows about its steps (see check_c.check).
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
    _norm,
    _sizes,
    _tf,
    _vname,
    _weights,
)

B = 16


def _ce():
    return _keras().losses.SparseCategoricalCrossentropy(from_logits=True)


def _lr(opt) -> float:
    return float(np.float32(np.array(opt.learning_rate)))


# --- 1. (Keras 3) MultiOptimizer: Adam for the encoder (an OptimizerMap pattern), SGD for the
#        rest, fit() ---------------------------------------------------------------------------------

def multi_optimizer_map_fit():
    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(601)
    inp = keras.Input((64,))
    h = keras.layers.Dense(16, activation="relu", name="encoder")(inp)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    opt = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.SGD(0.05, momentum=0.9), {"encoder/.*": keras.optimizers.Adam(3e-3)}))
    model.compile(optimizer=opt, loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert [_iters(o) for o in opt.optimizers] == [8, 8], [_iters(o) for o in opt.optimizers]
    return Out(_weights(model), _iters(opt),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"drop": True},
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 2. (Keras 3) MultiOptimizer chosen by a function of the variable, stepped by apply() in a
#        tf.function tape loop --------------------------------------------------------------------

def multi_optimizer_callable_apply_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(602)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="tanh", name="body"),
                              keras.layers.Dense(3, name="out")])
    adam, rms = keras.optimizers.Adam(1e-2), keras.optimizers.RMSprop(5e-3)
    opt = keras.optimizers.MultiOptimizer(lambda v: rms if v.path.startswith("out/") else adam)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply(g, model.trainable_variables)
        return loss, tf.norm(g[0]), tf.norm(g[2])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, g0, g2 = step(x[i:i + B], y[i:i + B])
        grads += [(len(losses), "body/kernel", float(g0)), (len(losses), "out/kernel", float(g2))]
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 3. (Keras 3) Muon on an Embedding + Dense model (Muon's own update for the 2-D kernels,
#        AdamW for the embedding and the biases), tf.function tape loop ------------------------------

def muon_embedding_dense_tape():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(64, length=6, vocab=20)
    keras.utils.set_random_seed(603)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 8, name="emb"),
                              keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    opt = keras.optimizers.Muon(learning_rate=0.02)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[1]), tf.norm(tf.convert_to_tensor(g[0]))

    losses, grads = [], []
    for i in range(0, 64, B):
        loss, g1, g0 = step(ids[i:i + B], y[i:i + B])
        grads += [(len(losses), "hidden/kernel", float(g1)), (len(losses), "emb/embeddings", float(g0))]
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads})


# --- 4. (Keras 3) Lamb with EinsumDense projections and dot-product Attention (with dropout)
#        between two sequences, fit() -----------------------------------------------------------------

def lamb_einsum_attention_fit():
    keras = _keras()
    x, y = data.sequences(96, length=8, features=3)
    q = x[:, :4] * 0.5
    keras.utils.set_random_seed(604)
    qi, vi = keras.Input((4, 3)), keras.Input((8, 3))
    qp = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d", name="q_proj")(qi)
    vp = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6), name="v_proj")(vi)
    att = keras.layers.Attention(use_scale=True, dropout=0.1, name="att")([qp, vp])
    out = keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling1D()(att))
    model = keras.Model([qi, vi], out)
    model.compile(optimizer=keras.optimizers.Lamb(1e-2), loss=_ce())
    cb = _BatchLosses(_sizes(96, 32))
    model.fit([q, x], y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"att": True},
                "x_fp": [_fp(q[i:i + 32], x[i:i + 32]) for i in range(0, 96, 32)] * 2})


# --- 5. (Keras 3) ScheduleFreeAdamW (it writes an interpolated point into the weights), a
#        tf.function tape loop --------------------------------------------------------------------

def schedule_free_adamw_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    keras.utils.set_random_seed(605)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.ScheduleFreeAdamW(1e-2, warmup_steps=2)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = mse(yb[:, None], model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 6. a float64 model (Input and layers in float64), a tf.function tape loop -----------------

def float64_model_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(96)
    x, y = x.astype("float64"), y.astype("float64")
    keras.utils.set_random_seed(606)
    model = keras.Sequential([keras.Input((10,), dtype="float64"),
                              keras.layers.Dense(8, activation="tanh", dtype="float64"),
                              keras.layers.Dense(1, dtype="float64")])
    opt = keras.optimizers.Adam(1e-2)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)[:, 0]))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    assert model.trainable_variables[0].dtype == "float64"
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)]})


# --- 7. domain-adversarial training: a gradient reversal layer (tf.custom_gradient), two heads,
#        one optimizer, an accuracy computed under tape.stop_recording(), eager --------------------

def _reversal_layer_class():
    tf = _tf()
    keras = _keras()

    @tf.custom_gradient
    def reverse(h):
        def grad(dy):
            return -0.5 * dy
        return tf.identity(h), grad

    class GradientReversal(keras.layers.Layer):
        def call(self, inputs):
            return reverse(inputs)

    return GradientReversal


def gradient_reversal_custom_gradient_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    domain = (x[:, 0] > 0).astype("float32")[:, None]
    keras.utils.set_random_seed(607)
    inp = keras.Input((13,))
    feat = keras.layers.Dense(8, activation="relu", name="feat")(inp)
    label = keras.layers.Dense(3, name="label_head")(feat)
    dom = keras.layers.Dense(1, name="domain_head")(_reversal_layer_class()(name="reverse")(feat))
    model = keras.Model(inp, [label, dom])
    opt = keras.optimizers.Adam(1e-2)
    ce, bce = _ce(), keras.losses.BinaryCrossentropy(from_logits=True)
    losses, grads, accs = [], [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            lab, d = model(x[i:i + B], training=True)
            loss = ce(y[i:i + B], lab) + bce(domain[i:i + B], d)
            with tape.stop_recording():
                accs.append(float(tf.reduce_mean(tf.cast(tf.argmax(lab, 1) == y[i:i + B], tf.float32))))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), "feat/kernel", _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 96, B)]})


# --- 8. DQN-style: a Huber TD loss against a target network outside the tape (stop_gradient),
#        the target network's weights copied from the online one every second step ---------------

def dqn_target_network_copy_function():
    tf = _tf()
    keras = _keras()
    s, r = data.regression(112)
    rng = np.random.default_rng(608)
    a = rng.integers(0, 3, size=len(s)).astype("int32")
    keras.utils.set_random_seed(608)

    def net(prefix):
        return keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu", name=f"{prefix}_h"),
                                 keras.layers.Dense(3, name=f"{prefix}_q")], name=prefix)

    online, target = net("online"), net("target")
    target.set_weights(online.get_weights())
    opt = keras.optimizers.RMSprop(1e-3)
    huber = keras.losses.Huber(delta=1.0)

    @tf.function
    def step(sb, ab, rb, s2):
        tgt = tf.stop_gradient(rb + 0.9 * tf.reduce_max(target(s2), 1))
        with tf.GradientTape() as tape:
            qsa = tf.gather(online(sb, training=True), ab, batch_dims=1)
            loss = huber(tgt, qsa)
        g = tape.gradient(loss, online.trainable_variables)
        opt.apply_gradients(zip(g, online.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for k, i in enumerate(range(0, 96, B)):
        loss, gn = step(s[i:i + B], a[i:i + B], r[i:i + B], s[i + B:i + 2 * B])
        grads.append((len(losses), "online_h/kernel", float(gn)))
        losses.append(float(loss))
        if k % 2 == 1:
            target.set_weights(online.get_weights())
    return Out(_weights(online, target), _iters(opt), {"losses": losses, "grads": grads})


# --- 9. a learning rate given as a callable (no argument) that reads the script's own state,
#        lowered between steps of an eager loop -------------------------------------------------------

def callable_learning_rate_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.breast_cancer(96)
    keras.utils.set_random_seed(609)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
    state = {"lr": 0.2}
    opt = keras.optimizers.SGD(learning_rate=lambda: state["lr"], momentum=0.5)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    losses, grads, lrs = [], [], []
    for i in range(0, 96, B):
        with tf.GradientTape() as tape:
            loss = bce(y[i:i + B, None], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        lrs.append(state["lr"])
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
        state["lr"] *= 0.5
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads, "lrs": lrs})


# --- 10. a loss object with reduction="sum" (no mean over the batch), a tf.function tape loop ---

def loss_reduction_sum_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(610)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10)])
    opt = keras.optimizers.SGD(2e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], y[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(y[i:i + B]) for i in range(0, 96, B)]})


# --- 11. focal losses on two outputs (BinaryFocalCrossentropy with class balancing,
#         CategoricalFocalCrossentropy on one-hot labels), dict losses and loss weights, fit() -----

def focal_losses_two_outputs_fit():
    keras = _keras()
    x, y = data.digits(128)
    parity = (y % 2).astype("float32")[:, None]
    onehot = np.eye(10, dtype="float32")[y]
    keras.utils.set_random_seed(611)
    inp = keras.Input((64,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    model = keras.Model(inp, {"parity": keras.layers.Dense(1, name="parity")(h),
                              "cls": keras.layers.Dense(10, name="cls")(h)})
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss={"parity": keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=2.0,
                                                                       from_logits=True),
                        "cls": keras.losses.CategoricalFocalCrossentropy(from_logits=True)},
                  loss_weights={"parity": 0.5, "cls": 1.0})
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, {"parity": parity, "cls": onehot}, batch_size=32, epochs=2, shuffle=False, verbose=0,
              callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "x_fp": [_fp(x[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 12. three regression-style outputs: SquaredHinge on +-1 labels, LogCosh, Poisson on counts
#         (an exponential output), fit() -------------------------------------------------------------

def hinge_logcosh_poisson_outputs_fit():
    keras = _keras()
    x, y = data.regression(128)
    sign = np.where(y > 0, 1.0, -1.0).astype("float32")[:, None]
    counts = np.random.default_rng(612).poisson(np.exp(0.5 * np.tanh(y))).astype("float32")[:, None]
    keras.utils.set_random_seed(612)
    inp = keras.Input((10,))
    h = keras.layers.Dense(12, activation="tanh")(inp)
    outs = [keras.layers.Dense(1, name="margin")(h), keras.layers.Dense(1, name="value")(h),
            keras.layers.Dense(1, activation="exponential", name="rate")(h)]
    model = keras.Model(inp, outs)
    model.compile(optimizer=keras.optimizers.Adagrad(0.05),
                  loss=[keras.losses.SquaredHinge(), keras.losses.LogCosh(), keras.losses.Poisson()])
    cb = _BatchLosses(_sizes(128, 32))
    model.fit(x, [sign, y[:, None], counts], batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4,
                "y_fp": [_fp(sign[i:i + 32], y[i:i + 32], counts[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 13. UnitNormalization embeddings trained by a CosineSimilarity loss (negative losses),
#         a tf.function tape loop ----------------------------------------------------------------------

def unit_norm_cosine_similarity_tape():
    tf = _tf()
    keras = _keras()
    x, _ = data.digits(96)
    proj = np.random.default_rng(613).normal(size=(64, 6)).astype("float32")
    t = np.tanh(x @ proj)
    keras.utils.set_random_seed(613)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dense(6), keras.layers.UnitNormalization()])
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    cos = keras.losses.CosineSimilarity()

    @tf.function
    def step(xb, tb):
        with tf.GradientTape() as tape:
            loss = cos(tb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[2])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, gn = step(x[i:i + B], t[i:i + B])
        grads.append((len(losses), _vname(model.trainable_variables[2]), float(gn)))
        losses.append(float(loss))
    assert max(losses) < 0, losses
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "y_fp": [_fp(t[i:i + B]) for i in range(0, 96, B)]})


# --- 14. an Embedding with an embeddings_regularizer (its gradient: IndexedSlices plus a dense
#         term) under an optimizer's clipnorm, the model's losses added in a tf.function step --------

def embedding_regularizer_clipnorm_function():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(80, length=6, vocab=30)
    keras.utils.set_random_seed(614)
    model = keras.Sequential([keras.Input((6,), dtype="int32"),
                              keras.layers.Embedding(30, 6, embeddings_regularizer=keras.regularizers.L2(1e-3),
                                                     name="emb"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, name="out")])
    opt = keras.optimizers.Adam(1e-2, clipnorm=0.1)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            data_loss = ce(yb, model(xb, training=True))
            reg = tf.add_n(model.losses)
            loss = data_loss + reg
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, reg, tf.norm(tf.convert_to_tensor(g[0]))

    losses, regs, grads = [], [], []
    for i in range(0, 80, B):
        loss, reg, gn = step(ids[i:i + B], y[i:i + B])
        grads.append((len(losses), "emb/embeddings", float(gn)))
        losses.append(float(loss))
        regs.append(float(reg))
    return Out(_weights(model), _iters(opt), {"losses": losses, "reg_losses": regs, "grads": grads,
                                              "meta": {"optimizer.config.clipnorm": 0.1}})


# --- 15. preprocessing inside the model: an adapted Discretization one-hot encoded, Hashing
#         multi-hot encoded, on two inputs, fit() ------------------------------------------------------

def discretization_hashing_multi_hot_fit():
    keras = _keras()
    xr, yr = data.regression(128)
    num = xr[:, :1]
    ids, _ = data.tokens(128, length=6, vocab=40)
    y = (yr > 0).astype("int32")
    keras.utils.set_random_seed(615)
    disc = keras.layers.Discretization(num_bins=4)
    disc.adapt(num)
    ni, ti = keras.Input((1,)), keras.Input((6,), dtype="int32")
    h1 = keras.layers.CategoryEncoding(4, output_mode="one_hot")(disc(ni))
    h2 = keras.layers.CategoryEncoding(16, output_mode="multi_hot")(keras.layers.Hashing(16)(ti))
    h = keras.layers.Concatenate()([h1, h2, keras.layers.Dense(4, name="num_dense")(ni)])
    model = keras.Model([ni, ti], keras.layers.Dense(2, name="out")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce())
    cb = _BatchLosses(_sizes(128, 32))
    model.fit([num, ids], y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "y_fp": [_fp(y[i:i + 32]) for i in range(0, 128, 32)] * 2})


# --- 16. variable-length token sequences from a generator, padded_batch (each batch its own
#         length), Embedding(mask_zero) into an RNN of StackedRNNCells, fit() ------------------------

def padded_batch_stacked_cells_fit():
    tf = _tf()
    keras = _keras()
    ids, y = data.tokens(96, length=10, vocab=20, pad=True)
    seqs = [row[row > 0] for row in ids]
    keras.utils.set_random_seed(616)
    ds = tf.data.Dataset.from_generator(lambda: zip(seqs, y), output_signature=(
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32))).padded_batch(32)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4, mask_zero=True),
                              keras.layers.RNN(keras.layers.StackedRNNCells([
                                  keras.layers.SimpleRNNCell(4), keras.layers.GRUCell(4, dropout=0.1)])),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_ce())
    cb = _BatchLosses([32] * 3)
    model.fit(ds, epochs=2, verbose=0, callbacks=[cb])
    # the dataset's length is unknown: each epoch ends with a call of the step function that
    # finds no batch (it may advance the optimizer's counter, TensorFlow does not order that
    # update after the read that fails): the steps are the batches
    fps = []
    for i in range(0, 96, 32):
        width = max(len(s) for s in seqs[i:i + 32])
        fps.append((float(sum(s.sum() for s in seqs[i:i + 32])), 32 * width))
    return Out(_weights(model), len(cb.losses),
               {"losses": cb.losses, "loss_rtol": 1e-4, "batch_sizes": [32] * 6, "x_fp": fps * 2,
                "modes": {"gru_cell": True}})


# --- 17. fit(initial_epoch=1, validation_freq=2) with an InverseTimeDecay schedule, each batch's
#         rate read by a callback ----------------------------------------------------------------------

def fit_initial_epoch_validation_freq_schedule():
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(617)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    sched = keras.optimizers.schedules.InverseTimeDecay(0.1, decay_steps=2, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(sched), loss=_ce())
    rates: list[float] = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):  # the rate this batch's step uses
            rates.append(float(sched(self.model.optimizer.iterations)))

    cb = _BatchLosses(_sizes(96, 32))
    hist = model.fit(x[:96], y[:96], validation_data=(x[96:], y[96:]), validation_freq=2, initial_epoch=1,
                     epochs=4, batch_size=32, shuffle=False, verbose=0, callbacks=[cb, Rates()])
    assert hist.epoch == [1, 2, 3] and len(hist.history["val_loss"]) == 2, hist.history  # epochs 1 and 3
    assert rates[-1] < rates[0], rates
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "lrs": rates,
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 96, 32)] * 3})


# --- 18. a head the loss never uses: its gradients (None) replaced by zeros by hand, Adam leaves
#         it where it was; tf.function ---------------------------------------------------------------

def idle_head_zero_gradients_tape():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(618)
    inp = keras.Input((64,))
    h = keras.layers.Dense(12, activation="relu", name="trunk")(inp)
    model = keras.Model(inp, [keras.layers.Dense(10, name="used_head")(h), keras.layers.Dense(2, name="idle_head")(h)])
    opt = keras.optimizers.Adam(5e-3)
    ce = _ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits, _ = model(xb, training=True)
            loss = ce(yb, logits)
        g = tape.gradient(loss, model.trainable_variables)
        g = [tf.zeros_like(v) if gi is None else gi for gi, v in zip(g, model.trainable_variables)]
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0]), tf.norm(g[4])

    losses, grads = [], []
    for i in range(0, 96, B):
        loss, g0, g4 = step(x[i:i + B], y[i:i + B])
        assert float(g4) == 0.0
        grads += [(len(losses), "trunk/kernel", float(g0)), (len(losses), "idle_head/kernel", 0.0)]
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "unchanged": ["idle_head/kernel", "idle_head/bias"]})


# --- 19. per-timestep sample weights (batch x time) on a sequence tagger, fit() ------------------

def temporal_sample_weight_fit():
    keras = _keras()
    x, y = data.token_tags(96, length=8, vocab=20)
    sw = np.where(x > 0, 1.0, 0.0).astype("float32")
    sw[:, 0] *= 2.0
    keras.utils.set_random_seed(619)
    model = keras.Sequential([keras.Input((8,), dtype="int32"), keras.layers.Embedding(20, 6),
                              keras.layers.Conv1D(8, 3, padding="same", activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3), loss=_ce())
    cb = _BatchLosses(_sizes(96, 32))
    model.fit(x, y, sample_weight=sw, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "weight_sum0": float(sw[:32].sum()),
                "y_fp": [_fp(y[i:i + 32]) for i in range(0, 96, 32)] * 2})


# --- 20. (Keras 3) a segmentation mask trained with the Dice loss, BatchNormalization, fit() ---

def dice_segmentation_fit():
    keras = _keras()
    x, _ = data.digits_images(96)
    mask = (x > 0.5).astype("float32")
    keras.utils.set_random_seed(620)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.Dice())
    cb = _BatchLosses(_sizes(96, 32))
    model.fit(x, mask, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"bn": True}, "state": {"moving_mean": True},
                "y_fp": [_fp(mask[i:i + 32]) for i in range(0, 96, 32)] * 2})


# --- 21. Masking on zero-padded float sequences, Bidirectional(LSTM, merge_mode="sum") and an
#         LSTM run backwards, eager tape loop ----------------------------------------------------------

def masking_bidirectional_sum_eager():
    tf = _tf()
    keras = _keras()
    x, y = data.sequences(64, length=8, features=3)
    lengths = np.random.default_rng(621).integers(3, 9, size=64)
    x = np.where(np.arange(8)[None, :, None] < lengths[:, None, None], x, 0.0).astype("float32")
    keras.utils.set_random_seed(621)
    model = keras.Sequential([keras.Input((8, 3)), keras.layers.Masking(0.0),
                              keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), merge_mode="sum"),
                              keras.layers.LSTM(4, go_backwards=True, dropout=0.1), keras.layers.Dense(2)])
    opt = keras.optimizers.Nadam(1e-2)
    ce = _ce()
    losses, grads = [], []
    for i in range(0, 64, B):
        with tf.GradientTape() as tape:
            loss = ce(y[i:i + B], model(x[i:i + B], training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        grads.append((len(losses), _vname(model.trainable_variables[0]), _norm(g[0])))
        losses.append(float(loss))
    return Out(_weights(model), _iters(opt), {"losses": losses, "grads": grads,
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 64, B)]})


# --- 22. a tf.function step that reads its batch from a dataset iterator itself (next() inside
#         the function), the loop ended by the OutOfRangeError of the call that finds no batch ----

def iterator_read_inside_function_until_end():
    tf = _tf()
    keras = _keras()
    x, y = data.wine()
    keras.utils.set_random_seed(622)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.1, name="drop"), keras.layers.Dense(3)])
    opt = keras.optimizers.Adam(1e-2)
    ce = _ce()
    ds = tf.data.Dataset.from_tensor_slices((x[:80], y[:80])).batch(B)

    @tf.function
    def step(it):
        xb, yb = next(it)
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads = [], []
    for _ in range(2):  # two epochs, each to the end of the data
        it = iter(ds)
        while True:
            try:
                loss, gn = step(it)
            except tf.errors.OutOfRangeError:
                break
            grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
            losses.append(float(loss))
    assert len(losses) == 10, losses
    # the call that finds no batch may advance the optimizer's counter (see
    # padded_batch_stacked_cells_fit): the steps are the batches
    return Out(_weights(model), len(losses), {"losses": losses, "grads": grads, "modes": {"drop": True},
                                              "x_fp": [_fp(x[i:i + B]) for i in range(0, 80, B)] * 2})


# --- 23. fit() on a filtered tf.data pipeline (its length unknown) with steps_per_execution=2:
#         the last call of each epoch finds one batch ----------------------------------------------

def filtered_dataset_steps_per_execution_fit():
    tf = _tf()
    keras = _keras()
    x, y = data.digits(160)
    keep = y != 9
    keras.utils.set_random_seed(623)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=_ce(), steps_per_execution=2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b != 9).batch(32)
    model.fit(ds, epochs=2, verbose=0)
    xk = x[keep]
    starts = list(range(0, len(xk), 32))
    assert len(starts) % 2 == 1, len(xk)  # an odd number of batches: the last call steps once
    return Out(_weights(model), 2 * len(starts),
               {"batch_sizes": [min(32, len(xk) - i) for i in starts] * 2,
                "x_fp": [_fp(xk[i:i + 32]) for i in starts] * 2})

# --- 24. a tf.function step that checks its loss (tf.debugging.check_numerics): the batches with
#         a NaN raise InvalidArgumentError, the loop skips them and goes on ----------------------------

def check_numerics_skips_bad_batches_function():
    tf = _tf()
    keras = _keras()
    x, y = data.regression(112)
    y = y.copy()
    bad = {2, 5}
    for k in bad:
        y[k * B + 3] = np.nan  # a broken label
    keras.utils.set_random_seed(624)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-2)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(yb - model(xb, training=True)[:, 0]))
            loss = tf.debugging.check_numerics(loss, "loss")
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.norm(g[0])

    losses, grads, xs, skipped = [], [], [], []
    for k, i in enumerate(range(0, 112, B)):
        try:
            loss, gn = step(x[i:i + B], y[i:i + B])
        except tf.errors.InvalidArgumentError:
            skipped.append(k)
            continue
        grads.append((len(losses), _vname(model.trainable_variables[0]), float(gn)))
        losses.append(float(loss))
        xs.append(_fp(x[i:i + B]))
    assert skipped == sorted(bad), skipped
    # a call that raises may advance the optimizer's counter (see padded_batch_stacked_cells_fit)
    return Out(_weights(model), len(losses), {"losses": losses, "grads": grads, "x_fp": xs})

# --- 25. fit() with BackupAndRestore stopped by an error at the start of its third epoch, then
#         called again: it restores the backup (weights, optimizer) and resumes at that epoch ------

def backup_and_restore_resumed_fit():
    import tempfile

    keras = _keras()
    x, y = data.digits(96)
    keras.utils.set_random_seed(625)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dropout(0.1, name="drop"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=_ce())
    stopped: list[int] = []

    class Preempted(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2 and not stopped:
                stopped.append(epoch)
                raise RuntimeError("preempted")

    cb = _BatchLosses(_sizes(96, 32))
    with tempfile.TemporaryDirectory() as backup:
        callbacks = [keras.callbacks.BackupAndRestore(backup), Preempted(), cb]
        try:
            model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
        except RuntimeError:
            pass
        hist = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    assert hist.epoch == [2, 3] and len(cb.losses) == 12, (hist.epoch, len(cb.losses))
    return Out(_weights(model), _iters(model.optimizer),
               {"losses": cb.losses, "loss_rtol": 1e-4, "modes": {"drop": True},
                "x_fp": [_fp(x[i:i + 32]) for i in range(0, 96, 32)] * 4})

# --- 26. (Keras 3) the mixed_float16 policy with a MultiOptimizer: compile() wraps it in a
#         LossScaleOptimizer, which steps it; fit() --------------------------------------------------

def mixed_float16_multi_optimizer_fit():
    keras = _keras()
    x, y = data.digits(96)
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(626)
        inp = keras.Input((64,))
        h = keras.layers.Dense(16, activation="relu", name="encoder")(inp)
        out = keras.layers.Activation("linear", dtype="float32")(keras.layers.Dense(10, name="head")(h))
        model = keras.Model(inp, out)
        opt = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(0.05), {"encoder/.*": keras.optimizers.Adam(3e-3)}))
        model.compile(optimizer=opt, loss=_ce())
        cb = _BatchLosses(_sizes(96, B))
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    finally:
        keras.mixed_precision.set_global_policy(prev)
    assert type(model.optimizer).__name__ == "LossScaleOptimizer", type(model.optimizer)
    return Out(_weights(model), _iters(opt),
               {"losses": cb.losses, "loss_rtol": 2e-3, "loss_scaled": True,
                "meta": {"dtype_policy": "mixed_float16"}})

# --- not a script of the sweep: a MultiOptimizer compiled before the trace is entered (the
#     usual order: compile, then trace the fit() call), checked by check_f in a process of its own -

def _multi_optimizer_compiled_before_trace(url: str) -> list[str]:
    """Problems of a fit() traced after compile() with a MultiOptimizer: its sub-optimizers
    exist when the trace starts and their counters advance with every step, which are the
    MultiOptimizer's steps (recorded once each)."""
    import gradtrace
    from gradtrace.store import open_store

    keras = _keras()
    x, y = data.digits(128)
    keras.utils.set_random_seed(630)
    inp = keras.Input((64,))
    h = keras.layers.Dense(16, activation="relu", name="encoder")(inp)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    opt = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.SGD(0.05), {"encoder/.*": keras.optimizers.Adam(3e-3)}))
    model.compile(optimizer=opt, loss=_ce())
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # one step before the trace
    with gradtrace.trace(run="multi_optimizer_compiled_before_trace", project="sweep_f", store=url) as run:
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    problems = [f"run warning: {w}" for w in run.info.warnings]
    store = open_store(url)
    try:
        steps = list(store.steps(store.resolve("multi_optimizer_compiled_before_trace", project="sweep_f").id))
    finally:
        store.close()
    taken = _iters(opt) - 1
    if len(steps) != taken or [o.iterations.numpy() for o in opt.optimizers] != [9, 9]:
        problems.append(f"{len(steps)} steps recorded, {taken} taken")
    return problems
