"""A base frozen at first and unfrozen for a second fit() call (fine-tuning) against a run
that trains it from the start: the tracer records the change of trainability with the step
(``RunInfo.trainable_changes``), and the comparator says from which step the fine-tuning run
trains the base, not only that the base is frozen in one run. Real trainings on digits,
traced into a SQLite file and compared."""

from __future__ import annotations

from typing import Any

import pytest

BATCH = 32
N = 8 * BATCH


def _train(url: str) -> int:
    """Run ``finetune``: the head on a frozen base, then all of it; run ``all``: everything
    from the start, same steps. Returns the step the fine-tuning run unfroze the base at."""
    import gradtrace
    import keras
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x[:N] / 16).astype("float32"), y[:N].astype("int32")

    def make() -> tuple[Any, Any]:
        keras.utils.set_random_seed(3)
        base = keras.layers.Dense(16, activation="relu")
        return keras.Sequential([keras.Input((64,)), base, keras.layers.Dense(10)]), base

    def compile_(m: Any) -> None:
        m.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    model, base = make()
    base.trainable = False
    compile_(model)
    with gradtrace.trace(run="finetune", project="unfreeze", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        unfrozen_at = int(model.optimizer.iterations.numpy())
        base.trainable = True
        compile_(model)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model, _ = make()
    compile_(model)
    with gradtrace.trace(run="all", project="unfreeze", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return unfrozen_at


@pytest.mark.slow
def test_the_step_a_frozen_base_is_unfrozen_at_is_named(tmp_path):
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    url = f"sqlite:///{tmp_path / 'unfreeze.db'}"
    unfrozen_at = _train(url)
    assert unfrozen_at == N // BATCH
    with open_store(url) as store:
        detail = store.run_detail(store.resolve("finetune", project="unfreeze").id)
        report = compare(store, "finetune", "all", project="unfreeze")
    (change,) = detail.meta["trainable_changes"]
    assert change["at"] == "fit" and change["step"] == unfrozen_at and change["frozen"] == []
    frozen_at_start = [v["index"] for v in detail.variables if not v["trainable"]]
    assert sorted(change["trainable"]) == frozen_at_start and len(frozen_at_start) == 2, detail.variables
    (f,) = [f for f in report.findings if f.kind == "trainable_mismatch"]
    assert f.severity == "error" and {v["unfrozen_at"] for v in f.evidence["variables"]} == {unfrozen_at}, f
    assert f"unfreezes them from step {unfrozen_at}" in f.summary, f.summary
    assert report.findings[0] is f, report.findings
