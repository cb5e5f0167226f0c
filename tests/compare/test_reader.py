"""The SQL reader gives the detectors the same arrays as the in-memory builder."""

from __future__ import annotations

import numpy as np
import pytest
from gradtrace.compare import compare, compare_runs
from gradtrace.compare.reader import read_run
from gradtrace.schema import Batch
from gradtrace.store import open_store


@pytest.fixture()
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    yield s
    s.close()


def _ingest(store, name, **kw):
    from . import synth

    captured = {}
    orig = synth.from_records

    def grab(info, recs):
        captured["info"], captured["recs"] = info, recs
        return orig(info, recs)

    synth.from_records = grab
    try:
        mem = synth.make_run(name, **kw)
    finally:
        synth.from_records = orig
    store.ingest(Batch(batch_id=f"b-{name}", run=captured["info"], steps=captured["recs"]))
    return mem


@pytest.mark.parametrize("kw", [dict(), dict(loss_factor=3.0, update_factor=3.0), dict(rotate=[0]),
                                dict(bn_training=None, state_changes=False), dict(not_applied=[1]),
                                dict(nan_at=2), dict(diverge_at=3)])
def test_store_and_memory_agree(store, kw):
    a_mem = _ingest(store, "a")
    b_mem = _ingest(store, "b", **kw)
    mem = compare_runs(a_mem, b_mem).to_dict()
    db = compare(store, "a", "b", project="t").to_dict()
    assert db["verdict"] == mem["verdict"]
    assert [f["kind"] for f in db["findings"]] == [f["kind"] for f in mem["findings"]]
    assert db["first_divergent_step"] == mem["first_divergent_step"]


def test_reader_arrays(store):
    mem = _ingest(store, "a", nan_at=4)
    got = read_run(store, "a", "t")
    np.testing.assert_array_equal(got.step, mem.step)
    np.testing.assert_allclose(got.loss, mem.loss, equal_nan=True)
    np.testing.assert_allclose(got.norm, mem.norm, equal_nan=True)
    for k in mem.vsum:
        np.testing.assert_allclose(got.vsum[k], mem.vsum[k], equal_nan=True, err_msg=k)
    assert got.state_changed.tolist() == mem.state_changed.tolist()
    assert got.rng.tolist() == mem.rng.tolist()
    assert got.sketch.shape[-1] == 16
    np.testing.assert_allclose(got.sketch[0], mem.sketch[0], rtol=1e-6)


def test_overflow_steps_skipped_by_loss_scaling_are_not_numerics(store):
    """Mixed precision: NaN/Inf gradients on steps the LossScaleOptimizer skipped are normal."""
    from gradtrace.compare import check

    _ingest(store, "a", overflow_at=[0, 1, 2])
    _ingest(store, "b", overflow_at=[0, 1, 2])
    r = compare(store, "a", "b", project="t")
    assert r.verdict == "equivalent" and "numerics" not in [f.kind for f in r.findings], r.to_dict()
    c = check(store, "a", project="t")
    assert [f.kind for f in c.findings] == ["loss_scaling"], c.to_dict()
    assert c.findings[0].evidence["skipped_steps"] == 3


def test_nonfinite_on_a_step_not_skipped_is_still_numerics(store):
    """After skipped overflow steps, a NaN on an applied step is reported, at its own step and variable."""
    from gradtrace.compare import check

    _ingest(store, "a", overflow_at=[0, 1])
    _ingest(store, "b", overflow_at=[0, 1], nan_at=4)
    r = compare(store, "a", "b", project="t")
    f = next(f for f in r.findings if f.kind == "numerics")
    assert f.steps == [4] and f.variables == ["dense_1/kernel"] and "run b" in f.summary, f.to_dict()
    c = check(store, "b", project="t")
    f = next(f for f in c.findings if f.kind == "numerics")
    assert f.severity == "error" and f.steps == [4] and f.variables == ["dense_1/kernel"], f.to_dict()
    assert f.evidence["variables_affected"] == 1


