"""A real traced training shipped over HTTP arrives complete and equal to the embedded store's copy.

The same seeded training (model.fit and a tape loop) is traced twice: once into
a local SQLite file (the embedded store), once to the server over HTTP (via the
tracer's HttpSink, in small batches so several requests carry it). Everything
recorded must match, except what legitimately differs between two executions
(run ids, clocks, host).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradtrace.store import open_store

from .conftest import ServerThread

STEPS = 6
BATCH = 16
# Fields that differ between two executions of the same training.
VOLATILE = {"run_id", "started_at", "ended_at", "wall_time", "host", "id", "duration_s", "revision", "lost", "extra"}


def _train(store: str, kind: str) -> str:
    import gradtrace
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(STEPS * BATCH, 6)).astype("float32")
    y = rng.integers(0, 3, size=STEPS * BATCH)
    # Explicit names: Keras numbers auto-named layers and seed generators per process
    # (dense_1, seed_generator_1, ...), so the two executions would differ by name only.
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(3, name="out")],
                             name="mlp")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.Adam(1e-2, name="adam")
    with gradtrace.trace(run=kind, project="over-http", store=store) as run:
        if kind == "fit":
            model.compile(optimizer=opt, loss=loss_fn)
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        else:
            for s in range(STEPS):
                xb, yb = x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH]
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, model(xb, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return str(run.info.run_id)


def _same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-5 relative (NaN equals NaN), volatile keys skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - VOLATILE
        for k in sorted(keys):
            assert k in a and k in b, f"{path}.{k} missing on one side"
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        assert (math.isnan(fa) and math.isnan(fb)) or fa == pytest.approx(fb, rel=1e-5, abs=1e-7), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[str, str]]:
    """kind -> (SQLite URL, run id) of the embedded reference, trained once per module: the
    seeded training is the same whichever database sits behind the server."""
    done: dict[str, tuple[str, str]] = {}

    def get(kind: str) -> tuple[str, str]:
        if kind not in done:
            url = f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'embedded.db'}"
            done[kind] = (url, _train(url, kind))
        return done[kind]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fit", "tape"])
def test_traced_training_over_http_equals_embedded(
    kind: str,
    db_url: str,
    start_server: Callable[..., ServerThread],
    embedded: Callable[[str], tuple[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADTRACE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("GRADTRACE_BATCH_STEPS", "2")  # several HTTP batches per run
    srv = start_server(db_url)
    embedded_url, local_id = embedded(kind)
    remote_id = _train(srv.url, kind)

    with httpx.Client(base_url=srv.url, timeout=30) as c:
        detail = c.get(f"/api/v1/runs/{remote_id}").json()
        steps = c.get(f"/api/v1/runs/{remote_id}/steps").json()
        loss = c.get(f"/api/v1/runs/{remote_id}/series", params={"field": "loss"}).json()
        m = c.get("/metrics").text
    assert detail["summary"]["status"] == "finished" and detail["summary"]["num_steps"] == STEPS
    assert detail["summary"]["partial"] is False and not detail["meta"].get("lost")
    assert [s["step"] for s in steps["steps"]] == list(range(STEPS)) and steps["next_start"] is None
    assert "gradtrace_ingest_batches_total{outcome=\"stored\"}" in m

    from gradtrace_server._json import jsonable

    with open_store(embedded_url) as local:
        want_detail = jsonable(local.run_detail(local_id))
        want_steps = jsonable(list(local.steps(local_id)))
        want_loss = local.series(local_id, "loss")
    _same(detail, want_detail, "run")
    _same(steps["steps"], want_steps, "steps")
    assert loss["steps"] == want_loss[0].tolist()
    _same(loss["values"], jsonable(want_loss[1].tolist()), "loss")
    # Not vacuous: every trainable variable has a finite gradient norm at every step.
    n_trainable = sum(1 for v in detail["variables"] if v["trainable"])
    assert n_trainable == 6
    for s in steps["steps"]:
        norms = [v["norm"] for v in s["vars"] if v["norm"] is not None]
        assert len(norms) == n_trainable and all(isinstance(n, float) and n > 0 for n in norms)
