"""Each detector on synthetic runs (no TensorFlow, no database)."""

from __future__ import annotations

import numpy as np
import pytest
from gradtrace.compare import check_run, compare_runs, render_text
from gradtrace.compare.catalogue import CATALOGUE

from .synth import make_run


def kinds(report):
    return [f.kind for f in report.findings]


def top(report):
    return report.findings[0].kind if report.findings else None


def test_identical_runs_equivalent_despite_names():
    r = compare_runs(make_run("a"), make_run("b", name_offset=7))
    assert r.verdict == "equivalent", r.to_dict()
    assert r.aligned_steps == 6
    assert r.first_divergent_step is None
    assert all(f.severity == "info" for f in r.findings)


def test_float_noise_is_tolerated_but_a_real_gap_is_not():
    r = compare_runs(make_run("a"), make_run("b", seed=1, noise=1e-7))
    assert r.verdict == "equivalent", r.to_dict()
    r = compare_runs(make_run("a"), make_run("b", seed=1, noise=1e-3))
    assert r.verdict == "diverged"


def test_loss_scale_names_the_outputs_and_sgd_effect():
    r = compare_runs(make_run("a"), make_run("b", loss_factor=3.0, update_factor=3.0))
    assert r.verdict == "diverged"
    f = r.findings[0]
    assert f.kind == "loss_scale"
    assert f.evidence["factor"] == pytest.approx(1 / 3, rel=1e-6)
    assert "outputs" in f.evidence["matches"]
    assert "passes the factor on" in f.summary
    assert r.first_divergent_step == 0


def test_loss_scale_batch_and_adam_normalises():
    adam = {"optimizer": {"class": "Adam", "config": {"learning_rate": 0.1}}}
    r = compare_runs(make_run("a", loss_factor=32.0, update_factor=1.0001, meta=adam), make_run("b", meta=adam))
    f = r.findings[0]
    assert f.kind == "loss_scale" and "batch size" in f.evidence["matches"]
    assert "x1" in f.summary and "normalises it away" in f.summary
    # SGD does not normalise: equal first updates mean another setting (its rate) took the factor back
    r = compare_runs(make_run("a", loss_factor=32.0, update_factor=1.0001), make_run("b"))
    f = r.findings[0]
    assert f.kind == "loss_scale" and "SGD's learning rate in one run) compensates the factor" in f.summary
    assert "absorbs" not in f.summary and r.verdict == "diverged"  # the updates still differ x1.0001


def test_loss_scale_with_equal_updates_at_every_step_is_the_same_training():
    """A loss summed over the batch with the learning rate divided by the batch size: the losses
    differ by one factor at every step, every update agrees: equivalent, the factor as context."""
    r = compare_runs(make_run("a", loss_factor=16.0, update_factor=1.0), make_run("b"))
    assert r.verdict == "equivalent", r.to_dict()
    f = next(f for f in r.findings if f.kind == "loss_scale")
    assert f.severity == "info" and f.evidence["same_updates"]["loss_factor"] == pytest.approx(1 / 16)
    assert "only the reported loss values differ" in f.summary
    # a factor that changes from step to step is not compensated by one setting
    b = make_run("b")
    b.loss[3] *= 1.5
    assert compare_runs(make_run("a", loss_factor=16.0, update_factor=1.0), b).verdict == "diverged"


def test_gradient_scale_replicas_and_clipping():
    r = compare_runs(make_run("a"), make_run("b", grad_factors=[2.0] * 4, meta={"replicas": 2}))
    assert top(r) == "gradient_scale" and "replica" in r.findings[0].evidence["matches"]
    r = compare_runs(make_run("a"), make_run("b", grad_factors=[1.0, 0.5, 0.8, 1.0]))
    assert top(r) == "gradient_scale" and "clip" in r.findings[0].summary


def test_a_loss_scale_left_in_the_gradients_is_a_warning_even_when_the_updates_agree():
    """Gradients x2^15 with equal updates (Adam normalises the scale away): the gradients of a
    scaled loss were never unscaled. Not "the runs train identically": a warning with the fix."""
    r = compare_runs(make_run("a"), make_run("b", grad_factors=[2.0**15] * 4))
    f = r.findings[0]
    assert f.kind == "gradient_scale" and f.severity == "warning", r.to_dict()
    assert "not unscaled" in f.evidence["matches"] and "get_unscaled_gradients" in f.fix
    # Any other constant factor with equal updates stays context.
    r = compare_runs(make_run("a"), make_run("b", grad_factors=[3.0] * 4))
    assert all(g.severity == "info" for g in r.findings if g.kind == "gradient_scale"), r.to_dict()


def test_gradient_mismatch_equal_loss_rotated_gradients():
    r = compare_runs(make_run("a"), make_run("b", rotate=[0, 2]))
    assert top(r) == "gradient_mismatch"
    assert r.findings[0].variables


def test_findings_say_what_the_alignment_rests_on():
    """Inputs without a fingerprint (the tracer could not read them): the labels aligned the
    steps, and a loss factor says so instead of claiming the same inputs."""
    r = compare_runs(make_run("a", loss_factor=3.0, update_factor=3.0), make_run("b"))
    assert r.findings[0].summary.startswith("on the same inputs and weights")
    a, b = make_run("a", loss_factor=3.0, update_factor=3.0), make_run("b")
    a.x_fp[:] = float("nan")
    b.x_fp[:] = float("nan")
    r = compare_runs(a, b)
    assert top(r) == "loss_scale"
    assert r.findings[0].summary.startswith("on the same labels and weights (the inputs could not be fingerprinted)")


def test_nan_brought_in_by_the_data_says_so():
    b = make_run("b", nan_at=3)
    b.x_fp[3, :2] = float("nan")  # the batch's sums: its values hold a NaN (count still recorded)
    f = next(f for f in compare_runs(make_run("a"), b).findings if f.kind == "numerics")
    assert "that step's inputs already contain NaN/Inf" in f.summary and f.fix.startswith("Clean the data")
    f = next(f for f in check_run(b).findings if f.kind == "numerics")
    assert "inputs already contain" in f.summary and "np.isfinite" in f.fix
    # NaN from the training itself (finite data): the usual fix.
    f = next(f for f in check_run(make_run("b", nan_at=3)).findings if f.kind == "numerics")
    assert "already contain" not in f.summary and "learning rate" in f.fix


def test_structural_pairing_keeps_the_order_when_one_run_wraps_the_model():
    """A model trained inside a wrapper numbers every layer one further: position 3 is the
    first of two equal heads in one run and the second in the other. Pairing keeps the
    order (first head with first head), also with a layer only one run has."""
    from gradtrace.compare.align import pair_items

    def items(keys):
        return [{"index": i, "struct_key": k, "name": k} for i, k in enumerate(keys)]

    plain = items(["1:Dense/kernel[8,16]", "2:Dense/kernel[16,2]", "3:Dense/kernel[16,2]", "4:Dense/kernel[2,8]"])
    wrapped = items(["2:Dense/kernel[8,16]", "3:Dense/kernel[16,2]", "4:Dense/kernel[16,2]", "5:Dense/kernel[2,8]"])
    pairs = pair_items(wrapped, plain, lambda x: x["struct_key"].split(":")[1])
    assert [(x["index"], y["index"]) for x, y in pairs] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    extra = items(["1:Dense/kernel[8,16]", "2:Normalization/mean[8]", "3:Dense/kernel[16,2]",
                   "4:Dense/kernel[16,2]", "5:Dense/kernel[2,8]"])
    pairs = pair_items(extra, plain, lambda x: x["struct_key"].split(":")[1])
    assert [(x["index"], y["index"]) for x, y in pairs] == [(0, 0), (2, 1), (3, 2), (4, 3)]