def _two_weighted_outputs(weights):
    loss = {"class": "MeanSquaredError", "name": "mse", "outputs": [{"class": "MeanSquaredError"}] * 2}
    if weights is not None:
        loss["loss_weights"] = weights
    return {"loss": loss}


def test_loss_weights_of_a_hand_written_loss_are_unknown_not_unweighted(store):
    """A run without compile() loss metadata (a tape loop) may weight its outputs: no claim it does not."""
    _ingest(store, "fit", meta=_two_weighted_outputs([2.0, 0.25]))
    _ingest(store, "tape", loss_factor=1.3, grad_factors=[1.3, 1.0, 1.1, 0.9])  # no loss metadata
    r = compare(store, "fit", "tape", project="t")
    f = r.findings[0]
    assert f.kind == "gradient_mismatch", r.to_dict()
    assert "unweighted" not in f.summary and "run b's weighting is not recorded (hand-written loss)" in f.summary
    assert "give both runs the same loss_weights" not in (f.fix or "")
    assert f.evidence["loss_weights_a"] == [2.0, 0.25]
    # the same the other way round
    f = compare(store, "tape", "fit", project="t").findings[0]
    assert "unweighted" not in f.summary and "run a's weighting is not recorded" in f.summary, f.to_dict()


def test_loss_weights_recorded_in_both_runs_that_differ_are_named(store):
    _ingest(store, "w", meta=_two_weighted_outputs([2.0, 0.25]))
    _ingest(store, "unw", meta=_two_weighted_outputs(None), loss_factor=1.3, grad_factors=[1.3, 1.0, 1.1, 0.9])
    _ingest(store, "ones", meta=_two_weighted_outputs([1.0, None]))
    f = compare(store, "w", "unw", project="t").findings[0]
    assert f.kind == "gradient_mismatch"
    assert "run a weights its outputs' losses by [2.0, 0.25]" in f.summary and "run b adds them unweighted" in f.summary
    assert "same loss_weights" in f.fix and f.evidence["loss_weights_a"] == [2.0, 0.25]
    # weights of 1 (or None) are the unweighted sum: no weighting difference to name
    f = compare(store, "unw", "ones", project="t").findings[0]
    assert f.kind == "gradient_mismatch" and "loss_weights" not in f.summary and "loss_weights_a" not in f.evidence


def test_loss_switched_after_the_first_steps_is_read_from_memory_as_from_the_store(store):
    """Loss details past the first HEAD steps are read on demand: a run built from records in
    memory (the tracer's own, tests) answers those reads as the store does, so a loss switched
    at step 70 is named the same way by both."""
    from gradtrace.compare.data import HEAD

    from . import synth

    ce = {"cls": "CategoricalCrossentropy", "name": "categorical_crossentropy",
          "reduction": "sum_over_batch_size", "from_logits": True, "args": {"label_smoothing": 0.0}}
    smooth = dict(ce, args={"label_smoothing": 0.1})
    captured = {}
    orig = synth.from_records

    def grab(info, recs):
        captured["info"], captured["recs"] = info, recs
        return orig(info, recs)

    runs = {}
    synth.from_records = grab
    try:
        for name, switch in (("a", None), ("b", 70)):
            synth.make_run(name, steps=80, step_extra={"loss_info": ce}, diverge_at=switch)
            recs = [type(r).model_validate({**r.model_dump(), "loss_info": smooth})
                    if switch is not None and r.step >= switch else r for r in captured["recs"]]
            store.ingest(Batch(batch_id=f"b-{name}", run=captured["info"], steps=recs))
            runs[name] = orig(captured["info"], recs)
    finally:
        synth.from_records = orig
    assert 70 > HEAD and runs["b"].loss_info_at(75)["args"] == {"label_smoothing": 0.1}
    assert runs["b"].loss_info_at(10)["args"] == {"label_smoothing": 0.0}
    mem = compare_runs(runs["a"], runs["b"])
    db = compare(store, "a", "b", project="t")
    for r in (mem, db):
        f = next((f for f in r.findings if f.kind == "loss_mismatch"), None)
        assert f is not None and "label_smoothing" in f.summary, r.to_dict()
    assert [f.kind for f in db.findings] == [f.kind for f in mem.findings]
