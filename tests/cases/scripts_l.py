# ruff: noqa: B905  (zip(grads, variables) exactly as users write it)
"""Single-run scripts for `gradtrace check` (see scripts.py for the conventions): mixed precision
gradients of scale_loss() unscaled by hand before the inner optimizer applies them, a GRU tagger whose
loss object in the tape applies the output's mask, a mean teacher called in training mode outside the tape.
"""

from __future__ import annotations

from . import data
from .scripts_f import _mixed, _mp_mlp
from .scripts_models import BATCH, STEPS, _digits, _keras, _sparse_ce, _tf

# --- mixed precision: scale_loss() in the tape, the gradients unscaled by hand, the inner optimizer applies ---


def tape_mixed_scaled_loss_unscaled_by_hand():
    """The gradients of scale_loss(loss) divided by the scale by hand, then the inner optimizer
    applies them: the same updates as the wrapper's apply (without its overflow skipping)."""
    def script():
        tf = _tf()
        keras = _keras()
        x, y = _digits()
        model = _mp_mlp()
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
        opt.build(model.trainable_variables)  # creates dynamic_scale
        ce = _sparse_ce()

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = ce(yb, model(xb, training=True))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            grads = [g / tf.cast(opt.dynamic_scale, g.dtype) for g in grads]
            opt.inner_optimizer.apply_gradients(zip(grads, model.trainable_variables))

        for xb, yb in data.batches(x, y, BATCH, STEPS):
            step(xb, yb)

    _mixed(script)


# --- a GRU tagger over Embedding(mask_zero=True): a Keras loss object in the tape applies the output's mask ---


def tape_masked_gru_tagger_loss_object():
    """SparseCategoricalCrossentropy()(y, out) on the masked output: Keras 3's Loss.__call__ reads
    the mask the output carries and averages over the valid entries, as fit() does."""
    from .scripts_i import _tagger_loop

    keras = _keras()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _tagger_loop(lambda xb, yb, out: ce(yb, out))


# --- a mean teacher: a copy of the student, called in training mode outside the tape, averaged with assign ---


def _mean_teacher(validate_in_training_mode: bool, teacher_training: bool = True):
    from .scripts_more import _bn_drop_mlp

    tf = _tf()
    keras = _keras()
    x, y = data.classification()
    x_val = x[STEPS * BATCH:STEPS * BATCH + 64]
    student = _bn_drop_mlp()
    teacher = keras.models.clone_model(student)
    teacher.set_weights(student.get_weights())
    opt = keras.optimizers.SGD(0.05)
    ce = _sparse_ce()

    @tf.function
    def step(xb, yb):
        target = tf.nn.softmax(teacher(xb, training=teacher_training))
        with tf.GradientTape() as tape:
            out = student(xb, training=True)
            loss = ce(yb, out) + tf.reduce_mean(tf.square(tf.nn.softmax(out) - target))
        grads = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(grads, student.trainable_variables))
        for tw, sw in zip(teacher.weights, student.weights):
            tw.assign(0.99 * tw + 0.01 * sw)

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)
        if validate_in_training_mode:
            student(x_val, training=True)


def tape_mean_teacher_ema():
    """The teacher (a clone of the student, its weights an exponential moving average of the
    student's, written with assign) makes noisy targets with teacher(x, training=True) before the
    tape; only the student is trained. The teacher's BatchNormalization and Dropout in training
    mode are the recipe (its noise), not the student's layers run outside the steps."""
    _mean_teacher(False)


def tape_mean_teacher_student_validated_in_training_mode():
    """The same, and the student scores a validation batch with student(x_val, training=True)."""
    _mean_teacher(True)


def tape_mean_teacher_in_inference_mode():
    """The same mean teacher making its targets with teacher(x, training=False): no Dropout on
    the targets, its BatchNormalization on the moving statistics its weight average writes."""
    _mean_teacher(False, teacher_training=False)


# --- a second loss differentiated apart: its gradients added to the applied ones, or dropped ---------


def fit_digits_ce_plus_output_penalty():
    """fit() with one loss function: cross-entropy plus 0.01 x the mean squared logit."""
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    from .scripts_models import _digits_mlp, _fit

    model = _digits_mlp(seed=251)
    ce = _sparse_ce()

    def loss(yt, yp):
        return ce(yt, yp) + 0.01 * tf.reduce_mean(tf.square(yp))

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    _fit(model, x, y)


def _two_losses(add: bool):
    tf = _tf()
    keras = _keras()
    x, y = _digits()
    from .scripts_models import _digits_mlp

    model = _digits_mlp(seed=251)
    ce = _sparse_ce()
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape(persistent=True) as tape:
            out = model(xb, training=True)
            l1 = ce(yb, out)
            l2 = 0.01 * tf.reduce_mean(tf.square(out))
        g1 = tape.gradient(l1, model.trainable_variables)
        g2 = tape.gradient(l2, model.trainable_variables)
        grads = [a + b for a, b in zip(g1, g2)] if add else g1
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for xb, yb in data.batches(x, y, BATCH, STEPS):
        step(xb, yb)


def tape_two_losses_gradients_added():
    """The same two terms differentiated one by one with a persistent tape, their gradients added."""
    _two_losses(True)


def tape_second_loss_gradients_dropped():
    """The penalty's gradients computed and never used: only the cross-entropy's are applied."""
    _two_losses(False)


# --- a partial last batch: the per-example losses summed and divided by the full batch's size ---


def _digits_250(loss_of, batches_of):
    """fit_digits_partial_last_batch's model and SGD in a tf.function tape loop over
    ``batches_of(dataset of the 250 digits)``: loss_of(model, xb, yb) -> the step's loss."""
    from .scripts_models import _digits_mlp_small, _loop

    tf = _tf()
    keras = _keras()
    x, y = data.digits(250)
    batches = batches_of(tf.data.Dataset.from_tensor_slices((x, y)))
    _loop(_digits_mlp_small(), keras.optimizers.SGD(0.1), loss_of, x, y, batches=batches)