def test_gradient_accumulation_in_one_optimizer_explains_the_step_mismatch():
    acc = {"optimizer": {"class": "SGD", "learning_rate": 0.01, "config": {"gradient_accumulation_steps": 4}}}
    plain = {"optimizer": {"class": "SGD", "learning_rate": 0.01, "config": {"gradient_accumulation_steps": None}}}
    r = compare_runs(make_run("a", meta=acc), make_run("b", meta=plain))
    f = next(f for f in r.findings if f.kind == "optimizer_mismatch")
    assert "gradient_accumulation_steps" in f.summary
    assert "`gradient_accumulation_steps=4`" in f.fix and "divide the sum by 4" in f.fix


def test_a_run_without_losses_or_fingerprints_is_said_to_be_so():
    a, b = make_run("a"), make_run("b")
    for run in (a, b):
        run.x_fp[:] = float("nan")
        run.y_fp[:] = float("nan")
    b.loss[:] = float("nan")
    b.loss_known[:] = False  # not recorded (a recorded NaN loss would be a numerics finding)
    r = compare_runs(a, b)
    assert r.verdict == "not_comparable"
    assert any("run 'b' recorded no loss" in s["why"] for s in r.skipped), r.skipped


def test_gradient_mismatch_between_keras_implementations_says_so():
    r = compare_runs(make_run("a", meta={"keras_flavour": "keras3"}),
                     make_run("b", rotate=[0, 2], meta={"keras_flavour": "tf_keras"}))
    f = r.findings[0]
    assert f.kind == "gradient_mismatch" and "keras3 vs tf_keras" in f.summary
    assert "same Keras" in f.fix


def test_layers_built_with_different_arguments_are_named():
    """A Dropout rate and an activation differ between two otherwise equal models: named as
    the cause with the arguments, the step-0 loss difference folded in as its evidence.
    Runs of different Keras are not compared argument by argument."""
    def configs(rate, act):
        return {"layer_configs": {"0": {"units": 8, "activation": act}, "1": {"rate": rate, "noise_shape": None}}}

    def run(name, rate, act, flavour="keras3", **kw):
        r = make_run(name, meta={**configs(rate, act), "keras_flavour": flavour}, **kw)
        r.layers = [{"index": 0, "name": "dense", "class_name": "Dense", "struct_key": "0:Dense"},
                    {"index": 1, "name": "dropout", "class_name": "Dropout", "struct_key": "1:Dropout"}]
        return r

    r = compare_runs(run("a", 0.2, "relu"), run("b", 0.5, "tanh", rotate=[0, 2]))
    f = r.findings[0]
    assert f.kind == "layer_config_mismatch", r.to_dict()
    assert {(d["argument"], d["a"], d["b"]) for d in f.evidence["differences"]} == {
        ("rate", 0.2, 0.5), ("activation", "relu", "tanh")}
    assert "gradient_mismatch" not in kinds(r)  # folded into the cause
    assert "dropout.rate = 0.2 in run a, 0.5 in run b" in f.fix
    r = compare_runs(run("a", 0.2, "relu"), run("b", 0.2, "relu"))
    assert "layer_config_mismatch" not in kinds(r)
    r = compare_runs(run("a", 0.2, "relu"), run("b", 0.5, "relu", flavour="tf_keras"))
    assert "layer_config_mismatch" not in kinds(r)


def test_an_optimizer_that_stepped_before_the_run_is_named():
    a, b = make_run("a"), make_run("b", update_factor=1.6)
    b.iterations[:] = b.iterations + 3  # reused after 3 earlier steps
    r = compare_runs(a, b)
    f = r.findings[0]
    assert f.kind == "optimizer_mismatch" and "already taken 3 step(s)" in f.summary, r.to_dict()
    assert "fresh optimizer for run b" in f.fix
    assert not any("already taken" in g.summary for g in compare_runs(make_run("a"), make_run("b")).findings)


def test_validation_split_in_one_run_only_is_a_warning():
    """fit(validation_split=0.25) trains on three quarters of the data: not 'equivalent as far
    as the same batches go'."""
    fit = {"fit": {"epochs": 1, "validation": True, "validation_split": 0.25}}
    r = compare_runs(make_run("a", meta=fit), make_run("b", steps=8))  # b trains on the held-out batches too
    f = next(f for f in r.findings if f.kind == "validation_split_mismatch")
    assert f.severity == "warning" and "run a holds out 25% for validation" in f.summary
    assert r.verdict == "diverged"
    # a loop over the same first 75% (the same batches at every step, as many steps): nothing to report
    r = compare_runs(make_run("a", meta=fit), make_run("b"))
    assert "validation_split_mismatch" not in kinds(r) and r.verdict == "equivalent"
    same = {"fit": {"epochs": 1, "validation": True, "validation_split": 0.0}}
    assert "validation_split_mismatch" not in kinds(compare_runs(make_run("a", meta=same), make_run("b")))
    old = {"fit": {"epochs": 1, "validation": True}}  # recorded before the split was
    assert "validation_split_mismatch" not in kinds(compare_runs(make_run("a", meta=old), make_run("b")))


def test_regularization_gap():
    r = compare_runs(make_run("a", reg=0.25, reg_added=True), make_run("b", reg=0.25))
    assert top(r) == "regularization_mismatch"


def test_training_mode_is_root_cause_of_frozen_state():
    r = compare_runs(make_run("fit"), make_run("loop", bn_training=None, state_changes=False, seed=2,
                                               noise=0.01))
    assert top(r) == "training_mode_mismatch"
    assert "frozen_state" not in kinds(r)
    assert r.findings[0].evidence["frozen_state"]
    assert r.findings[0].evidence["inference_run"] == "b"


def test_frozen_state_alone():
    r = compare_runs(make_run("a"), make_run("b", state_changes=False))
    assert top(r) == "frozen_state"


def test_missing_gradient_before_not_applied():
    r = compare_runs(make_run("a"), make_run("b", no_grad=[3]))
    assert top(r) == "missing_gradient"
    assert "not_applied" not in kinds(r)
    r = compare_runs(make_run("a"), make_run("b", not_applied=[1]))
    assert top(r) == "not_applied"


def test_unaligned_runs_still_get_structural_findings_and_list_skips():
    r = compare_runs(make_run("a"), make_run("b", init="init-1", bn_training=False, state_changes=False))
    assert top(r) == "training_mode_mismatch"
    assert r.aligned_steps == 0
    skipped = {s["check"] for s in r.skipped}
    assert {"loss_scale", "gradient_mismatch"} <= skipped


def test_different_seeds_not_comparable():
    r = compare_runs(make_run("a"), make_run("b", init="init-1", data_seed=3))
    assert r.verdict == "not_comparable"
    assert "init_mismatch" in kinds(r)


