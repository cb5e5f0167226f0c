"""Realistic training scripts through the tracer and the comparator.

For every script: it runs unchanged under ``gradtrace.trace`` with bit-identical
weights, one step is recorded per optimizer call, no tracer warning or partial
flag, and ``check`` finds nothing wrong. For pairs written two correct ways,
``compare`` says ``equivalent``; for pairs with a user's mistake, the top
finding names it.
"""

from __future__ import annotations

import numpy as np
import pytest

from . import scripts as s

SCRIPTS = [
    s.cnn_bn_dropout_fit_callbacks, s.multi_io_fit, s.multi_io_tape, s.lstm_fit, s.lstm_tape, s.gru_eager_loop,
    s.embedding_fit, s.embedding_tape, s.tagger_fit_masked, s.shared_layer_layernorm_fit, s.regularized_fit,
    s.regularized_tape, s.adamw_schedule_fit, s.adamw_schedule_tape, s.sgd_nesterov_fit, s.rmsprop_centered_fit,
    s.clipnorm_fit, s.global_clipnorm_fit, s.clipvalue_fit, s.adam_ema_fit, s.grad_accumulation_fit,
    s.bce_sigmoid_fit, s.huber_regression_fit, s.custom_loss_subclass_fit, s.handwritten_loss_fn_fit,
    s.class_weight_fit, s.sample_weight_fit, s.steps_per_execution_fit, s.jit_compile_fit, s.tf_data_fit,
    s.tf_data_tape_loop, s.custom_train_step_fit, s.gan_two_optimizers, s.wgan_gradient_penalty,
    s.tf_keras_cnn_fit, s.tf_keras_frozen_layer_fit, s.tf_keras_subclassed_tape, s.tf_keras_functional_weighted_fit,
    s.train_on_batch_loop, s.tf_keras_minimize, s.persistent_tape_two_heads,
    s.raw_variables_linear_regression, s.xla_tape_loop, s.frozen_base_fine_tuning, s.lion_fit,
    s.two_optimizers_one_tape, s.fit_first_layer_frozen, s.lazy_model_fit_run_eagerly, s.lazy_model_eager_tape,
    s.distillation_frozen_teacher,
]

# Warnings a script is expected to raise, with the reason (substring of the warning).
JUSTIFIED: dict[str, list[str]] = {}


def _summary(sweep, name):
    store = sweep.store()
    try:
        return store.resolve(name, project="sweep")
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_script_traced(sweep, script):
    from gradtrace.compare import check, render_text

    t = sweep.traced(script)
    plain = sweep.plain(script)
    assert len(plain.weights) == len(t.out.weights)
    for w0, w1 in zip(plain.weights, t.out.weights, strict=True):
        assert np.array_equal(w0, w1, equal_nan=True), "tracing changed the training's numbers"
    summary = _summary(sweep, t.name)
    assert summary.status == "finished"
    assert summary.num_steps == t.out.steps, f"{summary.num_steps} steps recorded, {t.out.steps} optimizer calls"
    allowed = JUSTIFIED.get(t.name, [])
    unexpected = [w for w in t.warnings if not any(a in w for a in allowed)]
    assert not unexpected, unexpected
    assert not t.partial
    store = sweep.store()
    try:
        report = check(store, t.name, project="sweep")
    finally:
        store.close()
    assert report.verdict == "equivalent", render_text(report, verbose=True)


