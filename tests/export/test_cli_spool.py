"""``gradtrace spool list|flush`` on a real spool and a real loopback peer."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_helpers import Peer, free_port, run_info, steps
from gradtrace import cli
from gradtrace._export import Exporter
from gradtrace._sinks import make_sink


def test_spool_list_and_flush(tmp_path: Path, cfg_factory, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cfg = cfg_factory(url=url, retry_seconds=0.1, batch_steps=2)
    exp = Exporter(make_sink(url), cfg, run_info("cli1"))
    exp.put_steps(steps(0, 5))
    assert exp.shutdown(5) is False
    spool_dir = str(cfg.spool_dir)

    assert cli.main(["spool", "flush", "--dir", spool_dir, "--timeout", "2"]) == 1  # still down
    out = capsys.readouterr().out
    assert "not reachable" in out and "5 steps of runs cli1" in out

    peer = Peer(port).start()
    try:
        assert cli.main(["spool", "list", "--dir", spool_dir]) == 0
        assert f"http://127.0.0.1:{port}: " in capsys.readouterr().out
        # --url with a trailing slash names the same destination
        assert cli.main(["spool", "flush", "--dir", spool_dir, "--url", url]) == 0
        assert "still waiting" in capsys.readouterr().out
        assert peer.steps_of("cli1") == [0, 1, 2, 3, 4]
        assert exp.spool.pending() == []
    finally:
        peer.stop()
    assert cli.main(["spool", "list", "--dir", str(tmp_path / "empty")]) == 0
    assert "nothing spooled" in capsys.readouterr().out


def test_spool_requeue_rejected(tmp_path: Path, cfg_factory, capsys: pytest.CaptureFixture[str]) -> None:
    from export_helpers import Reply

    peer = Peer().start()
    try:
        peer.default = Reply(401)  # e.g. a wrong token
        cfg = cfg_factory(url=peer.url)
        exp = Exporter(make_sink(peer.url), cfg, run_info("cli2"))
        exp.put_steps(steps(0, 3))
        assert exp.shutdown(5) is False
        assert exp.lost == {"rejected_http_401": 3} and exp.spool.pending() == []
        peer.default = Reply(200)  # fixed
        args = ["--dir", str(cfg.spool_dir), "--url", peer.url]
        assert cli.main(["spool", "requeue", *args]) == 0
        assert "refused batches back" in capsys.readouterr().out
        assert cli.main(["spool", "flush", *args]) == 0
        assert peer.steps_of("cli2") == [0, 1, 2] and exp.spool.rejected() == []
    finally:
        peer.stop()


def test_spool_flush_says_why_the_server_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server refusing every batch (401) is not "resent 0 batches; 0 still waiting", exit 0."""
    from export_helpers import ServerThread
    from gradtrace import schema
    from gradtrace._config import load
    from gradtrace._export import Spool
    from gradtrace.store import open_store

    db = f"sqlite:///{tmp_path / 'team.db'}"
    store = open_store(db)
    token = store.create_token("default", "write")
    store.close()
    srv = ServerThread(db, require_auth=True).start()
    try:
        cfg = load(env={}, spool_dir=tmp_path / "spool")
        spool = Spool(cfg.spool_dir, srv.url, cfg.spool_max_bytes, cfg.spool_max_age)
        for i in range(3):
            spool.put(schema.Batch(batch_id=f"b{i}", run=run_info("cli3"), steps=steps(i, i + 1)))
        args = ["--dir", str(cfg.spool_dir), "--url", srv.url]

        assert cli.main(["spool", "flush", *args]) == 1
        out = capsys.readouterr().out
        assert "3 batches refused by " in out and "401" in out and "GRADTRACE_TOKEN" in out, out
        assert "gradtrace spool requeue" in out

        assert cli.main(["spool", "requeue", *args]) == 0
        assert cli.main(["spool", "flush", *args, "--token", "gt_not_a_token"]) == 1
        out = capsys.readouterr().out
        assert "3 batches refused" in out and "unknown or revoked token" in out, out

        assert cli.main(["spool", "requeue", *args]) == 0
        assert cli.main(["spool", "flush", *args, "--token", token]) == 0
        assert "resent 3 batches; 0 refused; 0 still waiting" in capsys.readouterr().out
    finally:
        srv.stop()
    store = open_store(db)
    assert store.resolve("cli3").num_steps == 3
    store.close()