def test_unaligned_loss_scale_in_distribution():
    r = compare_runs(make_run("a", steps=20, noise=0.02), make_run("b", steps=20, seed=4, noise=0.02,
                                                                     loss_factor=3.0, data_seed=2))
    f = [f for f in r.findings if f.kind == "loss_scale"]
    assert f and f[0].severity == "warning" and "outputs" in f[0].evidence["matches"]


def test_data_mismatch_after_some_steps():
    a = make_run("a")
    b = make_run("b")
    b.x_fp[3:] += 1.0
    r = compare_runs(a, b)
    # steps 0-2 agree; trained on other batches from step 3 on, the models differ
    assert r.aligned_steps == 3 and r.verdict == "not_comparable"
    assert "NOT_COMPARABLE after step 2 (steps 0 to 2 are equivalent" in render_text(r)


def test_labels_inferred_from_a_hand_written_loss():
    """y_fp taken from a hand-written loss may be a transform of the labels (log(1 + y)):
    unequal from step 0 with equal inputs it is ignored; equal at first and unequal
    later, the labels changed and the steps stop aligning there."""
    meta = {"extra": {"labels_inferred": True}}

    def run(name, **kw):
        r = make_run(name, **kw)
        r.y_fp[:, 2:4] = [0.5, 32.0]  # a complete fingerprint: sums, projection, count
        return r

    a = run("a")
    b = run("b", meta=meta)
    b.y_fp[:, :2] = b.y_fp[:, :2] * 2.0 + 1.0  # another encoding, every step
    r = compare_runs(a, b)
    assert r.aligned_steps == 6 and r.verdict == "equivalent", r.to_dict()
    c = run("c", meta=meta)
    c.y_fp[4:, :2] = c.y_fp[4:, :2] * 2.0 + 1.0
    assert compare_runs(a, c).aligned_steps == 4
    d = run("d")  # measured labels (a Keras loss, fit's data): any difference counts
    d.y_fp[:, :2] = d.y_fp[:, :2] * 2.0 + 1.0
    assert compare_runs(a, d).aligned_steps == 0


def test_optimizer_config_and_reset():
    r = compare_runs(make_run("a"), make_run("b", update_factor=2.0,
                                             meta={"optimizer": {"class": "SGD", "config": {"learning_rate": 0.2}}}))
    assert top(r) == "optimizer_mismatch"
    b = make_run("b")
    b.iterations[:] = 1
    r = compare_runs(make_run("a"), b)
    assert "optimizer_mismatch" in kinds(r)


def _two_optimizers(first_lr: float, second_lr: float, reverse: bool = False) -> dict:
    # A GAN-like run: one optimizer steps variables 0-1, another 2-3 (in order of first step).
    g = {"class": "Adam", "config": {"learning_rate": first_lr, "beta_1": 0.5}, "variables": [0, 1]}
    d = {"class": "Adam", "config": {"learning_rate": second_lr, "beta_1": 0.5}, "variables": [2, 3]}
    listed = [d, g] if reverse else [g, d]
    return {"optimizer": listed[0], "optimizers": listed}


def test_several_optimizers_pair_by_the_variables_they_step():
    a = make_run("a", meta=_two_optimizers(1e-3, 4e-4))
    # The same two optimizers, first used in the other order: nothing differs.
    same = compare_runs(a, make_run("b", name_offset=3, meta=_two_optimizers(1e-3, 4e-4, reverse=True)))
    assert "optimizer_mismatch" not in kinds(same), same.to_dict()
    # The optimizer of variables 2-3 has another learning rate: named, with its pairing.
    other = compare_runs(a, make_run("c", meta=_two_optimizers(1e-3, 1e-4, reverse=True)))
    found = [f for f in other.findings if f.kind == "optimizer_mismatch"]
    assert len(found) == 1, other.to_dict()
    diffs = found[0].evidence["differences (a, b)"]
    assert list(diffs) == ["optimizer 2 (Adam, 2 variables): learning_rate"], diffs
    assert diffs["optimizer 2 (Adam, 2 variables): learning_rate"] == [4e-4, 1e-4]


def test_metric_and_sample_weights_and_modes():
    m1 = {"metrics": [{"name": "accuracy", "class": "CategoricalAccuracy"}]}
    m2 = {"metrics": [{"name": "accuracy", "class": "SparseCategoricalAccuracy"}]}
    r = compare_runs(make_run("a", meta=m1), make_run("b", meta=m2))
    assert top(r) == "metric_mismatch" and r.verdict == "diverged"
    r = compare_runs(make_run("a", meta={"fit": {"class_weight": {"0": 1, "1": 5}}}), make_run("b"))
    assert "sample_weighting" in kinds(r)
    r = compare_runs(make_run("a"), make_run("b", step_extra={"mode": "xla"}))
    assert r.verdict == "equivalent" and kinds(r) == ["execution_mode"]
    # random layers under XLA on one side only: no step was compared, and the finding says so
    assert "not compared" in r.findings[0].summary and r.findings[0].evidence["stochastic"]


def test_numerics_first_step_and_variable():
    r = compare_runs(make_run("a"), make_run("b", nan_at=3))
    f = r.findings[0]
    assert f.kind == "numerics" and f.steps == [3] and f.variables == ["dense_1/kernel"]


def test_shape_broadcast_and_non_scalar_in_one_run():
    bc = {"broadcasts": [{"op": "sub", "a_shape": [32, 1], "b_shape": [32], "out_shape": [32, 32]}]}
    r = compare_runs(make_run("a"), make_run("b", step_extra=bc, loss_factor=1.7, rotate=[0]))
    assert top(r) == "shape_broadcast"
    r = check_run(make_run("b", step_extra={"target_shape": [32]}))
    assert top(r) == "non_scalar_loss" and r.verdict == "diverged"


def test_divergence_later_step_names_step():
    r = compare_runs(make_run("a"), make_run("b", diverge_at=4))
    assert r.first_divergent_step == 4 and top(r) == "divergence"


def test_check_accepts_frozen_layers_in_inference_mode():
    """A frozen teacher (trainable=False) called with training=False inside the student's step
    is knowledge distillation's recipe; the same layers unfrozen in inference mode are a slip."""
    run = make_run("kd", bn_training=False)
    assert any(f.kind == "training_mode_mismatch" for f in check_run(run).findings)
    run.frozen = [(["bn_0", "drop_0"], 0, len(run.step))]
    assert not any(f.kind == "training_mode_mismatch" for f in check_run(run).findings)


def test_check_clean_run():
    r = check_run(make_run("a"))
    assert r.verdict == "equivalent" and not r.findings


def test_report_json_roundtrip_and_catalogue():
    import json

    r = compare_runs(make_run("a"), make_run("b", nan_at=2))
    doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert set(doc) >= {"verdict", "first_divergent_step", "aligned_steps", "findings", "skipped", "noise"}
    for f in doc["findings"]:
        assert f["kind"] in CATALOGUE
        assert set(f) == {"kind", "severity", "summary", "steps", "layers", "variables", "evidence", "fix"}


def test_missing_fingerprints_aligned_by_equal_step0_loss():
    a, b = make_run("a"), make_run("b")
    b.x_fp[:] = float("nan")
    b.y_fp[:] = float("nan")
    r = compare_runs(a, b)
    assert r.verdict == "equivalent" and r.aligned_steps == 6
    assert "equal step-0 loss" in r.noise["data_alignment"]
    c = make_run("c", loss_factor=3.0, update_factor=3.0)
    c.x_fp[:] = float("nan")
    c.y_fp[:] = float("nan")
    r = compare_runs(a, c)
    assert r.aligned_steps == 0 and any(f.kind == "loss_scale" for f in r.findings)


