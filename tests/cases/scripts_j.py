# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""An eighth set of pairs (see scripts.py for the conventions), from scripts written for kinds of
training the other sets cover little: mixed precision with a LossScaleOptimizer in a tape loop.
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
