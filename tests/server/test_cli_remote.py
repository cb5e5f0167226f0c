"""The read commands through a real server: $GRADTRACE_URL=http(s)://... (a training script's
team-server setting) reads through its REST API exactly as --server does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gradtrace.cli import main
from gradtrace.store import open_store

from ._batches import make_batches
from .conftest import ServerThread, uid


@pytest.fixture
def team(db_url: str, start_server: Callable[..., ServerThread]) -> dict[str, Any]:
    """A server requiring tokens with one 12-step run (NaN loss at step 7) and a read token."""
    project = uid("team")
    run = uid()
    store = open_store(db_url)
    for batch in make_batches(run, name="fit", project=project, n_steps=12, per_batch=6):
        store.ingest(batch)
    token = store.create_token(project, "read")
    store.close()
    srv = start_server(db_url, require_auth=True)
    return {"url": srv.url, "project": project, "run": run, "token": token, "db": db_url}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gradtrace_url_of_a_server_reads_through_its_api(
    team: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRADTRACE_URL", team["url"] + "/")
    monkeypatch.setenv("GRADTRACE_TOKEN", team["token"])
    monkeypatch.chdir(tmp_path)  # no ./gradtrace.db is involved

    code, out, err = _run(["runs"], capsys)
    assert code == 0, err
    assert "fit" in out and team["run"][:12] in out and team["project"][:20] in out

    code, out, err = _run(["runs", "--json", "--project", team["project"]], capsys)
    assert code == 0 and [r["id"] for r in json.loads(out)] == [team["run"]]

    code, out, err = _run(["show", "fit", "--project", team["project"], "--steps", "5:9"], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["5", "6", "7", "8"]
    assert rows[2][1] == "nan"  # step 7's loss, "NaN" on the wire

    # the same table as reading the database directly
    code, direct, err = _run(["show", "fit", "--project", team["project"], "--steps", "5:9", "--db", team["db"]], capsys)
    assert code == 0 and direct == out

    code, out, err = _run(["show", team["run"], "--json", "--steps", "0:3"], capsys)
    assert code == 0 and [s["step"] for s in json.loads(out)["steps"]] == [0, 1, 2]

    code, out, err = _run(["check", team["run"], "--json"], capsys)
    assert code == 1 and json.loads(out)["findings"][0]["kind"] == "numerics", err
    code, out, err = _run(["compare", team["run"], team["run"], "--json"], capsys)
    assert code in (0, 1) and json.loads(out)["a"]["id"] == team["run"], err

    code, out, err = _run(["show", "no-such-run"], capsys)
    assert code == 2 and "no run 'no-such-run" in err and "gradtrace runs" in err


def test_gradtrace_url_server_without_token_says_how_to_pass_one(
    team: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRADTRACE_URL", team["url"])
    monkeypatch.delenv("GRADTRACE_TOKEN", raising=False)
    for argv in (["runs"], ["show", "fit"], ["check", "fit"], ["compare", "fit", "fit"]):
        code, out, err = _run(argv, capsys)
        assert code == 2 and "401" in err and "GRADTRACE_TOKEN" in err and "not a database" not in err, (argv, err)
    # --token beats the environment
    code, out, err = _run(["runs", "--token", team["token"]], capsys)
    assert code == 0 and "fit" in out, err


def test_explicit_db_beats_a_server_gradtrace_url(
    team: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRADTRACE_URL", team["url"])
    code, out, err = _run(["runs", "--db", team["db"], "--json"], capsys)
    assert code == 0 and team["run"] in {r["id"] for r in json.loads(out)}, err


def test_help_says_gradtrace_url_may_be_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("runs", "show", "compare", "check"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "http(s)://" in capsys.readouterr().out, cmd
