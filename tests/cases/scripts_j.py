# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""An eighth set of pairs (see scripts.py for the conventions), from scripts written for kinds of
training the other sets cover little: mixed precision with a LossScaleOptimizer in a tape loop, a
Lambda layer written in two places, gradients accumulated over micro-batches by hand,
MirroredStrategy with one replica (fit() against strategy.run), a GAN written two ways.
"""

from __future__ import annotations

from . import data
from .scripts_f import _mixed, _mp_mlp
from .scripts_models import BATCH, STEPS, _digits, _fit, _keras, _sparse_ce, _tf

# --- mixed precision: the loss scaled with scale_loss(), the gradients applied by the inner optimizer ---


def _tape_mixed_scaled_loss(opt_of, apply_with):
    def script():
        tf = _tf()
        keras = _keras()
        x, y = _digits()
        model = _mp_mlp()
        opt = opt_of(keras)
        ce = _sparse_ce()

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            apply_with(opt).apply_gradients(zip(grads, model.trainable_variables))

        for xb, yb in data.batches(x, y, BATCH, STEPS):
            step(xb, yb)

    _mixed(script)


def tape_mixed_scaled_loss_inner_optimizer_applies():
    """scale_loss() inside the tape, but the wrapped optimizer applies: nothing unscales."""
    _tape_mixed_scaled_loss(lambda k: k.optimizers.LossScaleOptimizer(k.optimizers.Adam(1e-3)),
                            lambda opt: opt.inner_optimizer)


def tape_mixed_scaled_loss_adam():
    _tape_mixed_scaled_loss(lambda k: k.optimizers.LossScaleOptimizer(k.optimizers.Adam(1e-3)), lambda opt: opt)


def fit_mixed_precision_adam():
    def script():
        keras = _keras()
        x, y = _digits()
        model = _mp_mlp()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_sparse_ce())
        _fit(model, x, y)

    _mixed(script)


def tape_mixed_scaled_loss_inner_sgd_applies():
    """The same with SGD, which passes the factor on to every step."""
    _tape_mixed_scaled_loss(lambda k: k.optimizers.LossScaleOptimizer(k.optimizers.SGD(0.1)),
                            lambda opt: opt.inner_optimizer)


# --- a Lambda layer: the same lambda written in two functions (other lines) is the same argument ---


def _lambda_mlp(fn):
    keras = _keras()
    keras.utils.set_random_seed(811)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Lambda(fn), keras.layers.Dense(10)])


def fit_lambda_halves():
    keras = _keras()
    x, y = _digits()
    model = _lambda_mlp(lambda t: t * 0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_sparse_ce())
    _fit(model, x, y)


def _tape_lambda(fn):
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model = _lambda_mlp(fn)
    opt = keras.optimizers.SGD(0.1)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_lambda_halves():
    _tape_lambda(lambda h: h * 0.5)  # the same lambda, another argument name, other lines


def tape_lambda_quarters():
    _tape_lambda(lambda h: h * 0.25)


# --- gradients accumulated by hand over micro-batches: averaged in one loop, summed in the other ---


def _tape_accumulated_micro(average: bool, micro: int = 3):
    """Three classes and three micro-batches of 8 per update: the factor equals both counts."""
    tf = _tf()
    keras = _keras()
    x, y = data.classification(STEPS * 24, features=12, classes=3)
    keras.utils.set_random_seed(812)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    opt = keras.optimizers.SGD(0.05)
    ce = _sparse_ce()

    @tf.function
    def grads_of(xb, yb):
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        return tape.gradient(loss, model.trainable_variables)

    for xb, yb in data.batches(x, y, 24, STEPS):
        acc = [tf.zeros_like(v) for v in model.trainable_variables]
        for k in range(micro):
            g = grads_of(xb[8 * k:8 * (k + 1)], yb[8 * k:8 * (k + 1)])
            acc = [a + gi for a, gi in zip(acc, g)]
        opt.apply_gradients(zip([a / micro for a in acc] if average else acc, model.trainable_variables))


def tape_micro_batches_averaged():
    _tape_accumulated_micro(True)


def tape_micro_batches_summed():
    _tape_accumulated_micro(False)


# --- MirroredStrategy with one replica: fit() against a loop of strategy.run and reduce ---------


def _strategy_mlp(strategy):
    keras = _keras()
    keras.utils.set_random_seed(813)
    with strategy.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dropout(0.1), keras.layers.Dense(10)])
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
    return model, opt


def fit_mirrored_one_replica():
    tf = _tf()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _digits()
    model, opt = _strategy_mlp(strategy)
    with strategy.scope():
        model.compile(optimizer=opt, loss=_sparse_ce())
    _fit(model, x, y)


def tape_mirrored_strategy_run():
    tf = _tf()
    keras = _keras()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _digits()
    model, opt = _strategy_mlp(strategy)
    with strategy.scope():
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x[:BATCH * STEPS], y[:BATCH * STEPS])).batch(BATCH))

    @tf.function
    def train(batch):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(ce(yb, model(xb, training=True)), global_batch_size=BATCH)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=batch), axis=None)

    for batch in ds:
        train(batch)


# --- a GAN: two models, two optimizers, two tapes in a tf.function against one persistent tape eagerly ---


def _gan(persistent: bool, generator_moves_discriminator: bool = False):
    import numpy as np

    tf = _tf()
    keras = _keras()
    r = np.random.RandomState(0)
    real = (r.randn(BATCH * STEPS, 2) * [0.5, 0.2] + [2.0, -1.0]).astype("float32")
    zs = np.random.RandomState(1).randn(STEPS, BATCH, 4).astype("float32")
    keras.utils.set_random_seed(814)
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16), keras.layers.LeakyReLU(0.2),
                             keras.layers.Dropout(0.1), keras.layers.Dense(1)])
    g_opt, d_opt = keras.optimizers.Adam(1e-3, beta_1=0.5), keras.optimizers.Adam(1e-3, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def losses(xr, z):
        fake = gen(z, training=True)
        rl, fl = disc(xr, training=True), disc(fake, training=True)
        return bce(tf.ones_like(rl), rl) + bce(tf.zeros_like(fl), fl), bce(tf.ones_like(fl), fl)

    @tf.function
    def two_tapes(xr, z):
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            d_loss, g_loss = losses(xr, z)
        d_opt.apply_gradients(zip(dt.gradient(d_loss, disc.trainable_variables), disc.trainable_variables))
        g_vars = gen.trainable_variables + (disc.trainable_variables if generator_moves_discriminator else [])
        g_opt.apply_gradients(zip(gt.gradient(g_loss, g_vars), g_vars))

    def one_tape(xr, z):
        with tf.GradientTape(persistent=True) as tape:
            d_loss, g_loss = losses(xr, z)
        dg, gg = tape.gradient(d_loss, disc.trainable_variables), tape.gradient(g_loss, gen.trainable_variables)
        d_opt.apply_gradients(zip(dg, disc.trainable_variables))
        g_opt.apply_gradients(zip(gg, gen.trainable_variables))

    for i in range(STEPS):
        (one_tape if persistent else two_tapes)(real[i * BATCH:(i + 1) * BATCH], zs[i])


def gan_two_tapes_function():
    _gan(False)


def gan_persistent_tape_eager():
    _gan(True)