def test_negligible_gradient_before_batchnorm_is_not_a_mismatch():
    a, b = make_run("a"), make_run("b")
    for run, val in ((a, 1e-9), (b, 3e-9)):
        run.norm[:, 1] = val  # a bias whose gradient is zero up to rounding
    r = compare_runs(a, b)
    assert r.verdict == "equivalent", r.to_dict()


def test_loss_scale_optimizer_in_one_run_only():
    lso = {"optimizer": {"class": "LossScaleOptimizer", "config": {}}, "dtype_policy": "mixed_float16"}
    r = compare_runs(make_run("a", meta=lso), make_run("b", meta={"dtype_policy": "mixed_float16"}))
    assert top(r) == "loss_scaling"
    assert "optimizer_mismatch" not in kinds(r)


def _lso(cls: str, module: str, inner_config: dict) -> dict:
    """A loss-scale optimizer as the tracer describes it (_meta.optimizer_info)."""
    inner = {"class": "Adam", "config": inner_config, "learning_rate": 0.001}
    return {"optimizer": {"class": cls, "inner": inner, "loss_scale": {"dynamic": True, "initial_scale": 32768.0},
                          "learning_rate": 0.001,
                          "config": {"inner_optimizer": {"module": module, "class_name": "Adam",
                                                         "config": inner_config, "registered_name": None},
                                     "dynamic": True, "initial_scale": 32768.0}},
            "dtype_policy": "mixed_float16"}


def test_tf_keras_loss_scale_optimizers_of_both_kinds_are_the_same_scaling():
    """tf-keras wraps its new optimizers in ``LossScaleOptimizerV3`` and the legacy ones in
    ``LossScaleOptimizer`` (module ``keras.optimizers.legacy``): both scale the loss."""
    v3 = _lso("LossScaleOptimizerV3", "keras.optimizers", {"learning_rate": 0.001, "epsilon": 1e-7})
    legacy = _lso("LossScaleOptimizer", "keras.optimizers.legacy", {"learning_rate": 0.001, "epsilon": 1e-7})
    r = compare_runs(make_run("a", meta=v3), make_run("b", meta=legacy))
    assert r.verdict == "equivalent", r.to_dict()
    plain = {"optimizer": {"class": "Adam", "learning_rate": 0.001}, "dtype_policy": "mixed_float16"}
    r = compare_runs(make_run("a", meta=plain), make_run("b", meta=v3))
    assert top(r) == "loss_scaling" and "only run b wraps" in r.findings[0].summary


def test_run_without_steps_claims_nothing_about_variables():
    r = compare_runs(make_run("a", steps=0), make_run("b"))
    assert "not_applied" not in kinds(r) and "missing_gradient" not in kinds(r)
    assert r.verdict == "not_comparable"


def test_a_run_that_failed_before_its_first_step_is_named_with_its_error():
    failed = make_run("b", steps=0, meta={"status": "failed", "error": "ValueError: shapes (None,) and (None, 1)"})
    r = compare_runs(make_run("a"), failed)
    assert r.verdict == "not_comparable"
    why = {s["why"] for s in r.skipped}
    assert any("run b ('b') recorded no optimizer step: it failed before its first step (ValueError" in w
               for w in why), why
    assert "verdict: NOT_COMPARABLE: run b ('b') recorded no optimizer step" in render_text(r)
    # a crash before the model was built leaves no variable to pair: not a gradient run a "missed"
    bare = make_run("b", steps=0, meta={"status": "failed", "error": "SyntaxError: '(' was never closed"})
    bare.variables = []
    r = compare_runs(make_run("a"), bare)
    assert r.verdict == "not_comparable" and "missing_gradient" not in kinds(r), r.to_dict()


def test_statistics_cadence_steps_are_not_recorded_not_differences():
    """The tracer records per-variable statistics on some steps only (its cadence, which can
    differ between two runs): a step without them is "not recorded" on that side."""
    full = make_run("a", steps=20)
    sparse = make_run("b", steps=20, stats_every=4)
    assert not sparse.stats[5] and sparse.stats[4]
    r = compare_runs(full, sparse)
    assert r.verdict == "equivalent", r.to_dict()
    assert check_run(sparse).verdict == "equivalent"
    # a real departure on a step where only one run has statistics is still found, by the loss
    r = compare_runs(full, make_run("b", steps=20, stats_every=4, diverge_at=13))
    assert r.verdict == "diverged" and r.first_divergent_step == 13, r.to_dict()


def _alternating(run, iterations):
    """Two optimizers in turn (a GAN): disjoint gradient sets, interleaved iteration counters."""
    import numpy as np

    run.iterations = np.array(iterations, dtype=float)
    for i in range(run.grad.shape[0]):
        run.grad[i] = [1, 1, 0, 0] if i % 2 == 0 else [0, 0, 1, 1]
    return run


def test_two_optimizers_in_turn_are_not_a_reset():
    from gradtrace.compare.detect_run import iteration_resets, update_steps

    gan = _alternating(make_run("gan", steps=6), [1, 1, 2, 2, 3, 3])
    assert iteration_resets(gan, update_steps(gan)) == []
    # the second optimizer re-created every step: its counter stays at 1
    bad = _alternating(make_run("gan", steps=6), [1, 1, 2, 1, 3, 1])
    assert iteration_resets(bad, update_steps(bad)) == [3, 5]
    # one optimizer whose counter repeats is still a reset
    one = make_run("one", steps=6)
    one.iterations = one.iterations * 0 + 1
    assert iteration_resets(one, update_steps(one)) == [1, 2, 3, 4, 5]


def test_recompiled_with_another_optimizer_is_not_a_reset():
    """Fine-tuning: fit with one optimizer, unfreeze, recompile with a new one (lower rate, more
    variables), fit again: the counter starts over once. An optimizer re-created with the
    same settings is still a reset."""
    from gradtrace.compare.detect_run import iteration_resets, update_steps

    def phases(second: dict):  # noqa: ANN202
        run = make_run("ft", steps=6)
        run.iterations = np.array([1, 2, 3, 1, 2, 3], dtype=float)
        first = {"class": "Adam", "config": {"name": "adam", "learning_rate": 1e-3}, "variables": [2, 3]}
        run.meta["optimizers"] = [first, second]
        return run

    lower = {"class": "Adam", "config": {"name": "adam_1", "learning_rate": 1e-5}, "variables": [0, 1, 2, 3]}
    run = phases(lower)
    assert iteration_resets(run, update_steps(run)) == []
    assert "optimizer_mismatch" not in kinds(check_run(run))
    same = {"class": "Adam", "config": {"name": "adam_1", "learning_rate": 1e-3}, "variables": [2, 3]}
    run = phases(same)
    assert iteration_resets(run, update_steps(run)) == [3]
    assert "optimizer_mismatch" in kinds(check_run(run))
    # three optimizers described over one set of variables, one reset: the counts do not pair up
    run = phases(dict(lower, variables=[2, 3]))
    run.meta["optimizers"].append(dict(lower, variables=[2, 3]))
    assert iteration_resets(run, update_steps(run)) == [3]


