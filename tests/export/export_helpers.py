"""Helpers of the exporter tests: a scriptable HTTP peer on loopback, record builders.

``Peer`` is a real socket server (stdlib ``http.server``): it answers each POST
with the next scripted response (status, headers, delay) and, on 2xx, keeps the
batch like a store would (idempotent by batch id), so tests can count steps.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import live_server
from gradtrace import schema

free_port = live_server.free_port


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hanging server)


class Peer:
    """An HTTP server on 127.0.0.1 that follows a script of replies."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.script: list[Reply] = []
        self.default = Reply()
        self.max_version: int | None = None  # set: refuses newer schema versions, as an older server
        self.requests: list[dict] = []  # {"time", "headers", "batch_id", "status"}
        self.batches: dict[str, schema.Batch] = {}  # stored, by batch id
        self.lock = threading.Lock()
        self.got_request = threading.Event()
        self.release = threading.Event()  # a hanging reply waits on this (or its delay)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Peer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with peer.lock:
                    reply = peer.script.pop(0) if peer.script else peer.default
                    record = {"time": time.monotonic(), "headers": dict(self.headers), "path": self.path}
                    peer.requests.append(record)
                peer.got_request.set()
                if reply.delay:
                    peer.release.wait(reply.delay)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                version = json.loads(body).get("schema_version")
                record["schema_version"] = version
                if peer.max_version is not None and version > peer.max_version:
                    reply = Reply(422)
                    payload = json.dumps({
                        "detail": [{"loc": ["body", "schema_version"], "field": "body.schema_version",
                                    "msg": f"Input should be {peer.max_version}"}],
                        "message": f"body.schema_version: Input should be {peer.max_version}",
                    }).encode()
                    record["status"] = 422
                    self.send_response(422)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                batch = schema.Batch.model_validate_json(body)
                record["batch_id"] = batch.batch_id
                record["status"] = reply.status
                if 200 <= reply.status < 300:
                    with peer.lock:
                        stored = batch.batch_id not in peer.batches
                        peer.batches.setdefault(batch.batch_id, batch)
                    payload = json.dumps({"stored": stored}).encode()
                else:
                    payload = json.dumps({"detail": f"scripted {reply.status}"}).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def steps_of(self, run_id: str) -> list[int]:
        """Every step stored for ``run_id`` (a step stored twice appears twice)."""
        with self.lock:
            return sorted(
                s.step for b in self.batches.values() if b.run.run_id == run_id for s in b.steps
            )

    def last_run(self, run_id: str) -> schema.RunInfo:
        with self.lock:
            runs = [b.run for b in self.batches.values() if b.run.run_id == run_id]
        return max(runs, key=lambda r: r.revision)


def run_info(run_id: str = "run1", **kw: object) -> schema.RunInfo:
    return schema.RunInfo(run_id=run_id, name=kw.pop("name", run_id), **kw)  # type: ignore[arg-type]


def steps(start: int, stop: int, **kw: object) -> list[schema.StepRecord]:
    return [
        schema.StepRecord(step=i, loss=float(i), vars=[schema.VarStep(v=0, norm=float(i))], **kw)  # type: ignore[arg-type]
        for i in range(start, stop)
    ]


def wait_for(cond, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


class ServerThread(live_server.ServerThread):
    """The real gradtrace server (uvicorn) in a daemon thread on a loopback port."""

    def __init__(self, db: str, port: int | None = None, **settings: object) -> None:
        from gradtrace_server.app import create_app
        from gradtrace_server.config import Settings

        app = create_app(Settings(db=db, access_log=False, **settings))  # type: ignore[arg-type]
        super().__init__(app, port=port)


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def create_pg_database() -> str:
    """A fresh database of this test (drop it with :func:`drop_pg_database`)."""
    import uuid

    import psycopg

    name = f"gt_export_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    assert name.startswith("gt_export_")  # only what this suite created
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
