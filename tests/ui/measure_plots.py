"""Time the plot endpoints on a 10k-step x 50-variable run (SQLite and PostgreSQL).

Not a test: ``PYTHONPATH=tracer:server:. .venv/bin/python tests/ui/measure_plots.py``.
Creates a temporary SQLite file and a fresh PostgreSQL database (dropped at the end).
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: live_server

import httpx  # noqa: E402
import psycopg  # noqa: E402
from _ui_runs import synthetic_long  # noqa: E402
from gradtrace.store import open_store  # noqa: E402
from gradtrace_server.app import create_app  # noqa: E402
from gradtrace_server.config import Settings  # noqa: E402
from live_server import ServerThread  # noqa: E402

STEPS, VARS = 10_000, 50
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PATHS = ["/api/v1/runs/big/plots?max_points=1000", "/api/v1/plots/compare?a=big&b=big2&max_points=1000&max_cols=160"]


def main() -> None:
    batches = synthetic_long("big", STEPS, VARS, project="bench") + synthetic_long("big2", STEPS, VARS, project="bench")
    name = f"gt_ui_measure_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for url in (f"sqlite:///{tmp}/measure.db", f"postgresql://postgres@127.0.0.1:5432/{name}"):
                store = open_store(url, check_schema=False)
                store.upgrade()
                for b in batches:
                    store.ingest(b)
                store.close()
                srv = ServerThread(create_app(Settings(db=url, host="127.0.0.1"))).start()
                try:
                    for path in PATHS:
                        times = []
                        for _ in range(3):
                            t = time.perf_counter()
                            r = httpx.get(srv.url + path, timeout=120)
                            times.append(time.perf_counter() - t)
                            r.raise_for_status()
                        print(f"{url.split(':')[0]:10} {path.split('?')[0]:28} median {sorted(times)[1]:.3f} s"
                              f"  {len(r.content) / 1024:.0f} KiB")
                finally:
                    srv.stop()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