def test_optimizers_over_overlapping_variables_take_turns():
    """A GAN whose generator's optimizer is handed the discriminator's variables too: the two
    optimizers' sets overlap, their counters interleave (1, 1, 2, 2, ...), and neither is re-created."""
    from gradtrace.compare.detect_run import iteration_resets, update_steps

    run = make_run("gan", steps=6)
    run.iterations = np.array([1, 1, 2, 2, 3, 3], dtype=float)
    run.meta["optimizers"] = [{"class": "Adam", "config": {"name": "d"}, "variables": [2, 3]},
                              {"class": "Adam", "config": {"name": "g"}, "variables": [0, 1, 2, 3]}]
    assert iteration_resets(run, update_steps(run)) == []
    assert "optimizer_mismatch" not in kinds(check_run(run))


def test_zero_gradient_left_unchanged_is_not_not_applied():
    """A gradient that is exactly zero (a LayerNorm beta cancelling in a Subtract) moves nothing."""
    from gradtrace.compare.data import from_records
    from gradtrace.schema import RunInfo, StepRecord, VariableInfo, VarStep

    info = RunInfo(run_id="z", name="z", variables=[VariableInfo(index=i, name=f"v{i}") for i in range(2)])
    steps = [StepRecord(step=k, loss=1.0 / (k + 1), iterations=k + 1, vars=[
        VarStep(v=0, grad=True, norm=0.5, applied=True, update_norm=0.1),
        VarStep(v=1, grad=True, norm=0.0, applied=False, update_norm=0.0)]) for k in range(4)]
    assert check_run(from_records(info, steps)).verdict == "equivalent"
    steps[2].vars[1] = VarStep(v=1, grad=True, norm=0.3, applied=False, update_norm=0.0)
    r = check_run(from_records(info, steps))
    assert top(r) == "not_applied" and r.first_divergent_step == 2, r.to_dict()


def test_clipnorm_vs_global_clipnorm_is_one_config_finding_with_step_evidence():
    def opt(clip, gclip, wd):
        return {"optimizer": {"class": "SGD", "config": {"learning_rate": 0.1, "clipnorm": clip,
                                                          "global_clipnorm": gclip, "weight_decay": wd}}}

    r = compare_runs(make_run("a", meta=opt(0.05, None, None)),
                     make_run("b", meta=opt(None, 0.05, 0.0), update_factor=1.7))
    assert r.verdict == "diverged"
    assert kinds(r).count("optimizer_mismatch") == 1, r.to_dict()
    f = r.findings[0]
    assert f.kind == "optimizer_mismatch" and f.explains == 1.0
    assert set(f.evidence["differences (a, b)"]) == {"clipnorm", "global_clipnorm"}  # weight_decay None == 0
    assert "clipnorm: 0.05 vs None" in f.fix and f.evidence["step_evidence"], f.to_dict()


def test_unmatched_loss_factor_names_the_weights_it_could_come_from():
    r = compare_runs(make_run("a"), make_run("b", loss_factor=1.37, meta={"fit": {"sample_weight": True}}))
    ls = [f for f in r.findings if f.kind == "loss_scale"]
    assert ls and ls[0].evidence["matches"] is None, r.to_dict()
    assert any("run b weights its samples" in h for h in ls[0].evidence["hints"]), ls[0].to_dict()
    plain = compare_runs(make_run("a"), make_run("b", loss_factor=1.37))
    assert next(f for f in plain.findings if f.kind == "loss_scale").evidence["hints"] == []


def _loss_info(cls: str, from_logits: bool | None) -> dict:
    return {"loss_info": {"cls": cls, "name": cls.lower(), "reduction": "sum_over_batch_size",
                          "from_logits": from_logits}}


def test_loss_objects_that_differ_explain_the_step0_gap():
    """from_logits recorded by both steps' loss calls, different: one loss_mismatch that names
    it, the step-0 gap as its evidence; equal settings say nothing."""
    a = make_run("a", step_extra=_loss_info("SparseCategoricalCrossentropy", True))
    b = make_run("b", step_extra=_loss_info("SparseCategoricalCrossentropy", False), loss_factor=1.7, rotate=[0])
    r = compare_runs(a, b)
    f = r.findings[0]
    assert f.kind == "loss_mismatch" and "from_logits=True" in f.summary and "from_logits=False" in f.summary
    assert f.evidence["differences (a, b)"] == {"from_logits": (True, False)}
    assert f.evidence.get("step_evidence") and "gradient_mismatch" not in kinds(r)
    assert "logits" in f.fix
    r = compare_runs(make_run("a", step_extra=_loss_info("Huber", None)),
                     make_run("b", step_extra=_loss_info("MeanSquaredError", None), loss_factor=1.7, rotate=[0]))
    assert top(r) == "loss_mismatch" and "Huber" in r.findings[0].summary
    same = compare_runs(a, make_run("b", step_extra=_loss_info("SparseCategoricalCrossentropy", True)))
    assert same.verdict == "equivalent" and "loss_mismatch" not in kinds(same)


def test_loss_calls_of_a_multi_output_step_are_compared_one_by_one():
    """A two-output step lists both Keras loss calls; the first output's differs while the
    last ones agree: loss_mismatch names that call, not a generic gradient_mismatch."""
    def two(first_logits: bool) -> dict:
        calls = [dict(_loss_info("SparseCategoricalCrossentropy", first_logits)["loss_info"], y_pred_shape=[32, 3]),
                 dict(_loss_info("MeanSquaredError", None)["loss_info"], y_pred_shape=[32, 1])]
        return {"loss_info": {**calls[-1], "calls": calls}}

    r = compare_runs(make_run("a", step_extra=two(True)),
                     make_run("b", step_extra=two(False), loss_factor=1.7, rotate=[0]))
    f = r.findings[0]
    assert f.kind == "loss_mismatch", r.to_dict()
    assert "loss 1 of 2" in f.summary and "[32, 3]" in f.summary and "from_logits=False" in f.summary
    assert f.evidence["differences (a, b)"] == {"from_logits": (True, False)}
    same = compare_runs(make_run("a", step_extra=two(True)), make_run("b", step_extra=two(True)))
    assert same.verdict == "equivalent" and "loss_mismatch" not in kinds(same)


def test_a_later_cause_does_not_absorb_an_earlier_symptom():
    """NaN from step 4 in run b does not explain a gradient difference at step 0."""
    r = compare_runs(make_run("a"), make_run("b", rotate=[0, 2], nan_at=4))
    ks = kinds(r)
    assert "numerics" in ks and "gradient_mismatch" in ks, r.to_dict()
    nf = next(f for f in r.findings if f.kind == "numerics")
    assert not nf.evidence.get("step_evidence"), nf.evidence


def test_optimizers_taking_turns_are_counted_from_the_variables_they_step():
    """One gradient, two optimizers (body and head): counters 1, 1, 2, 2, ... are no reset;
    one optimizer re-created with the same variables is."""
    from gradtrace.compare.detect_run import iteration_resets, update_steps

    turns = make_run("turns", steps=6, meta={"optimizers": [
        {"class": "Adam", "variables": [0, 1]}, {"class": "Adam", "variables": [2, 3]}]})
    turns.iterations = turns.iterations * 0 + [1, 1, 2, 2, 3, 3]
    assert iteration_resets(turns, update_steps(turns)) == []
    again = make_run("again", steps=6, meta={"optimizers": [
        {"class": "Adam", "variables": [0, 1, 2, 3]}, {"class": "Adam", "variables": [0, 1, 2, 3]}]})
    again.iterations = again.iterations * 0 + [1, 1, 2, 2, 3, 3]
    assert iteration_resets(again, update_steps(again)) == [1, 3, 5]


