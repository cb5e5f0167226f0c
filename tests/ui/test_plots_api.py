"""The UI's plot endpoints over HTTP, on SQLite and PostgreSQL, checked against
numbers the test computed itself from the records it ingested."""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from gradtrace import schema

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
FIT, TAPE, NAN_RUN = "ui-fit-0001", "ui-tape-0002", "nan-run"
LAYERS = ["dense", "batch_normalization", "logits"]


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _nan_run() -> schema.Batch:
    """Three steps: finite, a NaN loss with an infinite gradient norm, finite."""
    info = schema.RunInfo(
        run_id=NAN_RUN, name=NAN_RUN, project="recorded",
        variables=[schema.VariableInfo(index=0, name="m/d/kernel", shape=[2, 2]),
                   schema.VariableInfo(index=1, name="m/d/bias", shape=[2])],
    )
    steps = [
        schema.StepRecord(step=0, loss=1.0, vars=[schema.VarStep(v=0, norm=3.0), schema.VarStep(v=1, norm=4.0)]),
        schema.StepRecord(step=1, loss=math.nan, vars=[schema.VarStep(v=0, norm=math.inf, nonfinite=2),
                                                       schema.VarStep(v=1, norm=1.0)]),
        schema.StepRecord(step=2, loss=0.5, vars=[schema.VarStep(v=0, norm=0.6), schema.VarStep(v=1, norm=0.8)]),
    ]
    return schema.Batch(batch_id="nan-run-0", run=info, steps=steps)


def _overflow_run() -> schema.Batch:
    """Finite norms whose squares overflow: the layer's norm is +Infinity at step 1."""
    info = schema.RunInfo(run_id="overflow-run", name="overflow-run", project="recorded", variables=[
        schema.VariableInfo(index=i, name=f"m/o/w{i}", layer="o") for i in range(2)])
    steps = [schema.StepRecord(step=0, loss=1.0, vars=[schema.VarStep(v=0, norm=3.0), schema.VarStep(v=1, norm=4.0)]),
             schema.StepRecord(step=1, loss=1.0, vars=[schema.VarStep(v=0, norm=1e200), schema.VarStep(v=1, norm=1e200)])]
    return schema.Batch(batch_id="overflow-run-0", run=info, steps=steps)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: Any, tmp_path_factory: pytest.TempPathFactory, recorded_batches: dict[str, list[Any]]) -> Iterator[str]:
    from gradtrace.store import open_store
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings
    from live_server import ServerThread

    created = None
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("plots") / "plots.db")
    else:
        if not _pg_up():
            pytest.fail("PostgreSQL is not running at 127.0.0.1:5432: run `make postgres`")
        import psycopg

        created = f"gt_ui_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created}"')
        url = f"postgresql://postgres@127.0.0.1:5432/{created}"
    try:
        store = open_store(url, check_schema=False)
        store.upgrade()
        for batches in recorded_batches.values():
            for b in batches:
                store.ingest(b)
        store.ingest(_nan_run())
        store.ingest(_overflow_run())
        store.close()
        srv = ServerThread(create_app(Settings(db=url, host="127.0.0.1"))).start()
        try:
            yield srv.url
        finally:
            srv.stop()
    finally:
        if created:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')


def _steps(batches: list[schema.Batch]) -> list[schema.StepRecord]:
    return [s for b in batches for s in b.steps]


def _layer_of(batches: list[schema.Batch]) -> dict[int, str]:
    return {v.index: v.layer or "" for v in batches[0].run.variables}


def _expected_layer_series(batches: list[schema.Batch], value: Any) -> dict[str, list[float]]:
    """Per layer, per step: value(list of VarStep/StateStep of that layer) computed here."""
    layer_of = _layer_of(batches)
    out: dict[str, list[float]] = {}
    for rec in _steps(batches):
        by_layer: dict[str, list[Any]] = {}
        for item in [*rec.vars, *rec.state]:
            by_layer.setdefault(layer_of[item.v], []).append(item)
        for layer, items in by_layer.items():
            x = value(items)
            if x is not None:
                out.setdefault(layer, []).append(x)
    return out


