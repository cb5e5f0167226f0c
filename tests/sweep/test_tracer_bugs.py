"""Regressions for tracer bugs the sweep found."""

from __future__ import annotations

import pytest

from . import scripts as s


@pytest.mark.slow
def test_mirrored_strategy_fit_is_recorded(sweep):
    # MirroredStrategy runs each replica's step in its own thread
    # (tensorflow/python/distribute/mirrored_run.py _MirroredReplicaThread): those steps
    # belong to the run active in the process.
    t = sweep.traced(s.mirrored_strategy_fit)
    store = sweep.store()
    try:
        summary = store.resolve(t.name, project="sweep")
        detail = store.run_detail(summary.id)
    finally:
        store.close()
    assert summary.num_steps == t.out.steps
    assert "Mirrored" in str(detail.meta.get("strategy"))
