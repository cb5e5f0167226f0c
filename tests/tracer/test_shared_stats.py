"""The per-variable statistics function is shared by every run of the process with the same
shapes: a run must not leave it unusable for the next one."""

from __future__ import annotations

import gc

import gradtrace
import keras
import numpy as np
from tracer_helpers import var_rows


def _net(lazy: bool) -> keras.Model:
    # Shapes no other test uses: the first trace of these statistics happens here.
    layers = [keras.layers.Dense(7), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    return keras.Sequential(layers if lazy else [keras.Input((11,)), *layers])


def _fit(name: str, lazy: bool, db_url: str) -> tuple[str, bool, list[str]]:
    """Train and trace; nothing of the run or its model is kept."""
    rng = np.random.default_rng(3)
    # 36 examples in batches of 8: the last, smaller batch traces the step again
    x, y = rng.normal(size=(36, 11)).astype("float32"), rng.normal(size=(36, 1)).astype("float32")
    model = _net(lazy)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run=name, store=db_url, strict=True) as run:
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return run.info.status, bool(run.info.partial), list(run.info.warnings)


def test_a_model_built_by_fit_does_not_spoil_the_statistics_of_later_runs(db_url, read_run):
    """fit() building a model without Input creates its variables inside the traced step, and
    the shared statistics trace recorded them: once that model was gone, the next run with the
    same shapes failed in every step ("Called a function referencing variables which have
    been deleted") and recorded no statistics."""
    assert _fit("lazy", True, db_url)[:2] == ("finished", False)
    gc.collect()
    for name, lazy in (("after-1", False), ("after-2", True), ("after-3", False)):
        status, partial, warnings = _fit(name, lazy, db_url)
        assert (status, partial) == ("finished", False), warnings
        _, steps = read_run(name)
        assert len(steps) == 5
        for step in steps:
            rows = var_rows(step)
            assert len(rows) == 6 and all(r["norm"] is not None and r["norm"] > 0 for r in rows.values())
        gc.collect()
