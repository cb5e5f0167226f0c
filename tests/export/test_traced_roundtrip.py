"""A real traced training shipped over HTTP arrives equal to the same training in a SQLite file."""

from __future__ import annotations

import math
from pathlib import Path

from export_helpers import ServerThread
from gradtrace.store import open_store


def _train(store: str, spool: Path) -> None:
    import gradtrace
    import keras
    import numpy as np

    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 5)).astype("float32"), rng.normal(size=(48, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with gradtrace.trace(run="fit", project="rt", store=store, spool_dir=spool, flush_interval=0.1):
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)


def _read(url: str) -> tuple[dict, list[dict]]:
    store = open_store(url)
    try:
        (run,) = store.runs(project="rt").items
        detail = store.run_detail(run.id)
        rows = list(store.steps(run.id))
        # layer modes are keyed by the layer's (auto-generated) name: align them by structure
        key = {layer["name"]: layer["struct_key"] for layer in detail.layers}
        for r in rows:
            r["modes"] = {key.get(k, k): v for k, v in (r.get("modes") or {}).items()}
        return {"status": run.status, "vars": detail.variables, "lost": detail.meta["lost"]}, rows
    finally:
        store.close()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_http_and_embedded_store_receive_the_same_run(tmp_path: Path) -> None:
    local = f"sqlite:///{tmp_path / 'local.db'}"
    _train(local, tmp_path / "spool")
    served = f"sqlite:///{tmp_path / 'server.db'}"
    server = ServerThread(served).start()
    try:
        _train(server.url, tmp_path / "spool")
    finally:
        server.stop()
    meta_l, rows_l = _read(local)
    meta_s, rows_s = _read(served)
    assert meta_l["status"] == meta_s["status"] == "finished"
    assert meta_l["lost"] == meta_s["lost"] == {}
    assert [v["struct_key"] for v in meta_l["vars"]] == [v["struct_key"] for v in meta_s["vars"]]
    assert [r["step"] for r in rows_l] == list(range(6))
    drop = {"wall_time"}  # the only field that may differ between two identical trainings
    strip = [{k: v for k, v in r.items() if k not in drop} for r in rows_l]
    strip_s = [{k: v for k, v in r.items() if k not in drop} for r in rows_s]
    diff = [(r["step"], k, r[k], s[k]) for r, s in zip(strip, strip_s, strict=True) for k in r if not _same(r[k], s[k])]
    assert not diff, diff[:6]
    assert any(r["loss"] is not None for r in rows_l)
