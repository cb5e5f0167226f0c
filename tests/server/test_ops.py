"""Operations: /healthz, /readyz, /metrics counts, OpenAPI documentation."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from gradtrace import schema
from gradtrace.store import open_store
from prometheus_client.parser import text_string_to_metric_families

from ._batches import make_batches
from .conftest import ServerThread, uid


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_ingest(db_url: str, start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(db_url)
    run = uid()
    batches = make_batches(run, n_steps=23, per_batch=10)  # 10 + 10 + 3 steps
    with httpx.Client(base_url=srv.url) as c:
        for b in batches:
            assert c.post("/api/v1/ingest", content=schema.dumps(b)).status_code == 200
        assert c.post("/api/v1/ingest", content=schema.dumps(batches[0])).json()["stored"] is False
        assert c.post("/api/v1/ingest", content=b"{oops").status_code == 422
        assert c.get(f"/api/v1/runs/{run}/steps").status_code == 200
        assert c.get("/api/v1/runs/nope-nope/steps").status_code == 404
        m = _samples(c.get("/metrics").text)
    assert m[("gradtrace_ingested_steps_total", ())] == 23
    assert m[("gradtrace_ingest_batches_total", (("outcome", "stored"),))] == 3
    assert m[("gradtrace_ingest_batches_total", (("outcome", "duplicate"),))] == 1
    assert m[("gradtrace_ingest_batches_total", (("outcome", "rejected"),))] == 1
    assert m[("gradtrace_ingest_batch_seconds_count", ())] == 4
    assert 0 < m[("gradtrace_ingest_batch_seconds_sum", ())] < 30
    ingest = (("method", "POST"), ("route", "/api/v1/ingest"))
    assert m[("gradtrace_http_requests_total", (*ingest, ("status", "200")))] == 4
    assert m[("gradtrace_http_requests_total", (*ingest, ("status", "422")))] == 1
    steps = (("method", "GET"), ("route", "/api/v1/runs/{run_id}/steps"))
    assert m[("gradtrace_http_requests_total", (*steps, ("status", "200")))] == 1
    assert m[("gradtrace_http_requests_total", (*steps, ("status", "404")))] == 1


def test_health_and_readiness(db_url: str, start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(db_url)
    assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["database"] == "ok"


@pytest.mark.postgres
def test_readiness_follows_the_schema(fresh_pg: Callable[[], str], start_server: Callable[..., ServerThread]) -> None:
    from alembic import command
    from gradtrace.store import _migrate

    url = fresh_pg()
    store = open_store(url, check_schema=False)
    store.upgrade()
    srv = start_server(url)
    assert httpx.get(srv.url + "/readyz").status_code == 200
    head = _migrate.head_revision()
    previous = _migrate.script_directory().get_revision(head).down_revision
    with store.engine.begin() as conn:
        command.downgrade(_migrate.alembic_config(connection=conn), str(previous))
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 503 and "gradtrace db upgrade" in r.json()["detail"]
    assert httpx.get(srv.url + "/healthz").status_code == 200  # alive, just not ready
    store.upgrade()
    assert httpx.get(srv.url + "/readyz").status_code == 200
    store.close()


@pytest.mark.postgres
def test_app_refuses_an_out_of_date_schema(fresh_pg: Callable[[], str]) -> None:
    import asyncio

    from gradtrace.store import SchemaOutOfDate
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

    url = fresh_pg()  # empty: no migrations run
    app = create_app(Settings(db=url))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            raise AssertionError("started on an empty database")

    with pytest.raises(SchemaOutOfDate, match="gradtrace db upgrade --db"):
        asyncio.run(start())


def test_openapi_documents_the_api(tmp_path: object, start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(f"sqlite:///{tmp_path}/o.db")
    doc = httpx.get(srv.url + "/openapi.json").json()
    paths = doc["paths"]
    for p in ("/api/v1/ingest", "/api/v1/projects", "/api/v1/projects/{project}/runs", "/api/v1/runs/{run_id}",
              "/api/v1/runs/{run_id}/steps", "/api/v1/runs/{run_id}/series", "/healthz", "/readyz", "/metrics"):
        assert p in paths, p
    assert "delete" in paths["/api/v1/runs/{run_id}"]
    body = paths["/api/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Batch"}
    schemas = doc["components"]["schemas"]
    assert {"Batch", "RunInfo", "StepRecord", "VarStep"} <= set(schemas)
    assert '"NaN"' in doc["info"]["description"] and "Infinity" in doc["info"]["description"]
    params = {p["name"] for p in paths["/api/v1/runs/{run_id}/steps"]["get"]["parameters"]}
    assert {"start", "stop", "vars", "fields", "limit"} <= params
    assert httpx.get(srv.url + "/docs").status_code == 200
    json.dumps(doc)


def test_readme_says_what_docs_needs_offline(tmp_path: object, start_server: Callable[..., ServerThread]) -> None:
    """/docs loads Swagger UI from a CDN (FastAPI's default); the README must say so, and
    /openapi.json (served locally) is what works offline."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    server = start_server(f"sqlite:///{tmp_path}/docs.db")
    page = httpx.get(server.url + "/docs", timeout=30).text
    assert "cdn.jsdelivr.net" in page  # if this changes (vendored assets), update the README
    assert "`/docs`" in readme and "cdn.jsdelivr.net" in readme and "works offline" in readme
    assert httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]