def _digits_partial_batch_loop(reduce, reduction: str | None = "none"):
    """Batches of 32 (a last batch of 26 per epoch, as fit() keeps it), two epochs;
    ``reduce(per_example_losses)`` -> the step's loss (``reduction=None``: Keras 3's spelling)."""
    keras = _keras()
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    _digits_250(lambda m, xb, yb: reduce(per_example(yb, m(xb, training=True))),
                lambda ds: [b for _epoch in range(2) for b in ds.batch(32)])


def tape_digits_partial_batch_mean():
    """The batch's own mean: equal to fit() on the partial batch too."""
    tf = _tf()
    _digits_partial_batch_loop(tf.reduce_mean)


def tape_digits_partial_batch_fixed_divisor():
    """compute_average_loss with global_batch_size=32: right on full batches, 26/32 of the mean on the
    last batch of each epoch."""
    tf = _tf()
    _digits_partial_batch_loop(lambda losses: tf.nn.compute_average_loss(losses, global_batch_size=32))


def tape_digits_repeat_then_batch():
    """The 250 digits repeated for two epochs and then batched: the batch at the first epoch's end
    holds its last 26 examples and the next epoch's first 6 (fit() steps on a partial batch of 26)."""
    ce = _sparse_ce()
    _digits_250(lambda m, xb, yb: ce(yb, m(xb, training=True)), lambda ds: ds.repeat(2).batch(32))


# --- trained weights written by hand after each update (a WGAN critic's clipping, a max-norm) ---


def _digits_weights_clipped_loop(c: float, first_kernel_only: bool = False, top_eagerly: bool = False,
                                 seed: int = 43):
    """The digits MLP of fit_digits_adam_eps in a tape loop that clips every trained variable (or
    only the first layer's kernel) to [-c, c] after apply_gradients, in the step function (or at
    the top of an eager step, before the forward pass)."""
    from .scripts_models import _ce_loop, _digits_mlp

    tf = _tf()
    keras = _keras()
    x, y = _digits()
    model = _digits_mlp(seed)

    def clip():
        for w in [model.layers[0].kernel] if first_kernel_only else model.trainable_variables:
            w.assign(tf.clip_by_value(w, -c, c))

    opt = keras.optimizers.Adam(1e-2, epsilon=1e-7)
    if top_eagerly:
        _ce_loop(model, opt, x, y, before=clip, function=False)
    else:
        _ce_loop(model, opt, x, y, after=clip)


def tape_digits_weights_clipped():
    """Clipped at 0.1: the kernel's larger weights are cut after every update."""
    _digits_weights_clipped_loop(0.1)


def tape_digits_weights_clip_never_reached():
    """Clipped at 100: no weight comes near it, the writes leave the weights as they were."""
    _digits_weights_clipped_loop(100.0)


def tape_digits_weights_clipped_wider():
    """Clipped at 0.2: tape_digits_weights_clipped's writes with another value."""
    _digits_weights_clipped_loop(0.2)


def tape_digits_weights_clip_at_50():
    """Clipped at 50: like tape_digits_weights_clip_never_reached, another value no weight reaches."""
    _digits_weights_clipped_loop(50.0)


def tape_digits_weights_clipped_at_the_top_eagerly():
    """Clipped at 0.1 at the top of an eager step: the first write precedes step 0 (and the
    initial-weight fingerprint, taken at the first step)."""
    _digits_weights_clipped_loop(0.1, top_eagerly=True)


def tape_digits_weights_clipped_other_seed():
    """tape_digits_weights_clipped with the model built from another seed."""
    _digits_weights_clipped_loop(0.1, seed=5)


def tape_digits_first_kernel_clipped():
    """Clipped at 0.1 like tape_digits_weights_clipped, the first layer's kernel only."""
    _digits_weights_clipped_loop(0.1, first_kernel_only=True)


def _digits_maxnorm_by_hand(max_value: float):
    """fit_digits_maxnorm's model without the constraint, in a tape loop that projects the kernel by
    hand after every update (``kernel.assign(MaxNorm(max_value)(kernel))``)."""
    from .scripts_models import _ce_loop

    keras = _keras()
    x, y = _digits()
    keras.utils.set_random_seed(47)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    project = keras.constraints.MaxNorm(max_value)
    kernel = model.layers[0].kernel
    _ce_loop(model, keras.optimizers.SGD(0.5), x, y, after=lambda: kernel.assign(project(kernel)))


def tape_digits_maxnorm_by_hand():
    _digits_maxnorm_by_hand(0.5)


def tape_digits_maxnorm_by_hand_other_value():
    _digits_maxnorm_by_hand(0.3)


# --- gradients accumulated by hand over two micro-batches of 16, applied once per batch of 32 ---


def tape_digits_two_micro_batches_summed():
    """Each batch of 32 as two micro-batches of 16: their gradients summed (not averaged) and
    applied once, as many steps as fit()'s batches of 32 (scripts.fit_digits_sgd_sparse)."""
    import tensorflow as tf

    from .scripts import _digits_slice, _mlp

    keras = _keras()
    x, y = _digits_slice()
    model = _mlp(64, 10)
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in data.batches(x, y, BATCH, STEPS):
        total = None
        for lo in (0, BATCH // 2):
            with tf.GradientTape() as tape:
                loss = ce(yb[lo:lo + BATCH // 2], model(xb[lo:lo + BATCH // 2], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
        opt.apply_gradients(zip(total, model.trainable_variables))
