"""Ingest over HTTP and the REST queries, on SQLite and PostgreSQL behind a real uvicorn."""

from __future__ import annotations

import gzip
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from gradtrace import schema
from gradtrace.store import open_store

from ._batches import make_batches, normalise
from .conftest import uid


def post(client: httpx.Client, batch: schema.Batch, **kw: Any) -> httpx.Response:
    return client.post(
        "/api/v1/ingest", content=schema.dumps(batch), headers={"Content-Type": "application/json"}, **kw
    )


def all_steps(client: httpx.Client, run: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every step record by following next_start."""
    out: list[dict[str, Any]] = []
    start = params.pop("start", 0)
    while True:
        r = client.get(f"/api/v1/runs/{run}/steps", params={"start": start, "limit": limit, **params})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["steps"]) <= limit
        out += page["steps"]
        if page["next_start"] is None:
            return out
        assert page["next_start"] == page["steps"][-1]["step"] + 1 or page["next_start"] > page["steps"][-1]["step"]
        start = page["next_start"]


def test_http_ingest_equals_embedded_store(client: httpx.Client, tmp_path: Path) -> None:
    run = uid()
    project = uid("p")
    batches = make_batches(run, project=project, n_steps=25, per_batch=10)
    for b in batches:
        r = post(client, b)
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": True, "run_id": run, "steps": len(b.steps)}

    embedded = open_store(f"sqlite:///{tmp_path / 'embedded.db'}")
    for b in batches:
        embedded.ingest(b)
    try:
        want_steps = normalise(list(embedded.steps(run)))
        got_steps = all_steps(client, run, limit=7)
        assert [s["step"] for s in got_steps] == list(range(25))
        assert got_steps == want_steps

        detail = client.get(f"/api/v1/runs/{run}").json()
        want = normalise(embedded.run_detail(run))
        assert detail == want
        assert detail["summary"]["status"] == "finished" and detail["summary"]["num_steps"] == 25
        assert len(detail["variables"]) == 4 and detail["variables"][2]["shape"] == [16, 2]

        # Chosen variables and fields, a step range.
        part = client.get(f"/api/v1/runs/{run}/steps", params={"start": 5, "stop": 9, "vars": "1,3", "fields": "loss,norm"}).json()
        assert [s["step"] for s in part["steps"]] == [5, 6, 7, 8] and part["next_start"] is None
        want_part = normalise(list(embedded.steps(run, 5, 9, [1, 3], ["loss", "norm"])))
        assert part["steps"] == want_part
        assert all([v["v"] for v in s["vars"]] == [1, 3] for s in part["steps"])
        assert set(part["steps"][0]) == {"step", "loss", "vars"}

        s_http = client.get(f"/api/v1/runs/{run}/series", params={"field": "update_norm", "v": 2}).json()
        steps, values = embedded.series(run, "update_norm", v=2)
        assert s_http["steps"] == steps.tolist() and s_http["values"] == normalise(values.tolist())
    finally:
        embedded.close()


def test_non_finite_values_round_trip(client: httpx.Client) -> None:
    run = uid()
    for b in make_batches(run, n_steps=10, per_batch=10):
        assert post(client, b).status_code == 200
    loss = client.get(f"/api/v1/runs/{run}/series", params={"field": "loss"}).json()
    assert loss["values"][7] == "NaN" and all(isinstance(x, float) for i, x in enumerate(loss["values"]) if i != 7)
    norm = client.get(f"/api/v1/runs/{run}/series", params={"field": "norm", "v": 0}).json()
    assert norm["values"][7] == "Infinity"
    step7 = client.get(f"/api/v1/runs/{run}/steps", params={"start": 7, "stop": 8}).json()["steps"][0]
    assert step7["loss"] == "NaN" and step7["vars"][0]["norm"] == "Infinity"
    assert step7["state"][0]["delta_norm"] == "-Infinity"
    # The response is strict JSON: a parser without NaN support reads it.
    import json

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(client.get(f"/api/v1/runs/{run}/steps").text, parse_constant=no_constants)


def test_resent_batches_are_not_duplicated(client: httpx.Client) -> None:
    run = uid()
    batches = make_batches(run, n_steps=30, per_batch=10)
    for b in batches:
        assert post(client, b).json()["stored"] is True
    # The tracer resends after a timeout; several copies may race.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda b: post(client, b), batches * 3))
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["stored"] for a in answers] == [False] * 9
    steps = all_steps(client, run, limit=1000, fields="loss")
    assert [s["step"] for s in steps] == list(range(30))
    assert client.get(f"/api/v1/runs/{run}").json()["summary"]["num_steps"] == 30


def test_concurrent_first_sends_store_once(client: httpx.Client) -> None:
    run = uid()
    (batch,) = make_batches(run, n_steps=10, per_batch=10)
    with ThreadPoolExecutor(4) as pool:
        answers = [a.json() for a in pool.map(lambda _: post(client, batch), range(4))]
    assert sorted(a["stored"] for a in answers) == [False, False, False, True]
    assert client.get(f"/api/v1/runs/{run}").json()["summary"]["num_steps"] == 10


def test_gzip_body(client: httpx.Client) -> None:
    run = uid()
    (batch,) = make_batches(run, n_steps=10, per_batch=10)
    body = gzip.compress(schema.dumps(batch).encode())
    r = client.post("/api/v1/ingest", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["steps"] == 10


def test_run_listing_filters_and_paging(client: httpx.Client) -> None:
    project = uid("p")
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    ids = []
    for i in range(5):
        run = uid()
        ids.append(run)
        for b in make_batches(
            run, name="fit" if i % 2 == 0 else "tape", project=project, n_steps=3, per_batch=3,
            status_at_end="finished" if i < 4 else "failed", started_at=t0 + timedelta(hours=i),
        ):
            assert post(client, b).status_code == 200
    base = f"/api/v1/projects/{project}/runs"
    page = client.get(base).json()
    assert page["total"] == 5 and [r["id"] for r in page["items"]] == ids[::-1]  # newest first
    assert {r["name"] for r in client.get(base, params={"name": "tape"}).json()["items"]} == {"tape"}
    assert client.get(base, params={"name": "tape"}).json()["total"] == 2
    assert [r["id"] for r in client.get(base, params={"status": "failed"}).json()["items"]] == [ids[4]]
    window = client.get(base, params={"since": (t0 + timedelta(hours=1)).isoformat(), "until": (t0 + timedelta(hours=3)).isoformat()}).json()
    assert [r["id"] for r in window["items"]] == [ids[2], ids[1]]
    p1 = client.get(base, params={"limit": 2, "offset": 0}).json()
    p2 = client.get(base, params={"limit": 2, "offset": 2}).json()
    p3 = client.get(base, params={"limit": 2, "offset": 4}).json()
    assert [r["id"] for r in p1["items"] + p2["items"] + p3["items"]] == ids[::-1]
    projects = {p["name"]: p for p in client.get("/api/v1/projects").json()["items"]}
    assert projects[project]["runs"] == 5


def test_series_of_many_variables(client: httpx.Client) -> None:
    run = uid()
    for b in make_batches(run, n_steps=12, n_vars=4, per_batch=12):
        post(client, b)
    many = client.get(f"/api/v1/runs/{run}/series", params={"field": "norm", "vars": "all"}).json()
    assert many["vars"] == [0, 1, 2, 3] and many["steps"] == list(range(12))
    for v in range(4):
        one = client.get(f"/api/v1/runs/{run}/series", params={"field": "norm", "v": v}).json()
        assert many["values"][v] == one["values"]
    some = client.get(f"/api/v1/runs/{run}/series", params={"field": "weight_norm", "vars": "3,1", "start": 2, "stop": 5}).json()
    assert some["vars"] == [3, 1] and some["steps"] == [2, 3, 4]


def test_run_by_prefix_and_delete(client: httpx.Client) -> None:
    run = uid()
    for b in make_batches(run, n_steps=5, per_batch=5):
        post(client, b)
    assert client.get(f"/api/v1/runs/{run[:9]}").json()["summary"]["id"] == run
    r = client.delete(f"/api/v1/runs/{run[:9]}")
    assert r.status_code == 422 and "run_id" in r.json()["message"]
    r = client.delete(f"/api/v1/runs/{run}")
    assert r.status_code == 200 and r.json() == {"deleted": run}
    assert client.get(f"/api/v1/runs/{run}").status_code == 404
    assert client.get(f"/api/v1/runs/{run}/steps").status_code == 404
    assert client.delete(f"/api/v1/runs/{run}").status_code == 404


def test_steps_stream_pages_a_long_run(client: httpx.Client) -> None:
    run = uid()
    for b in make_batches(run, n_steps=600, n_vars=4, per_batch=300):
        assert post(client, b).status_code == 200
    # A page boundary inside the store's chunks and at the end.
    got = all_steps(client, run, limit=250, fields="loss")
    assert [s["step"] for s in got] == list(range(600))
    exact = client.get(f"/api/v1/runs/{run}/steps", params={"limit": 600, "fields": "loss"}).json()
    assert len(exact["steps"]) == 600 and exact["next_start"] is None
    assert math.isnan(float(exact["steps"][7]["loss"]))