def test_loss_classes_that_agree_step_by_step_are_context():
    r = compare_runs(make_run("a", step_extra=_loss_info("MyMeanSquaredError", None)),
                     make_run("b", step_extra=_loss_info("MeanSquaredError", None)))
    assert r.verdict == "equivalent" and kinds(r) == ["loss_mismatch"], r.to_dict()
    assert r.findings[0].severity == "info" and "agree step by step" in r.findings[0].summary


def test_unaligned_factor_must_be_measured_well_enough_to_name_a_count():
    """A median ratio of x4.1 with a wide spread does not 'match' the 3 outputs; a tight x3 does."""
    from gradtrace.compare.detect_steps import distribution_scale

    def pair(factor, noise):
        a = make_run("a", steps=20, noise=noise)
        b = make_run("b", steps=20, seed=4, noise=noise, loss_factor=factor, data_seed=2)
        from gradtrace.compare.align import align

        return distribution_scale(a, b, align(a, b))

    assert not pair(1 / 4.1, 0.3), "a noisy x4.1 is not the number of outputs (3)"
    got = pair(1 / 3.0, 0.02)
    assert got and "outputs" in got[0].evidence["matches"]


def test_check_of_a_run_without_steps_is_not_a_clean_bill():
    from gradtrace.compare import render_text

    r = check_run(make_run("empty", steps=0))
    assert r.verdict == "not_comparable" and "no optimizer step" in r.skipped[0]["why"]
    assert "see its warnings" in r.skipped[0]["why"]
    assert "NOTHING TO CHECK" in render_text(r)


def test_check_of_a_failed_run_without_findings_is_not_a_clean_bill():
    """Steps that look fine before an exception do not make the run OK: the result says it failed."""
    ok = check_run(make_run("fine", steps=6))
    assert ok.verdict == "equivalent", ok.to_dict()
    r = check_run(make_run("crashed", steps=6, meta={"status": "failed", "error": "ValueError: Unknown variable"}))
    assert r.verdict == "not_comparable" and "failed after 6 step(s) (ValueError" in r.skipped[0]["why"]
    assert "INCOMPLETE: the run failed" in render_text(r)


def test_a_run_without_steps_is_explained_in_the_tracers_words():
    """The tracer's exit warning names what it does not see (an optimizer of another kind, an
    update through raw ops): compare and check repeat it instead of pointing elsewhere."""
    from gradtrace.compare import render_text

    said = ("no optimizer step was recorded. gradtrace records the apply()/apply_gradients() calls of "
            "Keras 3 and tf-keras optimizers made inside trace, ...: an optimizer of another kind "
            "(tf.compat.v1.train) or an update through raw ops ... is not seen")
    empty = make_run("b", steps=0, meta={"status": "finished", "warnings": ["other warning", said]})
    why = check_run(empty).skipped[0]["why"]
    assert why.startswith("the run recorded no optimizer step (the tracer said: gradtrace records"), why
    assert "(tf.compat.v1.train)" in why
    text = " ".join(render_text(check_run(empty)).split())
    assert "why: the run recorded no optimizer step (the tracer said:" in text and "(tf.compat.v1.train)" in text
    r = compare_runs(make_run("a"), empty)
    assert r.verdict == "not_comparable"
    assert any("run b ('b') recorded no optimizer step: the tracer said: gradtrace records" in s["why"]
               for s in r.skipped), r.skipped


def test_accuracy_classes_that_fit_each_runs_labels_are_the_same_metric():
    """'accuracy' resolves to CategoricalAccuracy for one-hot labels and to
    SparseCategoricalAccuracy for class indices: both right, the training equal."""
    def run(name, cls, y_true):
        info = {"loss_info": {"cls": "X", "y_true_shape": y_true, "y_pred_shape": [32, 3]}}
        return make_run(name, meta={"metrics": [{"name": "accuracy", "class": cls}]}, step_extra=info)

    r = compare_runs(run("a", "CategoricalAccuracy", [32, 3]), run("b", "SparseCategoricalAccuracy", [32]))
    assert r.verdict == "equivalent", r.to_dict()
    f = next(f for f in r.findings if f.kind == "metric_mismatch")
    assert f.severity == "info" and "one-hot vs sparse" in f.summary
    # one-hot labels measured by SparseCategoricalAccuracy: a wrong metric
    r = compare_runs(run("a", "CategoricalAccuracy", [32, 3]), run("b", "SparseCategoricalAccuracy", [32, 3]))
    assert top(r) == "metric_mismatch" and r.verdict == "diverged" and "run b" in r.findings[0].summary


def test_updates_missing_because_not_applied_are_not_an_optimizer_difference():
    r = compare_runs(make_run("a"), make_run("b", not_applied=[0, 1]))
    assert kinds(r)[0] == "not_applied" and "optimizer_mismatch" not in kinds(r), r.to_dict()
    assert r.findings[0].evidence.get("step_evidence"), r.findings[0].evidence


def test_different_batches_of_different_sizes_say_so():
    b = make_run("b", data_seed=3, steps=3, step_extra={"batch_size": 64})
    r = compare_runs(make_run("a"), b)
    f = next(f for f in r.findings if f.kind == "data_mismatch")
    assert f.evidence["batch_sizes"] == [32, 64] and "32 in run a, 64 in run b" in f.summary
    assert "batch_size" in f.fix


def test_models_of_different_structure_name_the_variables_that_part():
    b = make_run("b", init="init-1")
    b.variables[2] = {**b.variables[2], "shape": [5, 3], "struct_key": "1:Dense/kernel[5, 3]"}
    r = compare_runs(make_run("a"), b)
    assert r.verdict == "not_comparable", r.to_dict()
    f = r.findings[0]
    assert f.kind == "structure_mismatch" and "[4, 3]" in f.summary and "[5, 3]" in f.summary, f.summary
    assert all(g.severity == "info" for g in r.findings if g.kind == "init_mismatch")


def test_loss_factor_from_two_recorded_reductions_names_them_in_the_fix():
    def li(red):
        return {"loss_info": {"cls": "MeanSquaredError", "reduction": red, "from_logits": None}}

    r = compare_runs(make_run("a", step_extra=li("sum_over_batch_size")),
                     make_run("b", loss_factor=32.0, step_extra=li("sum")))
    assert top(r) == "loss_scale" and "reduction='sum'" in r.findings[0].fix, r.findings[0].fix


def test_a_schedule_in_one_run_only_is_named_when_the_rates_differ():
    import numpy as np

    sched = {"optimizer": {"class": "SGD", "learning_rate": 0.1,
                           "learning_rate_schedule": {"class": "CosineDecay", "config": {}}}}
    a, b = make_run("a", meta=sched), make_run("b", meta={"optimizer": {"class": "SGD", "learning_rate": 0.1}})
    r = compare_runs(a, b)
    assert r.verdict == "equivalent"  # the rates in effect agree: nothing to explain
    a.lr = np.array([0.1, 0.09, 0.08, 0.07, 0.06, 0.05])
    r = compare_runs(a, b)
    f = next(f for f in r.findings if f.kind == "optimizer_mismatch")
    assert f.evidence["differences (a, b)"]["learning_rate_schedule"] == ["CosineDecay", "constant 0.1"]
    assert "CosineDecay" in f.fix


