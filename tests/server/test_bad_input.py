"""Bad input: a 4xx whose message names the field, never a 500, never half-written data."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gradtrace import schema
from gradtrace.store import open_store

from ._batches import make_batches
from .conftest import ServerThread, uid


def _body(run: str, mutate: Callable[[dict[str, Any]], None], version: int = 1) -> bytes:
    # BODY_CASES edit the list form of version 1 (still read); COLUMN_CASES version 2.
    (batch,) = make_batches(run, n_steps=5, per_batch=5)
    doc = json.loads(schema.dumps(batch, version=version))
    mutate(doc)
    return json.dumps(doc).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = doc
        for key in head:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _dup_step(doc: dict[str, Any]) -> None:
    doc["steps"][3]["step"] = doc["steps"][1]["step"]


def _dup_var(doc: dict[str, Any]) -> None:
    doc["steps"][2]["vars"][1]["v"] = doc["steps"][2]["vars"][0]["v"]


# (case, body mutation, status, text the message must contain)
BODY_CASES = [
    ("wrong type loss", _set("steps.2.loss", "lots"), 422, "body.steps[2].loss"),
    ("wrong type step", _set("steps.0.step", [1]), 422, "body.steps[0].step"),
    ("negative step", _set("steps.1.step", -3), 422, "body.steps[1].step"),
    ("negative var index", _set("steps.1.vars.0.v", -1), 422, "body.steps[1].vars[0].v"),
    ("step beyond INTEGER", _set("steps.1.step", 2**31), 422, "body.steps[1].step"),
    ("var index beyond the limit", _set("steps.1.vars.2.v", 100_000), 422, "body.steps[1].vars[2].v"),
    ("long run name", _set("run.name", "n" * 201), 422, "body.run.name"),
    ("long project name", _set("run.project", "p" * 5000), 422, "body.run.project"),
    ("long batch id", _set("batch_id", "b" * 65), 422, "body.batch_id"),
    ("bad run id chars", _set("run.run_id", "../../etc"), 422, "body.run.run_id"),
    ("unknown field", _set("steps.0.gradient_norm", 1.0), 422, "body.steps[0].gradient_norm"),
    ("missing run", lambda d: d.pop("run"), 422, "body.run"),
    ("bad status", _set("run.status", "exploded"), 422, "body.run.status"),
    ("bad schema version", _set("schema_version", 99), 422, "body.schema_version"),
    ("sketch too long", _set("steps.0.vars.0.sketch", [0.0] * 300), 422, "body.steps[0].vars[0].sketch"),
    ("duplicate step in batch", _dup_step, 422, "body.steps[3].step"),
    ("duplicate variable in step", _dup_var, 422, "body.steps[2].vars[1].v"),
    ("malformed JSON", None, 422, "body"),
    ("JSON array", None, 422, "body"),
    ("empty body", None, 422, "body"),
    ("non-UTF-8", None, 400, "body: not valid UTF-8"),
    ("bad gzip", None, 400, "Content-Encoding"),
    ("unsupported encoding", None, 415, "Content-Encoding"),
    ("not JSON content type", None, 415, "Content-Type"),
]


def _dup_column_var(doc: dict[str, Any]) -> None:
    doc["steps"][2]["vars"]["v"][3] = doc["steps"][2]["vars"]["v"][0]


def _short_column(doc: dict[str, Any]) -> None:
    doc["steps"][1]["vars"]["norm"].pop()


def _columns_in_v1(doc: dict[str, Any]) -> None:
    doc["schema_version"] = 1


# Version 2 (columns), the form dumps() writes: (case, mutation, status, text in the message)
COLUMN_CASES = [
    ("negative var index", _set("steps.1.vars.v.0", -1), 422, "body.steps[1].vars.v[0]"),
    ("var index beyond the limit", _set("steps.1.vars.v.2", 2**31), 422, "body.steps[1].vars.v[2]"),
    ("count beyond BIGINT", _set("steps.1.vars.nonfinite.0", 2**63), 422, "body.steps[1].vars.nonfinite[0]"),
    ("wrong type norm", _set("steps.3.vars.norm.2", "big"), 422, "body.steps[3].vars.norm[2]"),
    ("column too short", _short_column, 422, "norm: 3 values for 4 variables"),
    ("unknown column", _set("steps.0.vars.gradient", [1, 2, 3, 4]), 422, "body.steps[0].vars.gradient"),
    ("missing v", lambda d: d["steps"][0]["vars"].pop("v"), 422, "body.steps[0].vars.v"),
    ("sketch too long", _set("steps.0.vars.sketch.1", [0.0] * 300), 422, "body.steps[0].vars.sketch[1]"),
    ("duplicate variable in step", _dup_column_var, 422, "body.steps[2].vars.v[3]"),
    ("columns under version 1", _columns_in_v1, 422, "columns need schema_version 2"),
    ("unknown version", _set("schema_version", 3), 422, "body.schema_version"),
]


@pytest.fixture(scope="module")
def srv(module_db_url: str, start_module_server: Callable[..., ServerThread]) -> Iterator[tuple[ServerThread, Any]]:
    store = open_store(module_db_url)
    yield start_module_server(module_db_url, max_body_bytes=256 * 1024), store
    store.close()


@pytest.mark.parametrize(("case", "mutate", "status", "names"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_bad_ingest_body(srv: tuple[ServerThread, Any], case: str, mutate: Any, status: int, names: str) -> None:
    server, store = srv
    run = uid()
    headers = {"Content-Type": "application/json"}
    if mutate is not None:
        body = _body(run, mutate)
    else:
        good = _body(run, lambda d: None)
        body = {
            "malformed JSON": good[:-5],
            "JSON array": b"[" + good + b"]",
            "empty body": b"",
            "non-UTF-8": good.replace(b'"fit"', b'"fi\xe9t"', 1),
            "bad gzip": b"\x1f\x8b\x08\x00garbage" + good[:50],
            "unsupported encoding": gzip.compress(good),
            "not JSON content type": good,
        }[case]
        if case == "bad gzip":
            headers["Content-Encoding"] = "gzip"
        if case == "unsupported encoding":
            headers["Content-Encoding"] = "br"
        if case == "not JSON content type":
            headers["Content-Type"] = "text/plain"
    before = store.runs().total
    r = httpx.post(server.url + "/api/v1/ingest", content=body, headers=headers)
    assert r.status_code == status, r.text
    doc = r.json()
    assert names in doc["message"], doc
    # Nothing half-written: the run does not exist, no other run appeared.
    assert store.runs().total == before
    with pytest.raises(LookupError):
        store.resolve(run)


@pytest.mark.parametrize(("case", "mutate", "status", "names"), COLUMN_CASES, ids=[c[0] for c in COLUMN_CASES])
def test_bad_column_body(srv: tuple[ServerThread, Any], case: str, mutate: Any, status: int, names: str) -> None:
    server, store = srv
    run = uid()
    before = store.runs().total
    r = httpx.post(server.url + "/api/v1/ingest", content=_body(run, mutate, version=2),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert names in r.json()["message"], r.json()
    assert store.runs().total == before
    with pytest.raises(LookupError):
        store.resolve(run)


def test_both_versions_store_the_same(srv: tuple[ServerThread, Any]) -> None:
    # The list form (version 1, e.g. a spool written before version 2) and the column
    # form store identical rows, derived step columns and layer sums included.
    server, store = srv
    runs = []
    for version in (1, 2):
        run = uid()
        for b in make_batches(run, n_steps=12, per_batch=6):
            body = schema.dumps(b, version=version).encode()
            assert (b'"vars":{"v":' in body) is (version == 2)
            r = httpx.post(server.url + "/api/v1/ingest", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
        runs.append(run)

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float) and a != a:
            return b != b
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    one, two = (list(store.steps(r)) for r in runs)
    assert len(one) == 12 and same(one, two)
    s1, s2 = (store.run_detail(r).summary for r in runs)
    assert s1.num_steps == s2.num_steps == 12


def test_bare_non_finite_tokens_are_read_as_numbers(srv: tuple[ServerThread, Any]) -> None:
    # Python's json.dumps writes NaN/Infinity unquoted; such a client's data is kept, not refused.
    server, store = srv
    run = uid()
    (batch,) = make_batches(run, n_steps=10, per_batch=10)
    body = json.dumps(json.loads(schema.dumps(batch))).encode()
    body = body.replace(b'"NaN"', b"NaN").replace(b'"Infinity"', b"Infinity")
    assert b"NaN" in body and b'"NaN"' not in body
    r = httpx.post(server.url + "/api/v1/ingest", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    step7 = next(s for s in store.steps(run, 7, 8))
    assert step7["loss"] != step7["loss"] and step7["vars"][0]["norm"] == float("inf")


def test_failed_batch_leaves_an_existing_run_untouched(srv: tuple[ServerThread, Any]) -> None:
    server, store = srv
    run = uid()
    first, second = make_batches(run, n_steps=10, per_batch=5)
    assert httpx.post(server.url + "/api/v1/ingest", content=schema.dumps(first)).status_code == 200
    doc = json.loads(schema.dumps(second))
    doc["steps"][4]["step"] = doc["steps"][0]["step"]  # refused by the store, after parsing
    r = httpx.post(server.url + "/api/v1/ingest", content=json.dumps(doc))
    assert r.status_code == 422 and "body.steps[4].step" in r.json()["message"]
    detail = store.run_detail(run)
    assert detail.summary.num_steps == 5 and detail.summary.status == "running"
    assert [s["step"] for s in store.steps(run, fields=["loss"])] == [0, 1, 2, 3, 4]
    # The refused batch id was not recorded: the corrected batch is stored.
    assert httpx.post(server.url + "/api/v1/ingest", content=schema.dumps(second)).json()["stored"] is True


QUERY_CASES = [
    ("/api/v1/runs/{run}/steps?start=-1", 422, "query.start"),
    ("/api/v1/runs/{run}/steps?stop=-5", 422, "query.stop"),
    ("/api/v1/runs/{run}/steps?start=9&stop=3", 422, "query.stop"),
    ("/api/v1/runs/{run}/steps?start=4&stop=4", 422, "query.stop"),
    ("/api/v1/runs/{run}/steps?start=abc", 422, "query.start"),
    ("/api/v1/runs/{run}/steps?limit=0", 422, "query.limit"),
    ("/api/v1/runs/{run}/steps?vars=0,x", 422, "query.vars"),
    ("/api/v1/runs/{run}/steps?vars=-1", 422, "query.vars"),
    ("/api/v1/runs/{run}/steps?fields=loss,bogus", 422, "query.fields"),
    ("/api/v1/runs/{run}/steps?fields=loss;drop", 422, "query.fields"),
    ("/api/v1/runs/{run}/series", 422, "query.field"),
    ("/api/v1/runs/{run}/series?field=bogus", 422, "query.field"),
    ("/api/v1/runs/{run}/series?field=norm", 422, "query.v"),
    ("/api/v1/runs/{run}/series?field=norm&v=-2", 422, "query.v"),
    ("/api/v1/runs/{run}/series?field=norm&v=1&vars=2", 422, "query.vars"),
    ("/api/v1/runs/{run}/series?field=loss&start=5&stop=1", 422, "query.stop"),
    # variable indices the run does not have (4 trainable + 1 state variable: 0..4)
    ("/api/v1/runs/{run}/series?field=norm&v=999", 404, "query.v: run 'fit'"),
    ("/api/v1/runs/{run}/series?field=norm&v=5", 404, "has variables 0..4; no variable 5"),
    ("/api/v1/runs/{run}/series?field=loss&v=999", 404, "query.v"),
    ("/api/v1/runs/no-such-run-id", 404, "run_id"),
    ("/api/v1/runs/no-such-run-id/steps", 404, "run_id"),
    ("/api/v1/runs/" + "x" * 65, 422, "path.run_id"),
    ("/api/v1/projects/default/runs?limit=0", 422, "query.limit"),
    ("/api/v1/projects/default/runs?offset=-1", 422, "query.offset"),
    ("/api/v1/projects/default/runs?status=exploded", 422, "query.status"),
    ("/api/v1/projects/default/runs?since=yesterday", 422, "query.since"),
    ("/api/v1/projects/default/runs?since=2024-02-01T00:00:00Z&until=2024-01-01T00:00:00Z", 422, "query.until"),
    ("/api/v1/projects/" + "p" * 201 + "/runs", 422, "path.project"),
]


@pytest.mark.parametrize(("path", "status", "names"), QUERY_CASES, ids=[c[0].split("/api/v1/")[1][:60] for c in QUERY_CASES])
def test_bad_query(srv: tuple[ServerThread, Any], path: str, status: int, names: str) -> None:
    server, _ = srv
    run = uid()
    for b in make_batches(run, n_steps=5, per_batch=5):
        httpx.post(server.url + "/api/v1/ingest", content=schema.dumps(b))
    r = httpx.get(server.url + path.format(run=run))
    assert r.status_code == status, r.text
    assert names in r.json()["message"]


def test_too_large_by_content_length(srv: tuple[ServerThread, Any]) -> None:
    server, store = srv
    run = uid()
    (batch,) = make_batches(run, n_steps=400, per_batch=400)  # ~0.5 MB of JSON
    body = schema.dumps(batch).encode()
    assert len(body) > 256 * 1024
    r = httpx.post(server.url + "/api/v1/ingest", content=body)
    assert r.status_code == 413 and "262144 bytes" in r.json()["message"]
    with pytest.raises(LookupError):
        store.resolve(run)
    # The same run in smaller batches goes through.
    for b in make_batches(run, n_steps=400, per_batch=100):
        assert httpx.post(server.url + "/api/v1/ingest", content=schema.dumps(b)).status_code == 200


def test_too_large_streamed_without_length(srv: tuple[ServerThread, Any]) -> None:
    server, _ = srv
    (batch,) = make_batches(uid(), n_steps=400, per_batch=400)
    body = schema.dumps(batch).encode()

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length to check
        for i in range(0, len(body), 16384):
            yield body[i : i + 16384]

    r = httpx.post(server.url + "/api/v1/ingest", content=chunks())
    assert r.status_code == 413, r.text


def test_gzip_bomb_is_413(srv: tuple[ServerThread, Any]) -> None:
    server, _ = srv
    good = json.loads(_body(uid(), lambda d: None))
    good["run"]["extra"] = {"pad": " " * (2 * 1024 * 1024)}
    bomb = gzip.compress(json.dumps(good).encode())
    assert len(bomb) < 64 * 1024
    r = httpx.post(server.url + "/api/v1/ingest", content=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 413 and "after gzip decoding" in r.json()["message"]


def test_lying_content_length_is_refused_cleanly(srv: tuple[ServerThread, Any]) -> None:
    server, _ = srv
    # A raw socket: the header says more than the limit; the server answers before reading it.
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n{")
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")
