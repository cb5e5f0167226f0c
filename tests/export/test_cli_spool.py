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
