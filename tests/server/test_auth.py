"""Tokens: scopes, project isolation, public endpoints, loopback mode without tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from gradtrace import schema
from gradtrace.store import open_store
from gradtrace_server.config import Settings

from ._batches import make_batches
from .conftest import ServerThread, uid


@pytest.fixture
def authed(db_url: str, start_server: Callable[..., ServerThread]) -> dict[str, Any]:
    """A server requiring tokens, two projects, a run in each and four tokens."""
    a, b = uid("pa"), uid("pb")
    store = open_store(db_url)
    tokens = {
        "a_write": store.create_token(a, "write", "ci"),
        "a_read": store.create_token(a, "read"),
        "b_write": store.create_token(b, "write"),
        "b_read": store.create_token(b, "read"),
    }
    srv = start_server(db_url, require_auth=True)
    runs = {}
    for project, tok in ((a, "a_write"), (b, "b_write")):
        run = uid()
        runs[project] = run
        for batch in make_batches(run, project=project, n_steps=4, per_batch=4):
            r = httpx.post(f"{srv.url}/api/v1/ingest", content=schema.dumps(batch), headers=_h(tokens[tok]))
            assert r.status_code == 200, r.text
    yield {"url": srv.url, "a": a, "b": b, "tokens": tokens, "runs": runs, "store": store}
    store.close()


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_public_endpoints_need_no_token(authed: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert httpx.get(authed["url"] + path).status_code == 200, path


def test_missing_bad_and_revoked_tokens(authed: dict[str, Any]) -> None:
    url = authed["url"]
    for path in ("/api/v1/projects", f"/api/v1/runs/{authed['runs'][authed['a']]}", "/metrics"):
        r = httpx.get(url + path)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["message"].startswith("Authorization: missing token")
    r = httpx.get(url + "/api/v1/projects", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 401 and "Authorization" in r.json()["message"]
    r = httpx.get(url + "/api/v1/projects", headers=_h("gt_not-a-token"))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["message"]
    store = authed["store"]
    tid = next(t.id for t in store.list_tokens(authed["a"]) if t.scope == "read")
    assert httpx.get(url + "/api/v1/projects", headers=_h(authed["tokens"]["a_read"])).status_code == 200
    assert store.revoke_token(tid)
    assert httpx.get(url + "/api/v1/projects", headers=_h(authed["tokens"]["a_read"])).status_code == 401


def test_read_scope_cannot_write(authed: dict[str, Any]) -> None:
    url, a = authed["url"], authed["a"]
    (batch,) = make_batches(uid(), project=a, n_steps=2, per_batch=2)
    r = httpx.post(url + "/api/v1/ingest", content=schema.dumps(batch), headers=_h(authed["tokens"]["a_read"]))
    assert r.status_code == 403 and "read scope" in r.json()["message"]
    r = httpx.delete(f"{url}/api/v1/runs/{authed['runs'][a]}", headers=_h(authed["tokens"]["a_read"]))
    assert r.status_code == 403
    # Nothing was written, nothing deleted.
    assert authed["store"].runs(a).total == 1


def test_no_write_across_projects(authed: dict[str, Any]) -> None:
    url, a, b = authed["url"], authed["a"], authed["b"]
    (batch,) = make_batches(uid(), project=b, n_steps=2, per_batch=2)
    r = httpx.post(url + "/api/v1/ingest", content=schema.dumps(batch), headers=_h(authed["tokens"]["a_write"]))
    assert r.status_code == 403 and r.json()["message"].startswith("body.run.project")
    # Nor by reusing B's run id under project A (a run never changes project).
    (hijack,) = make_batches(authed["runs"][b], project=a, n_steps=2, per_batch=2)
    hijack = hijack.model_copy(update={"batch_id": uid("hj")})
    r = httpx.post(url + "/api/v1/ingest", content=schema.dumps(hijack), headers=_h(authed["tokens"]["a_write"]))
    assert 400 <= r.status_code < 500, r.text
    r = httpx.delete(f"{url}/api/v1/runs/{authed['runs'][b]}", headers=_h(authed["tokens"]["a_write"]))
    assert r.status_code == 404
    assert authed["store"].runs(b).total == 1 and authed["store"].runs(a).total == 1
    assert authed["store"].run_detail(authed["runs"][b]).summary.num_steps == 4


def test_no_read_across_projects(authed: dict[str, Any]) -> None:
    url, a, b = authed["url"], authed["a"], authed["b"]
    h = _h(authed["tokens"]["a_read"])
    names = [p["name"] for p in httpx.get(url + "/api/v1/projects", headers=h).json()["items"]]
    assert names == [a]
    assert httpx.get(f"{url}/api/v1/projects/{a}/runs", headers=h).json()["total"] == 1
    assert httpx.get(f"{url}/api/v1/projects/{b}/runs", headers=h).status_code == 403
    run_b = authed["runs"][b]
    for path in (f"/api/v1/runs/{run_b}", f"/api/v1/runs/{run_b}/steps", f"/api/v1/runs/{run_b}/series?field=loss",
                 f"/api/v1/runs/{run_b[:8]}"):
        r = httpx.get(url + path, headers=h)
        assert r.status_code == 404, (path, r.text)
        assert b not in r.text  # the other project is not even named
    run_a = authed["runs"][a]
    assert httpx.get(f"{url}/api/v1/runs/{run_a}/steps", headers=h).json()["steps"][0]["step"] == 0
    # B's own token reads B.
    assert httpx.get(f"{url}/api/v1/runs/{run_b}", headers=_h(authed["tokens"]["b_read"])).status_code == 200


def test_write_token_of_the_project_deletes(authed: dict[str, Any]) -> None:
    url, a = authed["url"], authed["a"]
    run = authed["runs"][a]
    r = httpx.delete(f"{url}/api/v1/runs/{run}", headers=_h(authed["tokens"]["a_write"]))
    assert r.status_code == 200
    assert authed["store"].runs(a).total == 0


def test_any_token_scrapes_metrics(authed: dict[str, Any]) -> None:
    r = httpx.get(authed["url"] + "/metrics", headers=_h(authed["tokens"]["b_read"]))
    assert r.status_code == 200 and "gradtrace_ingested_steps_total" in r.text


def test_loopback_needs_no_token(db_url: str, start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(db_url)  # 127.0.0.1, auth auto
    (batch,) = make_batches(uid(), n_steps=2, per_batch=2)
    assert httpx.post(srv.url + "/api/v1/ingest", content=schema.dumps(batch)).status_code == 200
    assert httpx.get(srv.url + "/api/v1/projects").status_code == 200


@pytest.mark.parametrize(
    ("host", "flag", "required"),
    [("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False), ("0.0.0.0", None, True),
     ("10.1.2.3", None, True), ("gradtrace.team", None, True), ("127.0.0.1", True, True), ("0.0.0.0", False, False)],
)
def test_auth_auto_mode(host: str, flag: bool | None, required: bool) -> None:
    assert Settings(db="sqlite:///x.db", host=host, require_auth=flag).auth_required is required
