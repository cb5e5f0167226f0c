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