def test_a_schedule_of_the_same_class_built_with_other_arguments_names_them():
    import numpy as np

    def sched(steps: int) -> dict:
        return {"optimizer": {"class": "Nadam", "learning_rate": 0.005, "learning_rate_schedule": {
            "class": "CosineDecay", "config": {"initial_learning_rate": 0.005, "decay_steps": steps, "name": None}}}}

    a, b = make_run("a", meta=sched(16)), make_run("b", meta=sched(2))
    a.lr = np.array([0.005, 0.00495, 0.0048, 0.0046, 0.0043, 0.004])
    b.lr = np.array([0.005, 0.0025, 0.0, 0.0, 0.0, 0.0])
    f = next(f for f in compare_runs(a, b).findings if f.kind == "optimizer_mismatch")
    assert f.evidence["differences (a, b)"]["learning_rate_schedule"] == {"class": "CosineDecay",
                                                                          "decay_steps": [16, 2]}
    assert "CosineDecay with the same arguments (decay_steps: 16 vs 2)" in f.fix


def test_reduction_fix_reads_tf_keras_auto_as_its_mean_and_skips_loss_functions():
    from types import SimpleNamespace

    from gradtrace.compare.detect_steps import _reduction_fix

    def run(*calls):
        return SimpleNamespace(loss_info={0: {**calls[-1], "calls": list(calls)}})

    auto, mean = run({"reduction": "auto"}), run({"reduction": "sum_over_batch_size"})
    fix = _reduction_fix(auto, run({"reduction": "sum"}))
    assert "reduction='auto' (tf-keras's default, i.e. 'sum_over_batch_size')" in fix
    assert _reduction_fix(auto, mean) is None  # the same reduction, spelled two ways
    # a Keras loss function's 'none' is the script's own reduction, not an argument to change
    assert _reduction_fix(mean, run({"reduction": "none", "function": "mean_squared_error"})) is None
    # nor is a loss object's reduction='none': the script reduces the per-sample losses itself
    assert _reduction_fix(mean, run({"reduction": "none"})) is None


def test_a_first_step_that_did_not_advance_the_counter_is_no_warm_optimizer():
    """gradient_accumulation_steps=2: the first step only accumulates (the counter reads 0
    after it), the other run's fresh optimizer reads 1: neither was used before."""
    a = make_run("a", meta={"optimizer": {"class": "SGD", "config": {"learning_rate": 0.1,
                                                                      "gradient_accumulation_steps": 2}}})
    a.iterations[:] = (np.arange(a.n_steps) + 1) // 2  # 0, 1, 1, 2, 2, ... after each step
    a.applied[0::2] = 0  # the even steps only accumulate
    a.n_applied[0::2] = 0
    b = make_run("b", meta={"optimizer": {"class": "SGD", "config": {"learning_rate": 0.1,
                                                                      "gradient_accumulation_steps": None}}})
    r = compare_runs(a, b)
    assert not any("already taken" in f.summary for f in r.findings), r.to_dict()
    assert any("gradient_accumulation_steps" in f.summary for f in r.findings), r.to_dict()


def test_weight_decay_in_one_run_against_a_penalty_in_the_other_is_one_finding():
    """AdamW(weight_decay=...) in run a meant as the L2 regularizers run b adds to its loss."""
    adamw = {"optimizer": {"class": "AdamW", "config": {"learning_rate": 1e-3, "weight_decay": 0.01}}}
    adam = {"optimizer": {"class": "Adam", "config": {"learning_rate": 1e-3, "weight_decay": None}}}
    a = make_run("a", meta=adamw, reg=None)
    b = make_run("b", meta=adam, reg=0.3, reg_added=True)
    r = compare_runs(a, b)
    reg = next(f for f in r.findings if f.kind == "regularization_mismatch")
    assert reg.evidence["regularized_run"] == "b" and reg.evidence["weight_decay_run"] == "a", r.to_dict()
    assert "weight_decay=0.01" in reg.summary and "weight_decay=0.01 in both" in reg.fix
    # no decay anywhere: the plain regularization finding, its catalogue fix
    r = compare_runs(make_run("a", meta=adam), make_run("b", meta=adam, reg=0.3, reg_added=True))
    reg = next(f for f in r.findings if f.kind == "regularization_mismatch")
    assert "weight_decay_run" not in reg.evidence and "decays" not in reg.summary


def test_init_fingerprints_over_different_variable_sets_do_not_decide_the_start():
    """A Normalization layer's mean and variance in one model only: the hashes differ as sets;
    an equal step-0 loss says the trainable weights started alike. An unequal one leaves them."""
    from gradtrace.schema import VariableInfo

    a, b = make_run("a", init="6:aaaa"), make_run("b", init="9:bbbb")
    extra = [VariableInfo(index=10 + i, name=f"normalization/{n}", shape=[13], trainable=False,
                          layer="normalization", layer_class="Normalization", struct_key=f"9:Norm/{n}")
             for i, n in enumerate(("mean", "variance", "count"))]
    b.variables = b.variables + [v.model_dump() for v in extra]
    r = compare_runs(a, b)
    assert r.verdict == "equivalent" and "init_mismatch" not in kinds(r), r.to_dict()
    assert "different sets of variables" in str(r.noise), r.noise
    r = compare_runs(a, make_run("b", init="9:bbbb", loss_factor=1.3))
    assert "init_mismatch" in kinds(r)  # the same variables: unequal hashes stand
    c = make_run("c", init="9:bbbb", loss_factor=1.3)
    c.variables = c.variables + [v.model_dump() for v in extra]
    assert "init_mismatch" in kinds(compare_runs(a, c))  # other sets, other step-0 loss


def test_a_run_that_failed_early_is_compared_on_its_steps_and_says_so():
    a, b = make_run("a", steps=6), make_run("b", steps=3)
    b.meta.update(status="failed", error="RuntimeError: out of memory")
    r = compare_runs(a, b)
    why = [s for s in r.skipped if "failed after 3 step(s)" in s["why"]]
    assert why and "out of memory" in why[0]["why"] and why[0]["check"] == "steps 3 and later of run a", r.skipped
    assert not any("failed" in s["why"] for s in compare_runs(a, make_run("b", steps=6)).skipped)


def _with_state_deltas(run, deltas):
    run.state_delta = np.full((run.n_steps, run.state_index.size), np.nan)
    run.state_delta[:, list(run.state_index).index(4)] = deltas  # the BN moving mean
    return run


def test_state_moving_differently_under_equal_training_is_a_state_mismatch():
    """Equal losses, gradients and updates, BN statistics that change more from step 2 on (an extra
    forward pass in training mode per step): training is the same, inference is not."""
    same = [0.02] * 6
    more = [0.02, 0.02] + [0.035] * 4
    r = compare_runs(_with_state_deltas(make_run("a"), same), _with_state_deltas(make_run("b"), more))
    assert r.verdict == "diverged", r.to_dict()
    f = r.findings[0]
    assert f.kind == "state_mismatch" and f.severity == "warning" and f.steps == [2]
    assert f.evidence["larger_changes"] == "b" and f.evidence["steps_differing"] == 4
    # float rounding of the same update is not a difference
    noisy = [x * (1 + 1e-6) for x in same]
    r = compare_runs(_with_state_deltas(make_run("a"), same), _with_state_deltas(make_run("b"), noisy))
    assert r.verdict == "equivalent", r.to_dict()


