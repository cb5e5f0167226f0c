"""The exporter over HTTP against a scriptable loopback peer: retries, spool, losses, shutdown."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from export_helpers import Peer, Reply, free_port, run_info, steps, wait_for
from gradtrace import schema
from gradtrace._export import Exporter, Spool, resend_spool
from gradtrace._sinks import HttpSink, SinkError, make_sink, parse_retry_after


def test_batches_carry_fresh_ids_increasing_revisions_and_the_final_status(peer: Peer, cfg_factory) -> None:
    cfg = cfg_factory(batch_steps=4)
    exp = Exporter(make_sink(peer.url), cfg, run_info("r1"))
    exp.put_steps(steps(0, 10))
    assert exp.flush(10)
    exp.update_run(run_info("r1", status="finished"))
    assert exp.shutdown(10)
    assert exp.shutdown(10)  # idempotent
    assert peer.steps_of("r1") == list(range(10))
    ids = [r["batch_id"] for r in peer.requests]
    assert len(ids) == len(set(ids)) >= 4  # 10 steps / 4 per batch (+ run-only batches)
    revisions = [peer.batches[i].run.revision for i in ids]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert peer.batches[ids[-1]].run.status == "finished"
    assert all(len(peer.batches[i].steps) <= 4 for i in ids)
    assert exp.lost == {}


def test_callable_run_info_is_read_per_batch(peer: Peer, cfg_factory) -> None:
    state = {"status": "running"}
    exp = Exporter(make_sink(peer.url), cfg_factory(), lambda: run_info("r2", status=state["status"]))
    exp.put_steps(steps(0, 3))
    assert exp.flush(10)
    state["status"] = "failed"
    assert exp.shutdown(10)
    assert peer.last_run("r2").status == "failed"


def test_nonfinite_values_survive_the_wire(peer: Peer, cfg_factory) -> None:
    exp = Exporter(make_sink(peer.url), cfg_factory(), run_info("nan"))
    rec = schema.StepRecord(
        step=0,
        loss=float("nan"),
        vars=[schema.VarStep(v=0, norm=float("inf"), min=float("-inf"), sketch=[float("nan"), 1.0])],
    )
    exp.put_steps([rec])
    assert exp.shutdown(10)
    (got,) = [s for b in peer.batches.values() for s in b.steps]
    assert got.loss != got.loss
    assert got.vars[0].norm == float("inf") and got.vars[0].min == float("-inf")
    assert got.vars[0].sketch is not None and got.vars[0].sketch[0] != got.vars[0].sketch[0]


def test_server_down_spools_then_next_exporter_resends_everything_once(cfg_factory) -> None:
    port = free_port()  # nothing listens yet
    url = f"http://127.0.0.1:{port}"
    cfg = cfg_factory(retry_seconds=0.3, batch_steps=5)
    exp = Exporter(make_sink(url), cfg, run_info("down"))
    exp.put_steps(steps(0, 12))
    assert not exp.flush(5)  # spooled, not delivered
    exp.update_run(run_info("down", status="finished"))
    assert not exp.shutdown(5)
    assert exp.lost == {}
    spooled = exp.spool.pending()
    assert sum(e.n_steps for e in spooled) == 12
    assert (exp.spool.dir.stat().st_mode & 0o777) == 0o700

    peer = Peer(port).start()
    try:
        # A later run to the same destination resends what the first one left.
        exp2 = Exporter(make_sink(url), cfg, run_info("later"))
        assert wait_for(lambda: not exp2.spool.pending(), 10)
        exp2.put_steps(steps(0, 2))
        assert exp2.shutdown(10)
        assert peer.steps_of("down") == list(range(12))  # every step exactly once
        assert peer.last_run("down").status == "finished"
        assert peer.steps_of("later") == [0, 1]
    finally:
        peer.stop()


def test_server_comes_back_while_the_run_goes_on(cfg_factory) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exp = Exporter(make_sink(url), cfg_factory(retry_seconds=0.2), run_info("flap"))
    exp.put_steps(steps(0, 5))
    assert not exp.flush(5)
    peer = Peer(port).start()
    try:
        exp.put_steps(steps(5, 10))
        # the exporter probes the destination with backoff (first probe within ~1.2 s)
        assert wait_for(lambda: peer.steps_of("flap") == list(range(10)), 15)
        assert exp.shutdown(10)
        assert not exp.spool.pending()
        assert peer.steps_of("flap") == list(range(10))
    finally:
        peer.stop()


def test_retry_after_is_honoured(peer: Peer, cfg_factory) -> None:
    peer.script = [Reply(429, {"Retry-After": "1"})]
    exp = Exporter(make_sink(peer.url), cfg_factory(retry_seconds=5), run_info("busy"))
    exp.put_steps(steps(0, 3))
    assert exp.shutdown(10)
    first, second = peer.requests[0], peer.requests[1]
    assert first["status"] == 429 and second["batch_id"] == first["batch_id"]
    assert second["time"] - first["time"] >= 0.95
    assert peer.steps_of("busy") == [0, 1, 2]


def test_503_is_retried_with_backoff(peer: Peer, cfg_factory) -> None:
    peer.script = [Reply(503), Reply(503)]
    exp = Exporter(make_sink(peer.url), cfg_factory(retry_seconds=10), run_info("b503"))
    assert exp.flush(10)
    gaps = [b["time"] - a["time"] for a, b in zip(peer.requests, peer.requests[1:], strict=False)]
    assert gaps[0] >= 0.75 and gaps[1] >= 1.55  # 2**n * uniform(0.8, 1.2)
    assert exp.shutdown(5)


def test_422_is_final_counted_and_kept(peer: Peer, cfg_factory, caplog: pytest.LogCaptureFixture) -> None:
    exp = Exporter(make_sink(peer.url), cfg_factory(), run_info("bad"))
    assert exp.flush(5)  # the run-only first batch
    peer.script = [Reply(422)]
    exp.put_steps(steps(0, 3))
    with caplog.at_level(logging.ERROR, logger="gradtrace.export"):
        assert not exp.flush(5)
    assert exp.lost == {"rejected_http_422": 3}
    assert "refused batch" in caplog.text
    (copy,) = exp.spool.rejected()
    kept = schema.Batch.model_validate_json(copy.read_bytes())
    assert [s.step for s in kept.steps] == [0, 1, 2]
    assert "422" in copy.with_name(copy.name + ".reason").read_text()
    assert len([r for r in peer.requests if r["batch_id"] == kept.batch_id]) == 1  # not retried
    exp.put_steps(steps(3, 4))
    assert exp.shutdown(5) is False  # delivered what was left, but the run did lose steps
    assert peer.steps_of("bad") == [3]
    assert peer.last_run("bad").lost == {"rejected_http_422": 3}  # the gap is explained


def test_413_splits_the_batch(peer: Peer, cfg_factory) -> None:
    exp = Exporter(make_sink(peer.url), cfg_factory(batch_steps=8), run_info("big"))
    assert exp.flush(5)
    peer.script = [Reply(413)]
    exp.put_steps(steps(0, 8))
    assert exp.shutdown(10)
    assert peer.steps_of("big") == list(range(8))
    assert exp.lost == {}


def test_full_queue_drops_and_counts_without_blocking(peer: Peer, cfg_factory) -> None:
    peer.default = Reply(200, delay=30)  # the first write hangs
    exp = Exporter(make_sink(peer.url), cfg_factory(queue_steps=5, shutdown_timeout=2), run_info("full"))
    assert peer.got_request.wait(5)
    t0 = time.perf_counter()
    exp.put_steps(steps(0, 3))
    exp.put_steps(steps(3, 9))
    # Blocking would mean waiting on the hung 30 s write; the margin only absorbs a
    # garbage-collection pause of a long test session (0.54 s was seen in a full run).
    assert time.perf_counter() - t0 < 5.0
    assert exp.lost == {"queue_full": 4}
    peer.release.set()
    peer.default = Reply(200)
    assert exp.shutdown(10) is False  # some steps were lost
    assert peer.steps_of("full") == [0, 1, 2, 3, 4]
    assert peer.last_run("full").lost == {"queue_full": 4}


def test_shutdown_returns_in_time_when_the_sink_hangs_and_nothing_is_lost(
    peer: Peer, cfg_factory
) -> None:
    peer.default = Reply(200, delay=60)
    cfg = cfg_factory(http_timeout=30)
    exp = Exporter(make_sink(peer.url), cfg, run_info("hang"))
    assert peer.got_request.wait(5)
    exp.put_steps(steps(0, 7))
    exp.update_run(run_info("hang", status="finished"))
    t0 = time.monotonic()
    assert exp.shutdown(2.0) is False
    assert time.monotonic() - t0 < 2.3
    spooled = exp.spool.pending()
    assert sum(e.n_steps for e in spooled) == 7
    # once the destination answers, the spool delivers everything, final status included
    peer.release.set()
    peer.default = Reply(200)
    sent, remaining = resend_spool(make_sink(peer.url), exp.spool)
    assert remaining == 0 and sent == len(spooled)
    assert peer.steps_of("hang") == list(range(7))
    assert peer.last_run("hang").status == "finished"


def test_gzip_for_large_bodies_and_fallback_when_refused(peer: Peer, cfg_factory) -> None:
    sink = HttpSink(peer.url)
    big = schema.Batch(
        batch_id="big1",
        run=run_info("gz"),
        steps=[
            schema.StepRecord(step=i, vars=[schema.VarStep(v=v, sketch=[0.5] * 32) for v in range(20)])
            for i in range(30)
        ],
    )
    assert len(schema.dumps(big)) > 64 * 1024
    sink.write(big)
    assert peer.requests[-1]["headers"].get("Content-Encoding") == "gzip"
    peer.script = [Reply(415)]
    sink.write(big.model_copy(update={"batch_id": "big2"}))
    assert [r["status"] for r in peer.requests[-2:]] == [415, 200]
    assert "Content-Encoding" not in peer.requests[-1]["headers"]
    assert set(peer.batches) == {"big1", "big2"}


def test_a_server_reading_only_version_1_gets_version_1(peer: Peer) -> None:
    # An older server refuses schema version 2 with a 422 naming schema_version: the
    # sink resends that batch, and sends the later ones, in version 1.
    peer.max_version = 1
    sink = HttpSink(peer.url)
    batches = [
        schema.Batch(batch_id=f"old{n}", run=run_info("old"),
                     steps=[schema.StepRecord(step=n, vars=[schema.VarStep(v=v, norm=float("nan")) for v in range(3)])])
        for n in range(2)
    ]
    sink.write(batches[0])
    sink.write(batches[1])
    assert [(r["schema_version"], r["status"]) for r in peer.requests] == [(2, 422), (1, 200), (1, 200)]
    assert sink.schema_version == 1 and set(peer.batches) == {"old0", "old1"}
    got = peer.batches["old1"].steps[0].vars
    assert isinstance(got, list) and [v.v for v in got] == [0, 1, 2] and got[0].norm != got[0].norm
    # Any other 422 is final, as before.
    peer.script = [Reply(422)]
    with pytest.raises(SinkError) as info:
        sink.write(batches[0].model_copy(update={"batch_id": "old2"}))
    assert info.value.status == 422 and not info.value.retryable


def test_token_is_sent_as_bearer(peer: Peer) -> None:
    HttpSink(peer.url, token="tok-123").write(schema.Batch(batch_id="t1", run=run_info("tok")))
    assert peer.requests[-1]["headers"]["Authorization"] == "Bearer tok-123"
    assert peer.requests[-1]["path"] == "/api/v1/ingest"


@pytest.mark.parametrize(
    ("status", "retryable"), [(401, False), (403, False), (404, False), (408, True), (409, True), (500, True)]
)
def test_http_status_classification(peer: Peer, status: int, retryable: bool) -> None:
    peer.script = [Reply(status, {"Retry-After": "7"})]
    with pytest.raises(SinkError) as info:
        HttpSink(peer.url).write(schema.Batch(batch_id="c1", run=run_info("cls")))
    assert info.value.retryable is retryable and info.value.status == status
    assert info.value.retry_after == 7.0 and info.value.reason == f"http_{status}"


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after("100000") == 300.0


def test_exporter_never_raises_in_production_mode(tmp_path: Path, cfg_factory, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cfg = cfg_factory(strict=False, spool_dir=blocked / "spool", retry_seconds=0.1)
    exp = Exporter(make_sink(f"http://127.0.0.1:{free_port()}"), cfg, run_info("quiet"))
    exp.put_steps(["not a step"])  # type: ignore[list-item]
    exp.put_tensors([42])  # type: ignore[list-item]
    exp.update_run("nope")  # type: ignore[arg-type]
    exp.put_steps(steps(0, 3))
    assert exp.shutdown(5) is False
    assert exp.lost == {"spool_error": 3}  # could neither send nor spool: counted
    assert "put_steps" in caplog.text


def test_strict_mode_raises_internal_errors(peer: Peer, cfg_factory) -> None:
    exp = Exporter(make_sink(peer.url), cfg_factory(), run_info("strict"))
    with pytest.raises(TypeError, match="StepRecord"):
        exp.put_steps([{"step": 0}])  # type: ignore[list-item]
    assert exp.shutdown(5)


def test_spool_caps_discard_oldest_and_count(tmp_path: Path) -> None:
    discarded: list[tuple[str, int, str]] = []
    spool = Spool(tmp_path, "http://x", max_bytes=3000, max_age=3600,
                  on_discard=lambda e, reason: discarded.append((e.run_id, e.n_steps, reason)))
    for i in range(6):
        spool.put(schema.Batch(batch_id=f"b{i}", run=run_info("cap"), steps=steps(i * 3, i * 3 + 3)))
    kept = spool.pending()
    assert sum(p.path.stat().st_size for p in kept) <= 3000
    assert len(kept) + len(discarded) == 6 and discarded
    assert all(d == ("cap", 3, "spool_full") for d in discarded)
    assert kept[-1].path.name.split("~")[1] == "b5"  # the newest survive
    # age cap
    old = Spool(tmp_path, "http://x", max_bytes=10**9, max_age=0.2, on_discard=spool.on_discard)
    time.sleep(0.3)
    assert old.pending() == []
    assert len(discarded) == 6 and {d[2] for d in discarded} == {"spool_full", "spool_expired"}


def test_lease_is_exclusive_and_expires(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "http://y", max_bytes=10**9, max_age=3600)
    spool.put(schema.Batch(batch_id="l1", run=run_info("lease")))
    (entry,) = spool.pending()
    leased = spool.lease(entry, seconds=0.2)
    assert leased is not None and spool.lease(entry) is None  # taken
    assert spool.pending() == []  # a live lease hides the file
    time.sleep(0.25)
    (again,) = spool.pending()  # an expired lease (crashed holder) is offered again
    assert spool.load(spool.lease(again)).batch_id == "l1"  # type: ignore[arg-type]
    assert json.loads((spool.dir / "destination.txt").read_text().strip() and "{}") == {}


def test_a_server_that_never_answers_spools_each_batch_once(cfg_factory) -> None:
    """Accepts connections, never replies: the worker's timed-out batch and the shutdown's
    copy of it (same batch id) are one spool file; `spool list` counts its steps once."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        cfg = cfg_factory(url=url, http_timeout=1.0, shutdown_timeout=3.0, retry_seconds=30.0)
        exp = Exporter(make_sink(url), cfg, run_info("blackhole"))
        exp.put_steps(steps(0, 20))
        exp.update_run(run_info("blackhole", status="finished"))
        assert exp.shutdown(3.0) is False
        time.sleep(2.5)  # the worker's own request times out meanwhile and spools what it held
        pending = exp.spool.pending()
        names = [e.path.name.split("~")[1] for e in pending]
        assert len(names) == len(set(names)), names
        assert sum(e.n_steps for e in pending) == 20
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
