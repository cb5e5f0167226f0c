"""GET /runs/{id}/series?fields=...&vars=...: several fields of many variables in one
request, equal to the one-series form; NaN/Inf encoded; bad input named; frozen over REST."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gradtrace import schema

from ._batches import make_batches
from .conftest import ServerThread, uid

FIELDS = ["norm", "mean", "min", "max", "update_norm"]


@pytest.fixture(scope="module")
def client(module_db_url: str, start_module_server: Callable[..., ServerThread]) -> Iterator[httpx.Client]:
    srv = start_module_server(module_db_url)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def _post(client: httpx.Client, batch: schema.Batch) -> None:
    r = client.post("/api/v1/ingest", content=schema.dumps(batch), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def run(client: httpx.Client) -> str:
    """24 steps x 6 variables; step 7 has an Inf norm (v0), step 9 a NaN mean (v2) and a
    -Inf min (v4); variable 5 is missing at steps 3-5 and v1's update_norm is not recorded
    at even steps; frozen layers at odd steps."""
    rid = uid()
    for b in make_batches(rid, n_steps=24, n_vars=6, per_batch=8):
        for rec in b.steps:
            if rec.step == 9:
                rec.vars[2].mean = math.nan
                rec.vars[4].min = -math.inf
            if 3 <= rec.step <= 5:
                rec.vars = [x for x in rec.vars if x.v != 5]
            if rec.step % 2 == 0:
                rec.vars[1].update_norm = None
            rec.frozen = ["batch_normalization"] if rec.step % 2 else []
        _post(client, b)
    return rid


def _one(client: httpx.Client, run: str, field: str, v: int, **params: Any) -> dict[int, Any]:
    doc = client.get(f"/api/v1/runs/{run}/series", params={"field": field, "v": v, **params}).json()
    return dict(zip(doc["steps"], doc["values"], strict=True))


def test_fields_for_all_variables_equal_the_single_series(client: httpx.Client, run: str) -> None:
    r = client.get(f"/api/v1/runs/{run}/series", params={"fields": ",".join(FIELDS), "vars": "all"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["run_id"] == run and doc["fields"] == FIELDS
    assert doc["vars"] == list(range(6)) and doc["steps"] == list(range(24))
    assert set(doc["values"]) == set(FIELDS)
    for f in FIELDS:
        assert len(doc["values"][f]) == 6
        for k, v in enumerate(doc["vars"]):
            one = _one(client, run, f, v)
            row = doc["values"][f][k]
            assert len(row) == 24
            assert {s: x for s, x in zip(doc["steps"], row, strict=True) if x is not None} == one
    vals = doc["values"]
    assert vals["norm"][0][7] == "Infinity"
    assert vals["mean"][2][9] == "NaN"
    assert vals["min"][4][9] == "-Infinity"
    assert vals["norm"][5][3:6] == [None, None, None]  # variable absent at those steps
    assert vals["update_norm"][1][0] is None and vals["update_norm"][1][1] is not None
    # without vars, all variables
    assert client.get(f"/api/v1/runs/{run}/series", params={"fields": "norm,max"}).json()["values"] == {
        "norm": vals["norm"], "max": vals["max"]}


def test_fields_for_chosen_variables_and_steps(client: httpx.Client, run: str) -> None:
    doc = client.get(
        f"/api/v1/runs/{run}/series", params={"fields": "max,norm", "vars": "5,0", "start": 2, "stop": 8}
    ).json()
    assert doc["fields"] == ["max", "norm"] and doc["vars"] == [5, 0] and doc["steps"] == list(range(2, 8))
    assert doc["values"]["norm"][1] == [_one(client, run, "norm", 0)[s] for s in range(2, 8)]
    assert doc["values"]["max"][0] == [_one(client, run, "max", 5).get(s) for s in range(2, 8)]
    # a variable the run does not have: a row of nulls, not an error
    doc = client.get(f"/api/v1/runs/{run}/series", params={"fields": "norm", "vars": "1,40"}).json()
    assert doc["vars"] == [1, 40] and doc["values"]["norm"][1] == [None] * 24


@pytest.mark.parametrize(
    ("params", "named", "mentions"),
    [
        ({"fields": "norm,bogus"}, "query.fields", "'bogus'"),
        ({"fields": "norm,loss"}, "query.fields", "'loss'"),
        ({"fields": "norm,norm"}, "query.fields", "twice"),
        ({"fields": "norm,changed"}, "query.fields", "mix"),
        ({"fields": "norm;drop"}, "query.fields", "not a field name"),
        ({"fields": ","}, "query.fields", "at least one"),
        ({"fields": "norm", "field": "mean"}, "query.field", "not both"),
        ({}, "query.field", "neither"),
        ({"fields": "norm", "v": 1}, "query.v", "vars"),
        ({"fields": "norm", "vars": "0,x"}, "query.vars", "'x'"),
        ({"fields": "norm", "start": 5, "stop": 5}, "query.stop", "greater"),
    ],
)
def test_bad_fields_requests_name_the_parameter(
    client: httpx.Client, run: str, params: dict[str, Any], named: str, mentions: str
) -> None:
    r = client.get(f"/api/v1/runs/{run}/series", params=params)
    assert r.status_code == 422, r.text
    assert named in r.json()["message"] and mentions in r.json()["message"]


def test_fields_of_an_unknown_run_is_404(client: httpx.Client) -> None:
    r = client.get("/api/v1/runs/no-such-run/series", params={"fields": "norm"})
    assert r.status_code == 404 and "run_id" in r.json()["message"]


def test_frozen_layers_come_back_from_the_steps_endpoint(client: httpx.Client, run: str) -> None:
    doc = client.get(f"/api/v1/runs/{run}/steps", params={"fields": "frozen", "stop": 4}).json()
    assert [s["frozen"] for s in doc["steps"]] == [[], ["batch_normalization"], [], ["batch_normalization"]]
    full = client.get(f"/api/v1/runs/{run}/steps", params={"start": 1, "limit": 1}).json()["steps"][0]
    assert full["frozen"] == ["batch_normalization"]