def test_a_mode_difference_that_changes_nothing_is_context():
    """A layer that takes `training` ran in another mode, yet every aligned step agrees and no state
    stays frozen (a recurrent layer without dropout): the difference is named as context."""
    r = compare_runs(make_run("a"), make_run("b", bn_training=False))
    tm = next(f for f in r.findings if f.kind == "training_mode_mismatch")
    assert tm.severity == "info" and r.verdict == "equivalent", r.to_dict()
    assert tm.evidence["same_steps"] == 6
    # the same mode difference with the statistics frozen in that run is the cause
    r = compare_runs(make_run("a"), make_run("b", bn_training=False, state_changes=False))
    assert r.verdict == "diverged" and top(r) == "training_mode_mismatch"


def test_equal_gradients_and_updates_with_other_recorded_losses_are_the_same_training():
    """Two losses differentiated one by one and their gradients added record the last loss only:
    every gradient and update agrees, the recorded losses do not follow each other."""
    b = make_run("b")
    b.loss = b.loss * np.linspace(0.7, 0.9, b.n_steps)
    r = compare_runs(make_run("a"), b)
    assert r.verdict == "equivalent", r.to_dict()
    f = next(f for f in r.findings if f.evidence.get("same_updates"))
    assert f.severity == "info" and f.evidence["same_updates"]["losses_differ"] and "train identically" in f.summary
    # one gradient that departs at a later step: not the same training
    c = make_run("c", diverge_at=3)
    c.loss = c.loss * np.linspace(0.7, 0.9, c.n_steps)
    assert compare_runs(make_run("a"), c).verdict == "diverged"


def test_optimizer_settings_without_effect_on_any_aligned_step_are_context():
    """AdamW(weight_decay=0) against Adam: the classes differ on paper, every step agrees."""
    adam = {"optimizer": {"class": "Adam", "config": {"learning_rate": 0.01}}}
    adamw = {"optimizer": {"class": "AdamW", "config": {"learning_rate": 0.01, "weight_decay": 0.0}}}
    r = compare_runs(make_run("a", meta=adam), make_run("b", meta=adamw))
    f = next(f for f in r.findings if f.kind == "optimizer_mismatch")
    assert r.verdict == "equivalent" and f.severity == "info", r.to_dict()
    # with an effect (the updates part at a step) the difference is the cause
    r = compare_runs(make_run("a", meta=adam), make_run("b", meta=adamw, diverge_at=2))
    assert r.verdict == "diverged" and top(r) == "optimizer_mismatch", r.to_dict()


def test_learning_rates_shifted_by_a_step_are_named():
    from gradtrace.compare.detect_pair import _lr_shift

    a, b = make_run("a", steps=8), make_run("b", steps=8)
    a.lr = np.array([0.1] * 4 + [0.02] * 4)
    b.lr = np.array([0.1] * 3 + [0.02] * 5)
    assert _lr_shift(a, b) == 1 and _lr_shift(b, a) == -1
    assert _lr_shift(a, a) is None  # the same rates
    b.lr = np.array([0.1] * 2 + [0.05] * 6)  # another schedule, not a shift
    assert _lr_shift(a, b) is None
    a.lr = b.lr = np.full(8, 0.1)  # constant rates say nothing
    assert _lr_shift(a, b) is None


def test_an_init_fingerprint_over_fewer_variables_than_the_run_holds_does_not_decide_the_start():
    """A subclassed model built by model.build() before its layers exist: its fingerprint hashes the
    few variables there were (a Dropout's generator). Equal step-0 losses decide; unequal ones leave it."""
    a = make_run("a")
    a.meta["init_fingerprint"] = f"{len(a.variables)}:aaaa"
    r = compare_runs(a, make_run("b", init="1:bbbb"))
    assert r.verdict == "equivalent" and "init_mismatch" not in kinds(r), r.to_dict()
    assert "init_mismatch" in kinds(compare_runs(a, make_run("b", init="1:bbbb", loss_factor=1.3)))


def test_a_layer_that_stops_getting_gradients_in_one_run_only_is_a_trainable_mismatch():
    """Frozen between two fit() calls in run b: its variables get no gradient from step 3 on while
    run a keeps training them; a run that stops nothing, or stops both, is not reported."""
    b = make_run("b")
    cols = [list(b.var_index).index(v) for v in (0, 1)]
    b.grad[3:, cols] = 0
    r = compare_runs(make_run("a"), b)
    f = next(f for f in r.findings if f.kind == "trainable_mismatch")
    assert (f.evidence["stopped_in"], f.evidence["step"]) == ("b", 3) and f.severity == "error", r.to_dict()
    assert len(f.variables) == 2 and "compile()" in f.fix
    a = make_run("a")
    a.grad[3:, cols] = 0
    assert "trainable_mismatch" not in kinds(compare_runs(a, b))


def test_a_run_without_steps_is_not_comparable_whatever_its_configuration_says():
    """Settings that differ are kept as findings, but a run that recorded no optimizer step trained
    nothing the comparator saw: no verdict on the training."""
    opt = {"class": "SGD", "config": {"learning_rate": 0.1}}
    r = compare_runs(make_run("a", meta={"optimizer": {"class": "Adam", "config": {"learning_rate": 1e-3}}}),
                     make_run("b", steps=0, meta={"optimizer": opt}))
    assert r.verdict == "not_comparable", r.to_dict()
    assert "optimizer_mismatch" in kinds(r), r.to_dict()


def test_batches_fingerprinted_by_another_tracer_version_are_said_so():
    """A run recorded before the fingerprint layout changed (no ``fingerprint_version``) against one
    after: the data finding says which run to record again."""
    new = {"extra": {"fingerprint_version": 2}}
    r = compare_runs(make_run("a"), make_run("b", data_seed=2, meta=new))
    (f,) = [f for f in r.findings if f.kind == "data_mismatch"]
    assert f.evidence["fingerprint_versions"] == [1, 2] and "Record run a again" in f.summary, f.summary
    same = compare_runs(make_run("a", meta=new), make_run("b", data_seed=2, meta=new))
    (f,) = [f for f in same.findings if f.kind == "data_mismatch"]
    assert "fingerprint_versions" not in f.evidence, f.evidence


def test_a_fit_over_a_model_with_nothing_trainable_says_so():
    """fit() over a model frozen whole (``model.trainable = False`` before compile()) steps nothing:
    the run's empty record is explained by its frozen variables, not by what the tracer does not see."""
    empty = make_run("frozen", steps=0, meta={"status": "finished", "fit_calls": [{"epochs": 3}],
                                              "warnings": ["no optimizer step was recorded. ..."]})
    for v in empty.variables:
        v["trainable"] = False
    why = check_run(empty).skipped[0]["why"]
    assert "called fit() 1 time(s), but none of the model's" in why and "model.trainable = False" in why, why
    empty.variables[0]["trainable"] = True  # one trainable variable: the tracer's own words again
    assert "none of the model's" not in check_run(empty).skipped[0]["why"]