# (id, run a, run b, verdict, top finding kind or None)
PAIRS = [
    # the same training written two correct ways
    ("eq_multi_output_fit_vs_tape", s.multi_io_fit, s.multi_io_tape, "equivalent", None),
    ("eq_lstm_fit_vs_tape", s.lstm_fit, s.lstm_tape, "equivalent", None),
    ("eq_embedding_fit_vs_tape", s.embedding_fit, s.embedding_tape, "equivalent", None),
    ("eq_adamw_schedule_fit_vs_tape", s.adamw_schedule_fit, s.adamw_schedule_tape, "equivalent", None),
    ("eq_regularizers_fit_vs_tape", s.regularized_fit, s.regularized_tape, "equivalent", None),
    # a model built by its first call: eagerly that call is a training step, its initial values count
    ("eq_lazy_model_fit_vs_run_eagerly", s.lazy_model_fit, s.lazy_model_fit_run_eagerly, "equivalent", None),
    ("eq_lazy_model_fit_vs_eager_tape", s.lazy_model_fit, s.lazy_model_eager_tape, "equivalent", None),
    ("eq_clip_by_hand_vs_global_clipnorm", s.clip_by_global_norm_by_hand, s.clip_by_the_optimizer, "equivalent",
     None),
    # a user's mistake in one of them
    ("loss_weights_forgotten", s.multi_io_fit, s.multi_io_tape_weights_forgotten, "diverged", "gradient_mismatch"),
    ("mask_mean_over_all_tokens", s.tagger_fit_masked, s.tagger_tape_mean_over_all_tokens, "diverged",
     "loss_scale"),
    ("clipnorm_vs_global_clipnorm", s.clipnorm_fit, s.global_clipnorm_fit, "diverged", "optimizer_mismatch"),
    ("sample_weight_forgotten", s.sample_weight_fit, s.unweighted_fit, "diverged", "sample_weighting"),
    ("lstm_dropout_without_training_flag", s.lstm_fit, s.lstm_tape_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("weight_decay_forgotten", s.adamw_schedule_fit, s.adam_schedule_tape_no_decay, "diverged",
     "optimizer_mismatch"),
    ("mse_vs_sum_of_squares_with_regularizers", s.regularized_mse_fit, s.regularized_sum_of_squares_tape,
     "diverged", "loss_scale"),
    ("from_logits_forgotten", s.digits_fit_from_logits, s.digits_tape_from_logits_forgotten, "diverged",
     "loss_mismatch"),
    ("label_smoothing_forgotten", s.digits_fit_label_smoothing, s.digits_tape_label_smoothing_forgotten,
     "diverged", "loss_mismatch"),
    ("layer_frozen_in_b_only", s.fit_all_trained, s.fit_first_layer_frozen, "diverged", "trainable_mismatch"),
    ("layer_frozen_in_a_only", s.fit_first_layer_frozen, s.fit_all_trained, "diverged", "trainable_mismatch"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PAIRS, ids=[c[0] for c in PAIRS])
def test_pair(sweep, case):
    _id, fa, fb, verdict, top = case
    report, text = _compare(sweep, fa, fb)
    _keep(_id, text)
    assert report.verdict == verdict, text
    if top is not None:
        assert report.findings and report.findings[0].kind == top, text
    if verdict == "equivalent":
        assert all(f.severity == "info" for f in report.findings), text


def _keep(case_id: str, text: str) -> None:
    """With GRADTRACE_SWEEP_REPORTS=DIR, keep each report for reading (the sweep's matrix)."""
    import os
    from pathlib import Path

    out = os.environ.get("GRADTRACE_SWEEP_REPORTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{case_id}.txt").write_text(text)


@pytest.mark.slow
def test_model_built_by_an_eager_training_call_keeps_its_initial_state(sweep):
    """The eager call that builds the model is step 0's forward pass: the moving statistics
    it updates change in step 0 (measured from their initial values), every step after."""
    from gradtrace.compare.reader import read_run

    t = sweep.traced(s.lazy_model_eager_tape)
    store = sweep.store()
    try:
        run = read_run(store, t.name, project="sweep")
    finally:
        store.close()
    moving = [j for j, v in enumerate(run.state_index.tolist()) if "moving" in run.var_name(int(v))]
    assert len(moving) == 2, [run.var_name(int(v)) for v in run.state_index]
    assert all(int(run.state_changed[j]) == t.out.steps for j in moving), run.state_changed


@pytest.mark.slow
def test_gan_batches_are_the_data_not_the_generated_samples(sweep):
    """A GAN whose generator learns faster: the discriminator's steps still see the same data
    (the generated batch is a model output, not the step's input), so every step stays aligned
    and the optimizer setting is the finding, without a data mismatch."""
    report, text = _compare(sweep, s.gan_two_optimizers, s.gan_generator_lr_higher)
    assert report.findings[0].kind == "optimizer_mismatch" and "learning_rate" in report.findings[0].summary, text
    assert "data_mismatch" not in [f.kind for f in report.findings], text
    assert report.aligned_steps == 10, text


def _compare(sweep, script_a, script_b):
    """``gradtrace compare`` of two traced scripts: (report, its verbose text)."""
    from gradtrace.compare import compare, render_text

    a, b = sweep.traced(script_a).name, sweep.traced(script_b).name
    store = sweep.store()
    try:
        report = compare(store, a, b, project="sweep")
    finally:
        store.close()
    return report, render_text(report, verbose=True)


def _check(sweep, script):
    """``gradtrace check`` of a traced script: (report, its verbose text)."""
    from gradtrace.compare import check, render_text

    t = sweep.traced(script)
    store = sweep.store()
    try:
        report = check(store, t.name, project="sweep")
    finally:
        store.close()
    return report, render_text(report, verbose=True)


@pytest.mark.slow
def test_gradient_left_out_of_apply_is_not_applied(sweep):
    """The tape computed the head's gradient, apply_gradients never got it: not applied (the fix
    is the list handed to the optimizer), not a missing gradient (the fix would be the tape)."""
    report, text = _check(sweep, s.head_left_out_of_apply)
    kinds = [f.kind for f in report.findings]
    assert kinds and kinds[0] == "not_applied" and "missing_gradient" not in kinds, text
    assert len(report.findings[0].variables) == 2, text  # the head's kernel and bias


@pytest.mark.slow
def test_gradient_cut_by_numpy_is_missing_even_when_none_gradients_are_dropped(sweep):
    """The variables the tape was asked about belong to the step, also those whose None
    gradient the script filtered out before apply_gradients."""
    report, text = _check(sweep, s.numpy_round_trip_layers_called_directly)
    assert report.findings and report.findings[0].kind == "missing_gradient", text
    assert len(report.findings[0].variables) == 2, text  # the first layer's kernel and bias


@pytest.mark.slow
def test_cli_compare_exit_codes(sweep):
    """`gradtrace compare` as CI would call it: exit 0 for an equivalent pair, 1 with the finding."""
    import json
    import subprocess
    import sys

    for fn in (s.embedding_fit, s.embedding_tape, s.sample_weight_fit, s.unweighted_fit):
        sweep.traced(fn)
    cmd = [sys.executable, "-m", "gradtrace", "compare", "--db", sweep.url, "--project", "sweep", "--json"]
    ok = subprocess.run(cmd + ["embedding_fit", "embedding_tape"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "equivalent"
    bad = subprocess.run(cmd + ["sample_weight_fit", "unweighted_fit"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert json.loads(bad.stdout)["findings"][0]["kind"] == "sample_weighting"


@pytest.mark.slow
def test_decorated_training_function(sweep):
    """``@gradtrace.trace`` on the user's train() records the same run as the context manager."""
    import gradtrace
    from gradtrace.compare import compare, render_text

    @gradtrace.trace(run="decorated_embedding_tape", project="sweep", store=sweep.url)
    def train():
        return s.embedding_tape()

    out = train()
    sweep.traced(s.embedding_tape)
    assert _summary(sweep, "decorated_embedding_tape").num_steps == out.steps
    store = sweep.store()
    try:
        report = compare(store, "decorated_embedding_tape", "embedding_tape", project="sweep")
    finally:
        store.close()
    assert report.verdict == "equivalent", render_text(report, verbose=True)


@pytest.mark.slow
def test_keyboard_interrupt_mid_training(sweep):
    """Ctrl-C after 3 steps: the exception reaches the user, the run is failed with its 3 steps flushed."""
    import gradtrace

    with pytest.raises(KeyboardInterrupt):
        with gradtrace.trace(run="interrupted", project="sweep", store=sweep.url):
            s.interrupted_tape_loop()
    summary = _summary(sweep, "interrupted")
    assert summary.status == "failed"
    assert summary.num_steps == 3
    store = sweep.store()
    try:
        assert "KeyboardInterrupt" in (store.run_detail(summary.id).meta.get("error") or "")
    finally:
        store.close()
