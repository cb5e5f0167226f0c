"""A wrapper's own arguments: two fit() runs of a Bidirectional GRU that differ only in
``merge_mode`` ("sum" vs "ave"). The tracer records a wrapper's arguments without those its
sublayers repeat (``layer_configs``), so the comparator names the argument; the same model
twice is equivalent. Real trainings, traced into a SQLite file and compared."""

from __future__ import annotations

import numpy as np
import pytest


def _fit(url: str, run: str, merge_mode: str) -> None:
    import gradtrace
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 3)).astype("float32")
    y = (x.sum(axis=(1, 2)) > 0).astype("int32")
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6, 3)),
                              keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode=merge_mode),
                              keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=run, project="wrapper", store=url):
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


@pytest.mark.slow
def test_a_wrappers_own_argument_is_recorded_and_named(tmp_path):
    from gradtrace.compare import compare
    from gradtrace.store import open_store

    url = f"sqlite:///{tmp_path / 'wrapper.db'}"
    for run, mode in (("sum", "sum"), ("ave", "ave"), ("sum-again", "sum")):
        _fit(url, run, mode)
    with open_store(url) as store:
        detail = store.run_detail(store.resolve("sum", project="wrapper").id)
        differ = compare(store, "sum", "ave", project="wrapper")
        same = compare(store, "sum", "sum-again", project="wrapper")
    classes = {str(x["index"]): x["class_name"] for x in detail.layers}
    configs = detail.meta["layer_configs"]
    (bi,) = [k for k, c in classes.items() if c == "Bidirectional"]
    assert configs[bi] == {"merge_mode": "sum"}, configs  # its sublayers' configs are theirs
    grus = [k for k, c in classes.items() if c == "GRU"]
    assert len(grus) == 2 and all("units" not in configs[k] for k in grus), configs  # the cell carries them
    assert {configs[k]["go_backwards"] for k in grus} == {False, True}
    top = differ.findings[0]
    assert (differ.verdict, top.kind) == ("diverged", "layer_config_mismatch"), differ.findings
    assert [{k: d[k] for k in ("class", "argument", "a", "b")} for d in top.evidence["differences"]] == [
        {"class": "Bidirectional", "argument": "merge_mode", "a": "sum", "b": "ave"}], top.evidence
    assert same.verdict == "equivalent", same.findings