def _get(api: str, path: str, **params: Any) -> Any:
    r = httpx.get(api + path, params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_full_resolution_series_equal_the_recorded_numbers(api: str, recorded_batches: dict[str, list[Any]]) -> None:
    batches = recorded_batches["fit"]
    d = _get(api, f"/api/v1/runs/{FIT}/plots", max_points=1000)
    assert d["bucket_width"] == 1 and d["x"] == list(range(40)) and d["num_steps"] == 40
    losses = [s.loss for s in _steps(batches)]
    np.testing.assert_allclose(d["loss"]["min"], losses, rtol=1e-8)
    assert d["loss"]["min"] == d["loss"]["max"]

    def grad(items: list[Any]) -> float | None:
        norms = [i.norm for i in items if isinstance(i, schema.VarStep)]
        return math.sqrt(sum(n * n for n in norms)) if norms else None

    def ratio(items: list[Any]) -> float | None:
        vs = [i for i in items if isinstance(i, schema.VarStep)]
        if not vs:
            return None
        return math.sqrt(sum(i.update_norm**2 for i in vs) / sum(i.weight_norm**2 for i in vs))

    def state(items: list[Any]) -> float | None:
        ss = [i for i in items if isinstance(i, schema.StateStep)]
        return math.sqrt(sum(i.delta_norm**2 for i in ss)) if ss else None

    for field, fn in (("grad_norm", grad), ("update_ratio", ratio), ("state", state)):
        expected = _expected_layer_series(batches, fn)
        got = {s["layer"]: s for s in d[field]}
        assert list(got) == [layer for layer in LAYERS if layer in expected], field
        for layer, values in expected.items():
            np.testing.assert_allclose(got[layer]["max"], values, rtol=1e-8, err_msg=f"{field} {layer}")
    # BN's moving statistics change in every step of the run that trained in training mode
    assert min(d["state"][0]["min"]) > 0
    assert d["modes"] == [{"layer": "batch_normalization", "segments": [[0, 39, True]]},
                          {"layer": "dropout", "segments": [[0, 39, True]]}]
    assert d["nonfinite"] == [] and d["nonfinite_total"] == 0


def test_buckets_keep_the_extremes_of_the_steps_they_cover(api: str, recorded_batches: dict[str, list[Any]]) -> None:
    losses = np.array([s.loss for s in _steps(recorded_batches["tape"])])
    d = _get(api, f"/api/v1/runs/{TAPE}/plots", max_points=10)
    assert d["bucket_width"] == 4 and len(d["x"]) == 10 and d["x"][:3] == [0, 4, 8]
    for i, start in enumerate(d["x"]):
        chunk = losses[start : start + 4]
        assert d["loss"]["min"][i] == pytest.approx(chunk.min(), rel=1e-8)
        assert d["loss"]["max"][i] == pytest.approx(chunk.max(), rel=1e-8)
    # the tape loop called the model without training=True: modes None, BN state never changes
    assert [m["segments"] for m in d["modes"]] == [[[0, 39, None]], [[0, 39, None]]]
    assert max(d["state"][0]["max"]) == 0


def test_non_finite_values_are_markers_not_line_points(api: str) -> None:
    d = _get(api, f"/api/v1/runs/{NAN_RUN}/plots")
    assert d["loss"]["min"] == [1.0, None, 0.5]
    (layer,) = d["grad_norm"]
    assert layer["layer"] == "d"  # from the variable paths m/d/kernel, m/d/bias
    # step 1: the infinite kernel norm is left out, the bias norm remains
    assert layer["max"] == pytest.approx([5.0, 1.0, 1.0])
    assert d["nonfinite_total"] == 1
    assert d["nonfinite"] == [{"step": 1, "what": "loss and gradient", "loss": "NaN", "variables": ["m/d/kernel"]}]


def test_an_overflowing_layer_norm_is_infinity_not_null(api: str) -> None:
    (layer,) = _get(api, "/api/v1/runs/overflow-run/plots")["grad_norm"]
    assert layer["min"] == [5.0, "Infinity"] and layer["max"] == [5.0, "Infinity"]


def test_heatmap_ratio_and_cosine(api: str, recorded_batches: dict[str, list[Any]]) -> None:
    same = _get(api, "/api/v1/plots/compare", a=FIT, b=FIT, max_cols=40)["heatmap"]
    assert len(same["rows"]) == 6 and same["col_width"] == 1 and len(same["cols"]) == 40
    assert np.allclose(np.array(same["ratio"], dtype=float), 1.0)
    assert np.allclose(np.array(same["cosine"], dtype=float), 1.0, atol=1e-6)

    d = _get(api, "/api/v1/plots/compare", a=FIT, b=TAPE, max_cols=40)
    h = d["heatmap"]
    assert h["rows"][0] == "dense · kernel"
    fit0, tape0 = recorded_batches["fit"][0].steps[0], recorded_batches["tape"][0].steps[0]
    for r, (va, vb) in enumerate(zip(fit0.vars, tape0.vars, strict=True)):
        assert h["ratio"][r][0] == pytest.approx(vb.norm / va.norm, rel=1e-5)
        cos = np.dot(va.sketch, vb.sketch) / (np.linalg.norm(va.sketch) * np.linalg.norm(vb.sketch))
        assert h["cosine"][r][0] == pytest.approx(cos, abs=1e-5)
    # training vs inference mode: the gradients differ from step 0
    assert abs(h["ratio"][0][0] - 1) > 0.05
    assert [s["min"][0] for s in (d["loss"]["a"], d["loss"]["b"])] == pytest.approx([fit0.loss, tape0.loss])

    by_layer = _get(api, "/api/v1/plots/compare", a=FIT, b=TAPE, max_cols=8, by="layer")["heatmap"]
    assert by_layer["rows"] == LAYERS and len(by_layer["cols"]) == 8 and by_layer["col_width"] == 5


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        (f"/api/v1/runs/{FIT}/plots", {"max_points": 0}, 422, "query.max_points"),
        (f"/api/v1/runs/{FIT}/plots", {"max_points": "many"}, 422, "query.max_points"),
        ("/api/v1/runs/no-such-run/plots", {}, 404, "run_id"),
        ("/api/v1/plots/compare", {"a": FIT}, 422, "query.b"),
        ("/api/v1/plots/compare", {"a": FIT, "b": "no-such-run"}, 404, "b"),
        ("/api/v1/plots/compare", {"a": FIT, "b": TAPE, "by": "neuron"}, 422, "query.by"),
        ("/api/v1/plots/compare", {"a": FIT, "b": TAPE, "max_cols": 0}, 422, "query.max_cols"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(api: str, path: str, params: dict[str, Any], status: int, field: str) -> None:
    r = httpx.get(api + path, params=params, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["message"].startswith(field), r.json()


def test_pages_and_static_files_are_served(api: str) -> None:
    for path, kind in (("/", "text/html"), (f"/runs/{FIT}", "text/html"), (f"/compare?a={FIT}&b={TAPE}", "text/html"),
                       ("/static/vendor/uPlot.iife.min.js", "text/javascript"), ("/static/app.css", "text/css")):
        r = httpx.get(api + path, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
    for path in ("/static/../ui.py", "/static/%2e%2e/ui.py", "/static/nope.js"):
        assert httpx.get(api + path, timeout=10).status_code == 404, path
