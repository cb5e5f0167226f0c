"""`gradtrace serve`, `gradtrace token`, and docker/entrypoint.sh run for real as subprocesses.

No Docker engine runs on these machines: the entrypoint script itself is run
against the local PostgreSQL (a fresh database), exactly as the image runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradtrace import schema

from ._batches import make_batches
from .conftest import REPO, free_port, gradtrace_cmd, uid


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADTRACE_SERVER_", "GRADTRACE_URL"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def _run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gradtrace_cmd() + args, env=_env(**extra), capture_output=True, text=True, timeout=120)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The same ``gradtrace`` command, in-process (no interpreter start-up per call)."""
    from gradtrace.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def _stop(proc: subprocess.Popen[Any]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return str(err)


def _assert_clean_exit(proc: subprocess.Popen[Any], err: str) -> None:
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (exit status -15).
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err, err


@pytest.fixture
def popen() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(cmd: list[str], **extra: str) -> subprocess.Popen[str]:
        procs.append(subprocess.Popen(cmd, env=_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_serve_with_tokens_and_json_access_log(
    tmp_path: Path, popen: Callable[..., subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'team.db'}"
    assert _cli(["db", "upgrade", "--db", db], capsys)[0] == 0  # token commands never create a database
    code, out, err = _cli(["token", "create", "--project", "vision", "--scope", "write", "--name", "ci", "--db", db, "--json"], capsys)
    assert code == 0, err
    token = json.loads(out)["token"]
    reader = _cli(["token", "create", "--project", "vision", "--scope", "read", "--db", db], capsys)[1].strip()
    listed = json.loads(_cli(["token", "list", "--db", db, "--json"], capsys)[1])
    assert [(t["project"], t["scope"], t["name"]) for t in listed] == [("vision", "write", "ci"), ("vision", "read", None)]
    assert token not in json.dumps(listed) and reader not in json.dumps(listed)  # stored hashed

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = popen(gradtrace_cmd() + ["serve", "--db", db, "--port", str(port), "--require-auth"])
    _wait_ready(url, proc)
    run = uid()
    (batch,) = make_batches(run, project="vision", n_steps=6, per_batch=6)
    assert httpx.post(url + "/api/v1/ingest", content=schema.dumps(batch)).status_code == 401
    h = {"Authorization": f"Bearer {token}"}
    assert httpx.post(url + "/api/v1/ingest", content=schema.dumps(batch), headers=h).json()["stored"] is True
    r = httpx.get(f"{url}/api/v1/runs/{run}/steps?fields=loss", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200 and len(r.json()["steps"]) == 6

    rid = next(t["id"] for t in listed if t["scope"] == "read")
    assert _cli(["token", "revoke", str(rid), "--db", db], capsys)[0] == 0
    assert httpx.get(f"{url}/api/v1/runs/{run}", headers={"Authorization": f"Bearer {reader}"}).status_code == 401
    code, _, err = _cli(["token", "revoke", str(rid), "--db", db], capsys)
    assert code == 2 and "no token with id" in err

    err = _stop(proc)
    _assert_clean_exit(proc, err)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "gradtrace.server.access"]
    ingest = [r for r in access if r["path"] == "/api/v1/ingest"]
    assert [r["status"] for r in ingest] == [401, 200]
    assert ingest[1]["project"] == "vision" and ingest[1]["method"] == "POST" and ingest[1]["bytes_in"] > 1000
    steps = next(r for r in access if r["route"] == "/api/v1/runs/{run_id}/steps")
    assert steps["query"] == "fields=loss" and steps["duration_ms"] > 0 and "ts" in steps


def test_token_create_refuses_bad_scope_and_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert _cli(["db", "upgrade", "--db", db], capsys)[0] == 0
    code, _, err = _cli(["token", "create", "--project", "p", "--scope", "admin", "--db", db], capsys)
    assert code == 2 and "--scope" in err
    code, _, err = _cli(["token", "create", "--project", "p" * 300, "--scope", "read", "--db", db], capsys)
    assert code == 2 and "project" in err


@pytest.mark.postgres
def test_serve_refuses_an_out_of_date_schema(fresh_pg: Callable[[], str]) -> None:
    url = fresh_pg()
    r = _run(["serve", "--db", url, "--port", str(free_port())])
    assert r.returncode == 2
    assert f"gradtrace db upgrade --db {url.replace('postgresql://', 'postgresql+psycopg://')}" in r.stderr or (
        "gradtrace db upgrade --db" in r.stderr
    ), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.postgres
def test_entrypoint_against_local_postgres(
    fresh_pg: Callable[[], str], popen: Callable[..., subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url = fresh_pg()  # empty: the entrypoint runs the migrations
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "GRADTRACE_SERVER_DB": url,
        "GRADTRACE_SERVER_HOST": "127.0.0.1",
        "GRADTRACE_SERVER_PORT": str(port),
        "GRADTRACE_SERVER_WORKERS": "2",
        "GRADTRACE_SERVER_REQUIRE_AUTH": "true",
        "GRADTRACE_PYTHON": sys.executable,
        "GRADTRACE_BIN": gradtrace_cmd()[0] if len(gradtrace_cmd()) == 1 else "gradtrace",
    }
    proc = popen(["sh", str(REPO / "docker" / "entrypoint.sh")], **env)
    _wait_ready(base, proc, timeout=90)
    token = _cli(["token", "create", "--project", "ops", "--scope", "write", "--db", url], capsys)[1].strip()
    h = {"Authorization": f"Bearer {token}"}
    run = uid()
    for b in make_batches(run, project="ops", n_steps=20, per_batch=5):
        r = httpx.post(base + "/api/v1/ingest", content=schema.dumps(b), headers=h)
        assert r.status_code == 200, r.text
    assert httpx.get(f"{base}/api/v1/runs/{run}", headers=h).json()["summary"]["num_steps"] == 20
    # Two workers: /metrics aggregates both processes.
    text = "".join(httpx.get(base + "/metrics", headers=h).text for _ in range(4))
    assert "gradtrace_ingested_steps_total 20.0" in text
    err = _stop(proc)
    _assert_clean_exit(proc, err)
    assert "running migrations" in err and "starting the server" in err
    assert _cli(["db", "check", "--db", url], capsys)[0] == 0  # at head: the entrypoint migrated it


def test_entrypoint_gives_up_on_an_unreachable_database(popen: Callable[..., subprocess.Popen[str]]) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    proc = popen(["sh", str(REPO / "docker" / "entrypoint.sh")], GRADTRACE_SERVER_DB=dead, GRADTRACE_DB_WAIT="2",
                 GRADTRACE_PYTHON=sys.executable)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "database not reachable" in err


def test_entrypoint_needs_a_database_url(popen: Callable[..., subprocess.Popen[str]]) -> None:
    proc = popen(["sh", str(REPO / "docker" / "entrypoint.sh")])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "GRADTRACE_SERVER_DB" in err


@pytest.mark.parametrize(("var", "value", "flag"), [
    ("GRADTRACE_SERVER_MAX_BODY_BYTES", "1000", "--max-body-bytes"),
    ("GRADTRACE_SERVER_PORT", "abc", "--port"),
    ("GRADTRACE_SERVER_WORKERS", "0", "--workers"),
    ("GRADTRACE_SERVER_REQUIRE_AUTH", "maybe", "--require-auth"),
])
def test_serve_names_the_environment_variable_of_a_bad_setting(
    var: str, value: str, flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value from GRADTRACE_SERVER_* is named as that variable, not as the flag nobody passed."""
    from gradtrace.cli import main

    monkeypatch.setenv(var, value)
    assert main(["serve", "--db", str(tmp_path / "s.db")]) == 2
    err = capsys.readouterr().err
    assert f"{var}='{value}'" in err and not err.startswith(f"gradtrace serve: error: {flag}"), err
    monkeypatch.delenv(var)
    # the flag itself is still named as the flag
    if flag in ("--max-body-bytes", "--workers"):
        assert main(["serve", "--db", str(tmp_path / "s.db"), flag, "0"]) == 2
        assert f"error: {flag}: " in capsys.readouterr().err


def test_serve_names_the_variable_of_a_server_db(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gradtrace.cli import main

    monkeypatch.setenv("GRADTRACE_SERVER_DB", "http://gradtrace.team:8000")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "$GRADTRACE_SERVER_DB" in err and "not a database" in err and "--: " not in err, err
