"""The finding catalogue: every ``kind`` the comparator can report.

The ``kind`` strings are part of the API (CLI ``--json``, REST, the web UI): they
never change meaning. Each entry says what triggers it, its default severity
and the fix a user should try; a detector may sharpen the fix with what it saw.

Severities:

- ``error``: explains a divergence between the runs (or a defect of one run);
- ``warning``: a difference that may matter;
- ``info``: context (execution mode, what could not be compared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Kind:
    """One entry of the catalogue."""

    kind: str
    severity: Severity
    needs_alignment: bool
    trigger: str
    fix: str
    # Lower runs first among findings of equal severity: causes before symptoms.
    rank: int = 50


_KINDS = [
    Kind(
        "layer_config_mismatch", "error", False,
        "Structurally paired layers were built with different arguments (a Dropout rate, a "
        "BatchNormalization momentum or epsilon, an activation, units, a regularizer's factor, an "
        "argument set in one run only such as a kernel constraint or a bias regularizer); compared "
        "between runs of the same Keras, layers paired through the variables they own (a subclassed "
        "model may create its layers in another order than it calls them). A weight constraint in one "
        "run only takes the equal-gradients-other-updates step as its evidence (Keras projects the "
        "weights right after the update); regularizers of another class (L1 against L2) take the "
        "measured penalty gap, which no factor relates. Arguments that differ while the losses, "
        "gradients, updates and the layers' state agree at every aligned step are context: at those "
        "settings the layers compute the same (a constraint that never binds, an activation given as a "
        "layer of its own, a penalty the other run adds to its loss by hand).",
        "Build both models with the same layer arguments (see the arguments named).",
        rank=4,
    ),
    Kind(
        "call_argument_mismatch", "error", False,
        "Structurally paired layers were called with different optional arguments of their `call` "
        "(`use_causal_mask=True` on a MultiHeadAttention in one run only, `return_attention_scores`, a "
        "`mask`, `attention_mask` or `initial_state` tensor given in one run only; any argument with a "
        "default other than `training`, found from the layer's signature): recorded by the tracer when "
        "the layer is called by a model or the script (not by a Keras layer's own implementation), "
        "static values as they are, tensors only as given. An argument left out counts as its "
        "signature's default, so `use_causal_mask=False` and no flag are the same call. Layers paired "
        "through the variables they own, compared between runs of the same Keras; the aligned steps' "
        "differences are its evidence, and every aligned step agreeing makes it context.",
        "Call the layer with the same arguments in both runs (see the arguments named).",
        rank=4,
    ),
    Kind(
        "training_mode_mismatch", "error", False,
        "A layer whose behaviour depends on `training` (BatchNormalization, Dropout, noise layers, "
        "found generically) ran in another mode during optimizer steps than in the other run, or "
        "in inference mode while training in a single run. Compared runs whose losses, gradients and "
        "updates agree at every aligned step with no state frozen show that the layer computes the same "
        "in both modes at its settings (a recurrent layer without dropout): then it is context. So is a "
        "layer whose recorded arguments make the mode irrelevant in both runs (every dropout rate 0, no "
        "state of its own: MultiHeadAttention or a GRU without dropout), whatever the steps do. When the "
        "inference run is a Keras 3 fit() in which no layer got `training=True`, the model's `call` takes no "
        "`training` argument (fit() passes it only to one that does): the finding says so and the fix is "
        "the model's signature; when that fit() ran a custom `train_step` (Keras 3 or tf-keras), it is the "
        "`train_step` that called `self(x)` without `training=True`, and the fix is that call. Layers of a model no optimizer of the runs trains (a mean teacher or a "
        "target network called in the step, `RunInfo.untrained_models`) are named as that model's: its "
        "mode changes the targets it hands the loss, and the fix is its call's `training` argument. "
        "`gradtrace check` makes BatchNormalization in inference mode at every step an error (its "
        "statistics never move), and warns of layers a Keras 3 functional model calls with "
        "`training=False` written at the call site (`base(inputs, training=False)`, the transfer-learning "
        "guide's) that ran in training mode while not frozen: Keras 3 passes the outer `training=True` "
        "over that argument, tf-keras keeps it. It also warns of a frozen layer (`trainable=False`, so in "
        "inference mode) that ran in every step exactly as a new layer is made (each variable all zeros or all "
        "ones by the initial fingerprints, never changed, never written): a BatchNormalization frozen before "
        "it learned any statistics normalizes nothing (context when other layers' weights are frozen beside it: "
        "a base or teacher as built, never trained or loaded in the run).",
        "Call the model with `training=True` inside the tape (`model(x, training=True)`) and pass "
        "`training` through to every sub-layer of a subclassed model's `call`.",
        rank=5,
    ),
    Kind(
        "loss_mismatch", "error", False,
        "The Keras loss objects the two runs' steps called differ in class, `from_logits` or an "
        "argument (`label_smoothing`, Huber's `delta`, ...; with classes that differ, also an argument "
        "only one of them takes, set to a value that acts; read from the steps, so a tape loop's "
        "loss object counts as much as compile()'s; a multi-output step's losses are compared "
        "output by output), or one run calls it with its arguments swapped (`loss(y_pred, y_true)`, "
        "PyTorch's order: the model's output reached it as `y_true`; `gradtrace check` reports that of a "
        "single run, for losses not symmetric in their arguments); `gradtrace check` also makes it an error "
        "when a cross-entropy is called with `from_logits=False` on logits (inside `tf.function` and fit() the "
        "output of a layer without an activation, read from the step's graph; eagerly values outside "
        "[0, 1]), or with `from_logits=True` on probabilities no Keras activation made (eagerly: rows "
        "summing to 1 from a `tf.nn.softmax` in `call`, which the loss squashes again), and warns of a "
        "categorical cross-entropy on the output of a sigmoid (it normalizes each row into one distribution); "
        "or the first steps "
        "call the same "
        "loss and later steps another one, named with the step it starts at (a later fit() call "
        "compiled with another loss, read from the run's fit() calls; a loop that switches its loss "
        "object, read from its last step's loss details). Losses that agree step by step "
        "make it context: `from_logits=True` on a softmax/sigmoid output in Keras 3, which reads the logits under the activation anyway, is "
        "named with the run to change; logits with `from_logits=True` against a sigmoid's or softmax's output "
        "with `from_logits=False` are both right, and said so. Losses whose values differ while every gradient and update "
        "agrees at every compared step differ by a term the weights do not change (KL divergence against "
        "cross-entropy: the targets' entropy): context too. The sparse and the categorical "
        "cross-entropy, each on its own label encoding (integer labels, one-hot rows of the predictions' "
        "shape; no label smoothing, no ignored class), are one loss: context, even where the steps "
        "cannot be compared. `gradtrace check` makes a binary cross-entropy given labels outside [0, 1] "
        "(coded 1/2, -1/1, 0/255, class indices 0/1/2; read from the label fingerprints: their sum of squares "
        "exceeds their sum; at two of the first 64 steps at least, a batch that happens to hold only 0s and "
        "1s being no counter-example) an error, and a hinge loss's labels outside [-1, 1]; and reports a "
        "regression loss (MSE, MAE, Huber, log-cosh) fitting the output of a bounded activation (a relu, "
        "softplus, exponential, sigmoid, softmax or tanh, read from the step's graph) to targets outside its "
        "range (targets in [lo, hi] have sum(y^2) <= (lo + hi) sum(y) - lo hi n, and sum(y) >= lo n): an "
        "error when a batch's mean target is itself out of range, else a warning.",
        "Use the same loss in both runs; `from_logits=True` when the model outputs logits (no "
        "softmax/sigmoid on its last layer), `False` when it outputs probabilities. A regression output "
        "that must reach negative or unbounded targets takes no activation.",
        rank=6,
    ),
    Kind(
        "frozen_state", "error", False,
        "Non-trainable state (BatchNormalization moving statistics) changes in one run and stays "
        "fixed in the other. A layer frozen in one run (`trainable = False`, in Keras 3 a "
        "BatchNormalization in inference mode) whose weights the other run leaves out of its gradients "
        "is this finding alone: the weights' `trainable_mismatch` is context, as neither run trains them.",
        "Run BatchNormalization in training mode during optimizer steps (`training=True`); in Keras 3 "
        "a layer with `trainable=False` also freezes its statistics.",
        rank=8,
    ),
    Kind(
        "state_mismatch", "warning", True,
        "The losses, gradients and updates agree at every aligned step, but paired non-trainable state "
        "(BatchNormalization's moving statistics) changes by different amounts from some step on: training "
        "is the same, what inference uses is not (an extra forward pass in training mode per step, e.g. "
        "a metric computed with `model(x, training=True)` outside the tape, updates the statistics again), "
        "so evaluate(), predict() and validation differ. Where the tracer counted such extra calls of "
        "the layers whose state departs (`training_outside_steps`), the departure is that finding's "
        "evidence instead.",
        "Call the model in training mode once per step and compute metrics from that output (`logits = "
        "model(x, training=True)` inside the tape, then `metric.update_state(y, logits)`); for other "
        "predictions call it with `training=False`.",
        rank=8,
    ),
    Kind(
        "repeated_step", "error", False,
        "The optimizer steps more than once on every batch (from some batch on: a loop may start calling "
        "its step again part way, after an epoch of single steps): consecutive steps of the same optimizer on "
        "the same input and label fingerprints (a train step called again, e.g. to log its loss), or a "
        "step without a batch of its own carrying the previous step's loss (`apply_gradients` called "
        "twice on the same gradients). In a comparison, one run steps k times per batch and the other "
        "once; `check` warns about it in a single run. Full-batch training (one batch) is not a repeat. "
        "Also: every step trained on one batch (equal input and label fingerprints at every step, eight at "
        "least) while the script opened a new iterator over a tf.data pipeline of more than one element "
        "once per step or more (`next(iter(dataset))` inside the loop reads the first batch each time; "
        "the tracer counts the iterators opened): an error in `check` and for that run in a comparison. "
        "Also, some steps but not all (two at least, at most half of them) repeating the batch of the step "
        "before, with the same optimizer's next iteration: a train step called again on some batches to log "
        "the loss; `check` warns, a comparison names the run that does it.",
        "Call the train step and `apply_gradients` once per batch; keep the loss the step returns "
        "instead of calling it again. Open a dataset's iterator once, before the loop (`it = iter(ds)`, "
        "then `next(it)`), or loop `for x, y in ds:`.",
        rank=9,
    ),
    Kind(
        "unshuffled_data", "error", False,
        "A run's batches each hold a single class, the classes in long runs of consecutive batches: the "
        "data is sorted (or grouped) by label and never shuffled, so the model fits one class for many steps, "
        "then the next. Read from the label fingerprints of a classification loss with one class per example "
        "(integer or one-hot labels): at least 8 batches of 4 rows or more, 60 % of them single-class, and two "
        "classes or more each filling 3 consecutive batches or more (shuffled data with a rare class gives "
        "single-class batches of the common class only). In a comparison an error for the one run that does "
        "it; `check` warns about it in a single run.",
        "Shuffle the examples before batching: `dataset.shuffle(buffer_size=len(x))` before `.batch()` (a "
        "buffer much smaller than the data still yields one class at a time), a permutation of the arrays "
        "each epoch, or `fit(shuffle=True)`.",
        rank=9,
    ),
    Kind(
        "exploding_loss", "warning", False,
        "`gradtrace check`: the first updates made the loss several times larger. The median loss of "
        "the 10 steps after step 0 is 4 times step 0's or more, and so is the median global gradient "
        "norm where the steps recorded it (10 times, for the loss alone, where none did). Read from runs "
        "of one optimizer whose losses are finite and nonnegative at every step (NaN/Inf is `numerics`), "
        "not scaled for mixed precision: the steps overshoot.",
        "Lower the learning rate (by 10x at a time), or warm it up; clip the gradients "
        "(`clipnorm=1.0`); normalise the inputs.",
        rank=30,
    ),
    Kind(
        "skipped_batches", "error", False,
        "One run's optimizer steps on only every s-th batch of the other's: its step k trains on the "
        "batch the other run steps on at step s*k + o (input and label fingerprints equal), so the "
        "batches in between never update its model (an `apply_gradients` under a condition such as "
        "`if i % s == 0` without accumulating the other batches' gradients, a loop that draws s batches "
        "per step, or gradients accumulated by hand: the record carries the last micro-batch); or its "
        "batches are the other's in the same order with some left out: a last, partial batch of each "
        "epoch dropped (`drop_remainder=True`) where fit() keeps it.",
        "Apply the gradients of every batch; to update once per s batches, accumulate (sum the s "
        "batches' gradients, divide by s) in the loop, or use the optimizer's "
        "`gradient_accumulation_steps=s`, and compare against a run of s times larger batches. Keep "
        "or drop the partial last batch in both runs.",
        rank=9,
    ),
    Kind(
        "model_recreated", "error", False,
        "One run trains a new copy of its model part way: variables of the same shapes as its first "
        "model's appear and take the gradients from step k on while the first model's get none (a model, "
        "often with its optimizer, built inside the epoch loop), so training restarts from fresh weights. "
        "`gradtrace check` warns of it in a single run, also when a copy is built at every epoch (the new "
        "variables are several copies of the first model's; the steps that list the first model's "
        "variables without a gradient show where it stopped training).",
        "Build the model and the optimizer once, before the training loop; keep training that one model.",
        rank=9,
    ),
    Kind(
        "missing_gradient", "error", False,
        "Trainable variables got no gradient (None) in one run (\"Gradients do not exist for "
        "variables\"). The variables of a model no optimizer of the run was given (a mean teacher or a "
        "target network written by assign) are not counted, unless tape.gradient was asked for them and "
        "returned None while the forward pass read them (a separate encoder cut off by `tf.stop_gradient` "
        "or a NumPy round trip, its None gradients dropped before apply_gradients), or without ever reading them "
        "under the tape (a separate feature model called before the tape opened). `gradtrace check` also warns of variables "
        "created with `trainable=False` that tape.gradient was asked for (a tape does not watch them: "
        "None, often dropped by the script before apply_gradients). It tells variables the tape never saw read "
        "(their layers not called in the step's forward pass: an auxiliary head, a branch not taken; recorded "
        "from the tape's watched variables), a warning, from variables read but disconnected from the loss "
        "(`tf.stop_gradient`, a NumPy round trip), an error; and variables whose gradient is None at some "
        "steps only are context when they fall in groups that take turns (heads trained at alternate steps). "
        "It also warns of a model whose output the Keras loss takes as its predictions while none of its trainable variables is given to an optimizer or written by the script (a decoder left out of the variables handed to tape.gradient).",
        "Differentiate with respect to `model.trainable_variables` and make sure every variable "
        "takes part in the loss (no `tf.stop_gradient`, no numpy round trip inside the tape).",
        rank=10,
    ),
    Kind(
        "trainable_mismatch", "error", False,
        "Variables trained in one run are frozen (not in the model's trainable variables) in the "
        "other: a layer or sub-model set `trainable=False` in one script only; or one run stops "
        "giving them gradients from step k on while the other keeps training them (a layer frozen "
        "between two fit() calls in one run only, or in both with one fit() keeping the train "
        "function it built before the freeze: no compile() after it); or, frozen in both at first, "
        "one run unfreezes them at a later fit() call (fine-tuning) and the other does not, or at "
        "another step. A run whose model flags them frozen by its end while its fit() trained them "
        "throughout (`trainable = False` set after compile(), which tf-keras's fit() does not take in) "
        "is named as the run whose freeze did not take effect. `gradtrace check` makes it an error in "
        "one run when variables unfrozen before a later fit() call (or a new optimizer's first step) get "
        "no gradient and no update at any step after it (no more variables get a gradient than before): "
        "the unfreeze did not take effect.",
        "Freeze the same layers in both runs, and set `layer.trainable` before `compile()` (fit() "
        "reads it when it builds its train function; a tape loop reads `model.trainable_variables` "
        "when it is called); after changing it part way through, call `compile()` again.",
        rank=11,
    ),
    Kind(
        "not_applied", "error", False,
        "Variables that had a gradient were not updated by the optimizer, or the two runs updated "
        "different sets of variables.",
        "Pass the same list to `tape.gradient` and `apply_gradients`: "
        "`zip(grads, model.trainable_variables)` (not `trainable_weights` of one sub-model).",
        rank=12,
    ),
    Kind(
        "discarded_gradient", "error", False,
        "A `tape.gradient` call of the training step computes gradients with respect to trainable "
        "variables that nothing uses: no optimizer applies them, no applied gradient is computed from "
        "them (`g1 + g2`), no variable is assigned from them (an accumulator) and the step does not "
        "return them: `g1 = tape.gradient(loss1, vars); g2 = tape.gradient(loss2, vars); "
        "apply_gradients(zip(g1, vars))`. That loss trains nothing. Seen by the tracer inside "
        "`tf.function` steps (followed op by op when the function is traced); an eager loop's dropped "
        "gradients leave no trace to follow.",
        "Differentiate the total loss once (`tape.gradient(loss1 + loss2, vars)`), or add the gradients "
        "before applying them (`[a + b for a, b in zip(g1, g2)]`); delete the call if its loss is not meant "
        "to train.",
        rank=2,
    ),
    Kind(
        "misapplied_gradient", "error", False,
        "`apply_gradients` received gradients paired with other variables than `tape.gradient` "
        "computed them for: `zip(grads, vars_b)` with `vars_b` the differentiated variables in another "
        "order (a list built layer by layer, `reversed`, two equal-shaped kernels swapped). The shapes "
        "agree, so TensorFlow trains on. Seen by the tracer in eager loops and inside `tf.function` "
        "(there also through clipping, scaling or casting of the gradients).",
        "Zip the gradients with the very list that was differentiated: `vars = "
        "model.trainable_variables; grads = tape.gradient(loss, vars); "
        "opt.apply_gradients(zip(grads, vars))`.",
        rank=2,
    ),
    Kind(
        "input_scale", "error", False,
        "At every step the runs' input fingerprints are related by one map x_b = k * x_a (+ c) while the "
        "labels are identical: one run scales or normalises its inputs differently (a /255 forgotten or "
        "applied twice, another mean/std). A map the model undoes itself (a Rescaling layer in one run: "
        "the same step-0 loss) is not reported; the steps are then aligned on the labels. Labels identical at "
        "every step with inputs that differ at every step by no single map are a per-feature "
        "preprocessing in one run (a StandardScaler, min-max scaling per column), reported the same way.",
        "Preprocess the inputs the same way in both runs (one shared function, a scaler fitted once), or "
        "put the scaling in the model (`keras.layers.Rescaling`, `keras.layers.Normalization`) so both runs "
        "feed the same raw data.",
        rank=13,
    ),
    Kind(
        "input_order", "error", False,
        "At every step the runs' input fingerprints agree on everything that does not depend on the "
        "order of the values (sum, sum of squares, count) but not on their weighted sum, while the labels "
        "are identical: the same numbers arranged differently (a multi-input model's inputs swapped, "
        "features or examples reordered without their labels).",
        "Feed the inputs in the same order in both runs: pass a multi-input model a dict keyed by its "
        "Inputs' names (or a list in the order of `model.inputs`), and reorder examples together with "
        "their labels.",
        rank=13,
    ),
    Kind(
        "label_scale", "error", False,
        "At every step the runs' inputs are identical while their label fingerprints are related by one "
        "map y_b = k * y_a (+ c): one run scales, standardises or shifts its targets (a regression target "
        "standardised in one run only, class indices shifted by one); labels that differ at every step by "
        "no single map, moved the same way at each step, are targets transformed column by column (each "
        "target standardised on its own), reported the same way. A map the loss undoes (targets "
        "smoothed by hand against a loss's label_smoothing: the same step-0 loss) is not reported; the steps "
        "are then aligned on the inputs.",
        "Train both runs on the same targets: apply the target transform in both (one shared function) or "
        "in neither; to report in the original units, invert it on the predictions instead.",
        rank=13,
    ),
    Kind(
        "loss_not_differentiated", "error", False,
        "A Keras loss computed inside the tape (one output's loss of a multi-output model) does not "
        "reach the tensor handed to `tape.gradient`, and trainable variables get no gradient: "
        "`tape.gradient(label_loss, ...)` where the total was meant. Seen inside `tf.function` (the "
        "graph says what the target depends on) and, eagerly, when the differentiated tensor is one "
        "loss call's output itself; otherwise the variables show as `missing_gradient`.",
        "Differentiate the total of the step's losses: `loss = label_loss + score_loss; "
        "tape.gradient(loss, model.trainable_variables)`.",
        rank=9,
    ),
    Kind(
        "zero_gradient", "error", False,
        "Variables one run trains get a gradient that is exactly zero at every recorded step in the "
        "other: nothing in its loss depends on them (a `tf.stop_gradient` or a numpy round trip above "
        "them) and zeros stand in for the None gradients TensorFlow returned "
        "(`[tf.zeros_like(v) if g is None else g ...]`), so no warning is raised and the optimizer "
        "leaves them unchanged. `gradtrace check` warns of such variables in one run, and makes it an "
        "error when they are every trainable variable (the forward pass ran before the tape opened: "
        "nothing trains); it is an error too when the gradients the optimizer applied to every trainable "
        "variable are exactly zero at every recorded step while the loss is not, zeros of the script's own "
        "making (a clipping bound of 0, such as `int(0.5)`; a factor of 0).",
        "Remove the `tf.stop_gradient` between these variables and the loss (in the model's `call` or "
        "the tape); to freeze them on purpose set `layer.trainable = False` in both runs instead of "
        "feeding zero gradients.",
        rank=9,
    ),
    Kind(
        "zero_learning_rate", "error", False,
        "`gradtrace check`: the learning rate the optimizer applied is 0 at every step from some step to "
        "the run's last while the gradients are not zero, so those steps change no weight: from the first "
        "step (`learning_rate=0`, a rate read from an unset variable or config) or for half the run or "
        "more an error, for fewer steps at its end (a schedule that reaches 0 before the training ends) a "
        "warning. A schedule that reaches 0 only at the last step is not reported.",
        "Give the optimizer a learning rate above 0; for a schedule, make its decay span the whole training "
        "(`decay_steps` = the number of optimizer steps, or a floor such as `alpha` / `end_learning_rate` "
        "above 0).",
        rank=9,
    ),
    Kind(
        "shape_broadcast", "error", False,
        "Labels and predictions of different shapes ((N,) vs (N, 1)) were combined elementwise in "
        "the loss and broadcast to (N, N): the loss differs while the predictions are identical. In a "
        "step traced for any batch size (fit(), a custom train_step: shapes (None, 1) and (None,)) the "
        "unknown sizes are the step's recorded batch size. `gradtrace check` also warns of a Keras loss that "
        "compares entry by entry (mse, mae, Huber, binary cross-entropy, ...) given labels and predictions "
        "that, as the loss lines them up, still broadcast one over an axis of the other ((N, 1) labels "
        "against (N, T, 1) predictions: a recurrent layer left with `return_sequences=True`).",
        "Make the shapes agree before the loss: `y = tf.reshape(y, (-1, 1))` or "
        "`tf.squeeze(y_pred, -1)`; Keras losses do this for you.",
        rank=15,
    ),
    Kind(
        "regularization_mismatch", "error", True,
        "The loss difference equals the model's regularization losses (`model.losses`): one run "
        "adds them, the other does not. Where both runs' Keras losses recorded the same data loss, what "
        "each adds on top is compared: added twice (a train step adding `sum(self.losses)` to "
        "compute_loss's result), or a hand-written penalty with another factor (the factor is named); "
        "with no data loss recorded, regularizers of another factor show as `sum(model.losses)` that "
        "differs on the same weights, and a hand-written penalty on a model without regularizers (the "
        "gradients of every unregularized variable agree) as the loss gap's remainder of the other run's "
        "`sum(model.losses)`. Regularizers of another class on paired layers (L1 against L2) are a "
        "layer_config_mismatch with this gap as evidence. `check` makes it an error when a single run's loss holds "
        "`sum(model.losses)` twice or not at all next to its Keras loss's data loss; `compare` reports "
        "those per-run counts where they differ and no step could be compared (another training mode, "
        "other batches). Added terms whose ratio swings over the first steps are no penalty of another "
        "factor but a term computed from something that differs (a teacher's outputs, an auxiliary loss): "
        "a warning that says so.",
        "Add `sum(model.losses)` to the loss inside the tape (fit() does it for you; in a custom train_step "
        "call `self.compute_loss(x=x, y=y, y_pred=y_pred)`, which adds them, not the loss object itself); "
        "once, and with the same factor in both runs.",
        rank=18,
    ),
    Kind(
        "sample_weighting", "error", False,
        "Class or sample weights were used in one run only (also a loop that weights its later steps only); or both runs give fit() weights and one run's "
        "steps call the Keras loss without them (a custom train_step that does not pass `sample_weight=` to "
        "`compute_loss`; read from the weight statistics the loss calls recorded); or both runs weight "
        "their samples and, on the same batches, the weights the Keras loss received sum differently "
        "(class weights looked up by the sample's position instead of its label). Weights in one run only "
        "that change no loss, gradient or update at any aligned step (all ones, or a padding mask given as "
        "`sample_weight=` to a loss that applies the output's mask anyway) are context. `gradtrace check` warns "
        "of one run whose model output carries a mask (`Embedding(mask_zero=True)`, `Masking`) and whose loss "
        "handed to tape.gradient is the mean of a Keras loss function's per-entry losses over every entry, "
        "padding included (a loss function applies no mask; a loss object does); and makes it an error in one "
        "run whose fit() was given `class_weight=` or `sample_weight=` while the Keras loss its custom "
        "train_step calls receives no weights at any step.",
        "Apply the same weights in both runs: `fit(class_weight=...)` multiplies each sample's loss; "
        "in a tape loop pass `sample_weight=` to the Keras loss.",
        rank=20,
    ),
    Kind(
        "loss_scale", "error", True,
        "On the same inputs and weights the losses differ by a constant factor (number of outputs: "
        "a mean over the last axis as Keras `mse` does; batch size: sum vs mean, or a per-sample "
        "loss vector handed to `tape.gradient`; the valid fraction of a mask; batch/sum(weights); the "
        "number of a multi-output model's outputs: their losses averaged in one run, summed in the other). "
        "The same factor at every aligned step with equal updates (a summed loss with the learning "
        "rate divided by the batch size) is the same training: context. Beneath another training mode "
        "or layer setting, which leaves step 0 with no exact factor, a warning: the step-0 loss ratio "
        "and every gradient-norm ratio cluster around one value (spread below 0.15 in log) that matches "
        "such a count. A factor that matches no count is measured as the divisor of a per-example loss "
        "summed and divided by a fixed count (`tf.nn.compute_average_loss` with another `global_batch_size`). "
        "A fixed count equal to the full batch agrees on every full batch: the runs then part at the first "
        "batch of another size (the last, partial batch of an epoch), by that batch's size over the full "
        "batch's in the loss and every gradient, which names the run that divides by the fixed count. "
        "`gradtrace check` warns of that in a single run whose Keras loss returns per-example losses: their "
        "mean on every full batch, their sum over the full batch's size on a smaller one.",
        "Reduce the loss the same way in both runs (see the factor it matched).",
        rank=22,
    ),
    Kind(
        "random_draws", "error", True,
        "At an aligned step the random generators of the runs' random layers (Keras SeedGenerator state, a "
        "counter that advances with each draw) moved by other amounts: one run draws more random numbers "
        "per step (the model or a Dropout/noise/augmentation layer called again in training mode, e.g. a "
        "second forward pass for a metric), so from that step on its layers apply other masks though both "
        "started from the same seed; the loss and gradient differences from that step fold into it.",
        "Call the model once per step in training mode: compute metrics from the forward pass that makes "
        "the loss, or call the model with `training=False` for them.",
        rank=12,
    ),
    Kind(
        "gradient_sign", "error", True,
        "On the same inputs and weights every gradient of one run is the other's negated (sketch cosine "
        "-1 for every variable, one norm ratio for all): one run climbs the loss the other descends. "
        "With equal losses the gradients were negated between `tape.gradient` and the apply (`-g`, "
        "`tf.negative`); with losses of opposite sign the loss handed to `tape.gradient` was negated "
        "(`loss = -cross_entropy`, a log-likelihood written without its minus). The run named is the one "
        "whose loss is negative while a cross-entropy or squared error is never negative, or whose loss "
        "rises over its steps; where one run differentiates its Keras loss as it is (CosineSimilarity is "
        "negative by definition), the other run is the one named. `gradtrace check` reports a single run whose "
        "loss handed to `tape.gradient` is the negation of the Keras loss its steps called, and one whose "
        "applied gradients are of one sign in every entry of every variable at every recorded step (four at "
        "least): something between the tape and the apply cut the other sign off (`tf.clip_by_value(g, 0, c)` "
        "meant as -c..c: an error when the run clips by hand with `tf.clip_by_value`, else a warning).",
        "Minimize the loss itself: optimizers subtract `learning_rate * gradient`, so pass the gradients "
        "as `tape.gradient` returns them and differentiate the loss, not its negation (to maximize a "
        "quantity, minimize its negation on purpose in both runs).",
        rank=23,
    ),
    Kind(
        "gradient_scale", "error", True,
        "Gradients are parallel but their norms differ by a constant factor the loss does not "
        "explain (replica count, the mixed-precision loss scale left in unscaled gradients, a learning "
        "rate folded into the loss, micro-batch gradients summed in one run and averaged in the other; "
        "against a run on batches k times larger, whose batches cannot be matched, the micro-batch run's "
        "first update, from the same weights, k times the other's for every variable); "
        "a factor only a loss reduction gives (a mean over outputs, a mask's count) is not matched, "
        "the losses being equal; per-variable ratios that differ point at per-variable vs global "
        "clipping, and a run whose optimizer clips nothing but whose gradients are capped (each cut one at "
        "one norm, or the step's global norm at one value) is named as clipping by hand "
        "(`tf.clip_by_norm`, `tf.clip_by_global_norm`) against the other's optimizer setting. Equal updates make it context (the runs train identically), except a loss scale "
        "left in: a warning, since the optimizer only hides it until the dynamic scale changes.",
        "Scale the gradients the same way in both runs (see the factor it matched).",
        rank=24,
    ),
    Kind(
        "gradient_mismatch", "error", True,
        "Same inputs and weights, but the gradients point elsewhere: the loss computation differs "
        "(class weights, from_logits, a tf.function-wrapped loss, per-output loss weights that differ: "
        "named when both runs' compile(loss_weights=...) recorded them; a hand-written loss's weighting "
        "is not recorded: measured when it differs in the last output's weight only, or, for two "
        "outputs, from each output's own layers' gradient ratios and the step-0 totals; else reported "
        "as unknown). Every gradient and update equal at every compared step makes it context: the "
        "recorded losses are other quantities (gradients of several losses taken one by one and added "
        "record the last loss).",
        "Compute the loss the same way in both runs (same Keras loss object, same from_logits, "
        "targets whose rows sum to 1 for categorical cross-entropy).",
        rank=26,
    ),
    Kind(
        "loss_scaling", "error", False,
        "Mixed precision: the loss scale was applied in one run only, or steps were skipped for "
        "overflow. A run whose optimizer is a LossScaleOptimizer but whose steps scaled no loss, with "
        "gradients the other run's divided by its loss scale, differentiated the unscaled loss (Keras 3's "
        "optimizer unscales on apply): named with `optimizer.scale_loss(loss)` as the fix. A run whose loss is "
        "the other's times the other's loss scale and whose optimizer is no LossScaleOptimizer (`scale_loss` "
        "in the tape, the gradients applied by `inner_optimizer`) keeps the scale in its gradients: named "
        "with the wrapper's apply as the fix; `gradtrace check` names the same in one run from the loss "
        "handed to tape.gradient being its Keras loss times the loss scale `scale_loss` used, with gradients "
        "that keep the scale, applied by no LossScaleOptimizer; and, as an error, a run whose Keras 3 "
        "LossScaleOptimizer applied gradients while no step called `scale_loss`, or the steps called it and "
        "differentiated the loss they scaled instead of its result (gradients the loss scale "
        "times too small: their norm over the loss below one over the scale's square root); in a comparison "
        "that run is named, and a `gradient_scale` by the loss scale becomes context. A mixed "
        "precision dtype policy in one run only (the other computing in float32) is named as such.",
        "Wrap the optimizer in `LossScaleOptimizer` and scale/unscale the loss in both runs "
        "(fit() does it under a mixed_float16 policy).",
        rank=28,
    ),
    Kind(
        "optimizer_mismatch", "error", False,
        "Optimizer class, hyperparameters, schedule or clipping differ; or an optimizer was "
        "re-created during training (its state and iteration counter reset; both runs starting a new "
        "optimizer at the same step, as for a second fit() call, is no difference). `gradient_accumulation_steps=n` "
        "in one run only is compared update by update (its every n-th micro-batch step against the other "
        "run's steps, or its n micro-batches against one batch n times larger): equal updates make it "
        "context, a loop applying n times the update is told to divide the accumulated sum by n. Only the "
        "class differing while every aligned step agrees (AdamW with weight_decay=0 against Adam) is "
        "context; another value of a setting that every aligned step agrees on is a warning, since it has "
        "not acted yet (a clipnorm not reached, amsgrad before an estimate shrinks, use_ema: fit() writes "
        "the weights' average into the model when it ends; Lion's updates have the same norm whatever their "
        "signs), except a clip setting whose run-without clips its gradients by hand with the matching "
        "TensorFlow function (`tf.clip_by_global_norm`, `tf.clip_by_norm`, `tf.clip_by_value`; recorded by "
        "the tracer in `extra.hand_clipping`): context. Equal losses and gradients with other updates in the first steps are the setting acting (a "
        "global clipnorm passed at one step in one run). Equal gradients "
        "with updates that differ on some variables only, under equal recorded configurations, are a "
        "per-variable setting `get_config()` does not hold: with weight decay on, variables excluded from "
        "it in one run only (`exclude_from_weight_decay`). A run that updates its weights by hand "
        "(`v.assign_sub(lr * g)`: the tracer's ManualUpdate) has its rate measured, update norm over "
        "gradient norm on its first full steps: one rate for every variable and step is plain gradient "
        "descent, set against the other run's optimizer, its rate step by step and the SGD settings "
        "(momentum, clipping, weight decay) the hand-written update does not do; an SGD of the same rate "
        "without them makes the class difference context.",
        "Create the optimizer once, outside the loop, with the same class and configuration.",
        rank=30,
    ),
    Kind(
        "metric_mismatch", "warning", False,
        "A metric of the same name was computed by different classes (e.g. 'accuracy' resolving to "
        "CategoricalAccuracy vs SparseCategoricalAccuracy); or a compiled accuracy metric cannot fit the "
        "run's label encoding (read from the loss's label and output shapes) and silently reports "
        "nonsense: plain `Accuracy` on probabilities, `CategoricalAccuracy` on integer labels, "
        "`BinaryAccuracy` on one-hot multi-class labels (`check` names it in a single run, judged against the "
        "labels of the latest compile()'s loss; labels of 0s and 1s with some row not holding exactly one 1, "
        "by the label fingerprint, are multi-label yes/no answers, which BinaryAccuracy fits).",
        "Name the metric class explicitly (`keras.metrics.SparseCategoricalAccuracy()`) in both runs; "
        "use the accuracy of the labels' encoding (or `metrics=['accuracy']`, which Keras resolves).",
        rank=40,
    ),
    Kind(
        "numerics", "error", False,
        "NaN/Inf appears in the loss or a gradient of one run. The fix depends on what came before it: "
        "finite losses that fell below zero without a floor (to -inf, or a hundredfold) mean a quantity "
        "minimised that can fall forever (a log-likelihood minimised without its minus); losses that grew "
        "a hundredfold, a diverging training; neither, an operation undefined where it is evaluated "
        "(`log(0)`, `0/0`); NaN/Inf in the batch itself, the data.",
        "Look at the first step and variable named; lower the learning rate, clip gradients, or use "
        "`from_logits=True` instead of log of a softmax.",
        rank=3,
    ),
    Kind(
        "non_scalar_loss", "warning", False,
        "The tape was asked for the gradient of a non-scalar: TensorFlow sums it implicitly.",
        "Reduce the loss to a scalar before `tape.gradient` (`tf.reduce_mean(per_sample_loss)`).",
        rank=21,
    ),
    Kind(
        "divergence", "error", True,
        "Aligned runs depart beyond the measured float noise at a step and no other finding "
        "explains it. A loss that parts at a later step on the same weights and batch, in models with "
        "random layers, is a warning: one run draws its random numbers differently (an extra forward "
        "pass in training mode per step; at the first batch of another size, a `tf.function` traced again "
        "whose new random ops draw other numbers, as tf-keras's do), the same training statistically. "
        "At the same loss, batch and weights, one run's step that updates every variable the other's does "
        "and more (a generator's step also applying its gradients to the discriminator) is named with "
        "those variables.",
        "Inspect the first step and variable named; compare what differs in the code at that step.",
        rank=45,
    ),
    Kind(
        "structure_mismatch", "warning", False,
        "The two models differ in structure: trainable variables of one have no counterpart (same "
        "layer position, class and shape) in the other, so they are different models. Or, between runs of "
        "the same Keras, a layer of one model has no counterpart of its class in the other (a Masking "
        "layer in one model only, LayerNormalization where the other has BatchNormalization): an error "
        "when the aligned steps part (their symptoms are its evidence), context when every aligned step "
        "agrees (an identity Activation added).",
        "Compare runs of the same architecture; the listed variables show where the models part "
        "(a layer's units, padding, a layer added or removed).",
        rank=55,
    ),
    Kind(
        "init_mismatch", "warning", False,
        "The runs did not start from the same weights: decided variable by variable on the weights and "
        "state paired by structure, each by its initial-value fingerprint, and the differing ones named. "
        "State that no step changes in either model (a Normalization layer's adapt() statistics) is named, "
        "since models from the same seed differ when it was computed from other data, and paired layers "
        "built with other initializers (`kernel_initializer`, read from the layers' configs) are named. "
        "Equal weights whose "
        "random layers start from another seed state (`set_weights` copies weights, not a Dropout's seed) "
        "are info: the random draws differ, so steps are not compared one by one.",
        "Build both models from the same seed (`keras.utils.set_random_seed`) or copy the weights "
        "(`model_b.set_weights(model_a.get_weights())`); to compare random layers step by step, seed "
        "before building each model.",
        rank=60,
    ),
    Kind(
        "weights_assigned", "error", False,
        "Variables one run's optimizer trains are also written by its script outside the optimizer's steps "
        "(`variable.assign(...)`, `assign_add`/`assign_sub`: weights clipped or projected by hand after "
        "`apply_gradients`, a WGAN critic's clipping), and the other run's are not: each later step starts "
        "from weights the update did not leave. Recorded by the tracer (inside a `tf.function` when it is "
        "traced, eagerly when first called) with the first step it precedes; writes by set_weights, "
        "load_weights, an optimizer (its constraints, its EMA) or to a model no optimizer trains are not "
        "counted, nor eager writes before the first step unless the loop repeats them through the same "
        "lines (a write at the top of every step: dated step 0, and the different start the initial-weight "
        "fingerprint then shows, taken at the first step, is its context). Every aligned step agreeing makes it context (the writes left the weights as they were: "
        "a clip that never clipped); so do losses and gradients agreeing at every aligned step where the "
        "other run's layers carry a weight constraint the writes reproduce by hand (Keras projects inside "
        "the optimizer's update, the script after it: only the recorded updates differ). Where both runs "
        "write by hand, variables written in one run only (paired by structure) are the cause in the same way; "
        "the same variables written in both are the cause only where the runs part after the writes with "
        "nothing else found (the recorded updates leave the writes out, so the values written, another clip "
        "value or projection, are not recorded), context otherwise.",
        "Where the write is a weight constraint, give the layer a `kernel_constraint`/`bias_constraint` in "
        "both runs (Keras applies it right after every update, in fit() and apply_gradients alike); "
        "otherwise write the weights the same way in both runs, or in neither.",
        rank=13,
    ),
    Kind(
        "weights_replaced", "warning", False,
        "One run's model weights were overwritten outside its optimizer steps after training started, "
        "and the other run's were not (or otherwise): EarlyStopping(restore_best_weights=True) setting the "
        "best epoch's weights back at the end of fit(), fit() writing an optimizer's moving average into "
        "the model when it ends (`use_ema=True`), the script's `set_weights`/`load_weights`. Every step can "
        "agree while the models the runs end with, and their accuracy, differ. `gradtrace check` warns of "
        "one run whose every trainable variable is set back to its initial values after training started "
        "(the tracer compares each write's values with the initial-weight fingerprints): a 'best' copy "
        "saved before training and restored every epoch throws away what the steps trained.",
        "Do the same in both runs: restore the best weights in the loop too or drop "
        "`restore_best_weights`; after a loop whose optimizer has `use_ema=True`, call "
        "`optimizer.finalize_variable_values(model.trainable_variables)`.",
        rank=58,
    ),
    Kind(
        "training_outside_steps", "warning", False,
        "Train/inference-dependent layers ran with `training=True` while no gradient tape recorded, "
        "i.e. outside the forward passes the optimizer steps differentiate, a different number of times "
        "in the two runs (`check`: at all): a validation pass `model(x_val, training=True)`, a second "
        "forward pass for a metric after the tape, or a BatchNormalization hard-wired to "
        "`training=True` in a functional model that tf-keras's evaluate() and predict() then run in "
        "training mode. BatchNormalization folds those batches into its moving statistics and Dropout "
        "perturbs those outputs: every step can agree while the evaluated models differ; Dropout's draws "
        "also move its generator, so the later steps' masks differ, and a layer with state of its own "
        "other than normalization statistics (a counter, a running scale) changes the state the later "
        "steps' forward passes read (the departure either causes is its evidence, and the finding an "
        "error); moving statistics that part while the steps agree are its evidence too. Counted per "
        "layer by the tracer where the calls ran (eager calls one by one, calls inside a tf.function by "
        "a counter in its graph), compared on layers paired through their variables. Layers of a model no "
        "optimizer of the run was given (a mean teacher called with `training=True` for noisy targets) are "
        "context for `check`: the trained model is not affected. So are layers without state (Dropout, "
        "noise) sampled only after the last step (Monte Carlo dropout): no state moved; between steps they "
        "are a warning that metrics computed from those calls are noisy.",
        "Call the model in training mode only in the forward pass the gradient is taken of: compute "
        "metrics from its output and call the model with `training=False` for validation, evaluation "
        "and prediction; do not hard-wire `training=True` into a layer's call in a functional model; "
        "recompute BatchNormalization statistics on purpose in both runs or in neither.",
        rank=58,
    ),
    Kind(
        "validation_split_mismatch", "warning", False,
        "fit() holds out a different share of the data for validation (`validation_split`) in the two "
        "runs: one trains on fewer examples, and its batches part from the other's once the held-out "
        "examples would have come, or, where every common step trained on the same batch, the longer "
        "run's further steps train on examples the other never sees; the step where they part is named.",
        "Train on the same examples: the same `validation_split` in both runs (the loop on the first "
        "(1 - split) of the data), or pass `validation_data=` explicitly.",
        rank=60,
    ),
    Kind(
        "data_mismatch", "warning", False,
        "The runs did not see the same batch at some step. When the totals of the inputs and labels over "
        "the common steps agree, the runs went through the same examples batched in another order (one "
        "run shuffles), and it says so; two tf.data shuffles that differ in an argument (the seed, the "
        "buffer, `reshuffle_each_iteration`) are named by it. The steps up to the first other batch are "
        "compared; with nothing else found the verdict is not_comparable, and the report says how far the "
        "steps agree (`NOT_COMPARABLE after step k`): trained on other batches, the models differ. The "
        "exception is one run ending each epoch with a partial batch where "
        "the other, over as many examples, batches straight across the epoch boundary "
        "(`ds.repeat(n).batch(B)`): a warning, and the runs diverged. Batches k times smaller in a run "
        "with as many steps are named as a possible hand-written accumulation of k micro-batches per "
        "apply (a step records its last micro-batch); from the same start, every update norm agreeing at "
        "every step both recorded (four at least) makes it context and the runs equivalent (the mean of the "
        "micro-batches' gradients applied: the same training). Not so when two optimizers take turns and only one's "
        "steps differ (a GAN's discriminator batch). The same inputs with other labels at every differing "
        "step (labels sliced off their inputs, shuffled apart) are named as such, and the runs diverged; labels "
        "that differ by under 2 % of their spread are the same labels rounded in one run (a float16 round trip).",
        "Feed both runs the same batches in the same order (no shuffle or the same shuffle seed) "
        "to compare them step by step.",
        rank=61,
    ),
    Kind(
        "lost_records", "warning", False,
        "The tracer could not record some steps or full tensors of a run (counted by reason in the "
        "run's `lost`: ring_overrun, queue_full, a batch the server refused, ...): the run was "
        "judged on the steps it kept.",
        "Raise the setting the reason names: `GRADTRACE_RING_SIZE` for ring_overrun, "
        "`GRADTRACE_QUEUE_STEPS` for queue_full; for refused batches fix the cause (e.g. the token) "
        "and `gradtrace spool requeue`.",
        rank=70,
    ),
    Kind(
        "execution_mode", "info", False,
        "The runs executed their steps differently (eager, tf.function, XLA). Random layers under XLA in "
        "one run only, or in Keras 3 and tf-keras, draw other numbers: the step-by-step comparison is "
        "skipped and said so here.",
        "Nothing to fix unless it explains a numeric difference.",
        rank=80,
    ),
]

CATALOGUE: dict[str, Kind] = {k.kind: k for k in _KINDS}


def get(kind: str) -> Kind:
    """The catalogue entry of ``kind`` (KeyError for an unknown kind)."""
    return CATALOGUE[kind]


def as_markdown() -> str:
    """The catalogue as a Markdown table (for the README and ``gradtrace compare --catalogue``)."""
    lines = ["| kind | severity | needs aligned runs | triggered when | fix |", "|---|---|---|---|---|"]
    for k in _KINDS:
        lines.append(
            f"| `{k.kind}` | {k.severity} | {'yes' if k.needs_alignment else 'no'} "
            f"| {k.trigger} | {k.fix} |"
        )
    return "\n".join(lines)
