"""`gradtrace runs`, `show` and `db`, run in-process against real databases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gradtrace.cli import main
from gradtrace.schema import Batch, RunInfo, StateStep, StepRecord, VariableInfo, VarStep
from gradtrace.store import open_store


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "cli.db")
    s = open_store(path)
    info = RunInfo(run_id="0123456789abcdef", name="fit", project="digits", status="finished",
                   variables=[VariableInfo(index=i, name=f"w{i}") for i in range(3)])
    s.ingest(Batch(batch_id="b1", run=info, steps=[
        StepRecord(step=i, loss=float("nan") if i == 2 else 1.0 / (i + 1), lr=0.01,
                   modes={"batch_normalization": True, "dropout": False},
                   vars=[VarStep(v=v, norm=3.0, applied=v != 1, nonfinite=4 if i == 2 else 0) for v in range(3)],
                   state=[StateStep(v=3, changed=True), StateStep(v=4, changed=True, rng=True)])
        for i in range(6)
    ]))
    s.ingest(Batch(batch_id="b2", run=RunInfo(run_id="fedcba9876543210", name="tape-loop", project="digits"),
                   steps=[StepRecord(step=0, loss=0.5)]))
    s.close()
    return path


def test_runs_table_and_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "tape-loop" in out and "finished" in out and "NAME" in out
    assert main(["runs", "--db", db, "--json", "--project", "digits"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["num_steps"] for r in runs} == {"fit": 6, "tape-loop": 1}
    # --store, the name trace(store=...) gives the same setting, reads the same database
    assert main(["runs", "--store", db, "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == {"fit", "tape-loop"}


def test_show_prints_the_per_step_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "fit", "--db", db, "--steps", "1:4"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STEP"))
    rows = [line.split() for line in lines[header + 2 :]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    step2 = rows[1]
    assert step2[1] == "nan"  # the loss, as recorded
    assert "3/3" in step2 and "12" in step2  # 3 grads of 3 variables, 4 non-finite x 3
    assert f"{math.sqrt(27):.5g}" in step2  # global norm over the three variables
    assert "train 1, infer 1" in out
    # applied 2 (v1 was not applied), state 1 (the RNG state change is not counted)
    assert step2[5:7] == ["2", "1"]


def test_show_explains_steps_between_measured_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "sampled.db")
    info = RunInfo(run_id="5a5a5a5a5a5a5a5a", name="sampled", variables=[VariableInfo(index=0, name="w")])
    with open_store(path) as s:
        s.ingest(Batch(batch_id="s1", run=info, steps=[
            StepRecord(step=0, loss=1.0, vars=[VarStep(v=0, norm=2.0, applied=True)]),
            StepRecord(step=1, loss=0.9, n_grad=1),  # between two measured steps
        ]))
    assert main(["show", "sampled", "--db", path, "--steps", "0:1"]) == 0
    assert "not measured on that step" not in capsys.readouterr().out
    assert main(["show", "sampled", "--db", path]) == 0
    out = capsys.readouterr().out
    row1 = next(line.split() for line in out.splitlines() if line.startswith("   1 "))
    assert row1[3] == "-" and row1[4] == "1/1"
    assert "- : not measured on that step" in out and "stats_every=1" in out


def test_show_json_keeps_nan_as_string(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "0123", "--db", db, "--json", "--vars", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"]["name"] == "fit" and len(doc["steps"]) == 6
    assert doc["steps"][2]["loss"] == "NaN"
    assert [v["v"] for v in doc["steps"][0]["vars"]] == [0]


def test_errors_say_what_to_do(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "fitt", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "no run 'fitt'" in err and "did you mean: fit" in err and "gradtrace runs" in err
    for cmd in (["check", "nosuch"], ["compare", "fit", "nosuch"]):  # every command that reads a run says it
        assert main([*cmd, "--db", db]) == 2
        err = capsys.readouterr().err
        assert "no run 'nosuch'" in err and "List runs with: gradtrace runs" in err, err
    assert main(["show", "fit", "--db", db, "--steps", "5:2"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["runs", "--db", str(tmp_path / "missing.db")]) == 2
    assert "run a traced script first" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("runs", "show", "db"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "Examples:" in capsys.readouterr().out


@pytest.mark.postgres
def test_db_upgrade_current_check(pg_databases, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    url = pg_databases.create()
    assert main(["db", "check", "--db", url]) == 2
    assert f"gradtrace db upgrade --db {url}" in capsys.readouterr().err
    assert main(["runs", "--db", url]) == 2
    assert "gradtrace db upgrade --db" in capsys.readouterr().err
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "upgraded (empty) -> " in capsys.readouterr().out
    assert main(["db", "current", "--db", url]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["db", "check", "--db", url]) == 0
    assert main(["runs", "--db", url]) == 0
    assert "no runs" in capsys.readouterr().out


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`gradtrace runs | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    path = str(tmp_path / "many.db")
    s = open_store(path)
    for i in range(1100):  # more lines than a pipe buffers (64 KiB)
        s.ingest(Batch(batch_id=f"b{i}", run=RunInfo(run_id=f"{i:016x}", name=f"run-{i}", project="p" * 40),
                       steps=[StepRecord(step=0, loss=0.5)]))
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "gradtrace", "runs", "--db", path, "--limit", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("url", ["postgresql://x@[::1", "postgresql://u@host:abc/db", "foo://bar", "http://[::1"])
def test_malformed_db_urls_name_the_flag(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command taking --db (or spool's --url) answers a malformed URL in one line, exit 2."""
    commands = [
        ["runs"], ["show", "fit"], ["db", "current"], ["db", "upgrade"],
        ["token", "list"], ["token", "create", "--project", "p", "--scope", "read"], ["token", "revoke", "1"],
        ["serve"],
    ]
    for argv in commands:
        assert main([*argv, "--db", url]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--db" in err and url in err, (argv, err)
    assert main(["spool", "flush", "--url", url, "--dir", "/nonexistent-spool"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--url" in err and url in err, err


def test_malformed_gradtrace_url_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRADTRACE_URL", "postgresql://u@host:abc/db")
    assert main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "$GRADTRACE_URL" in err and "postgresql://u@host:abc/db" in err


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --db must not create an empty database (or its directory); only `db upgrade` does."""
    typo = tmp_path / "typo.db"
    in_dir = tmp_path / "typo_dir" / "tok.db"
    commands = [
        ["runs", "--db", str(typo)], ["show", "fit", "--db", str(typo)],
        ["compare", "a", "b", "--db", str(typo)], ["check", "a", "--db", str(typo)],
        ["db", "current", "--db", str(typo)], ["db", "check", "--db", str(typo)],
        ["token", "list", "--db", str(typo)], ["token", "revoke", "1", "--db", str(typo)],
        ["token", "create", "--project", "p", "--scope", "write", "--db", str(in_dir)],
        ["token", "create", "--project", "p", "--scope", "write", "--db", f"sqlite:///{in_dir}"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no gradtrace database at" in err and "gradtrace db upgrade --db" in err, (argv, err)
    assert not typo.exists() and not in_dir.parent.exists()

    assert main(["db", "upgrade", "--db", str(in_dir)]) == 0  # the way to create one
    assert main(["token", "create", "--project", "p", "--scope", "write", "--db", str(in_dir)]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--db", str(in_dir), "--json"]) == 0
    assert [t["project"] for t in json.loads(capsys.readouterr().out)] == ["p"]


def test_show_reports_every_kind_of_lost_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GRADTRACE_RING_SIZE=4 GRADTRACE_QUEUE_STEPS=2 lost 16 steps to the ring and 2 to the queue:
    both are reported with the setting to raise, not only the one the tracer warned about."""
    path = str(tmp_path / "lost.db")
    s = open_store(path)
    info = RunInfo(run_id="feedfacefeedface", name="e_rq", status="finished",
                   lost={"ring_overrun": 16, "queue_full": 2, "tensors_queue_full": 3},
                   warnings=["16 steps were overwritten before the host read them (counted in "
                             "lost.ring_overrun); raise GRADTRACE_RING_SIZE"])
    s.ingest(Batch(batch_id="b1", run=info, steps=[StepRecord(step=i, loss=1.0) for i in range(2)]))
    s.close()
    assert main(["show", "e_rq", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "18 steps were not recorded" in out and "3 full tensors were not recorded" in out, out
    assert "ring_overrun 16: raise GRADTRACE_RING_SIZE" in out
    assert "queue_full 2: raise GRADTRACE_QUEUE_STEPS" in out
    assert "tensors_queue_full 3: raise GRADTRACE_FULL_TENSORS_EVERY" in out
