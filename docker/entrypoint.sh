#!/bin/sh
# Container entrypoint of the gradtrace server:
#   1. wait until the database accepts connections (GRADTRACE_DB_WAIT seconds, default 60),
#   2. run the migrations (gradtrace db upgrade),
#   3. exec the server (gradtrace serve, i.e. uvicorn), so it receives the container's signals.
# Configuration: GRADTRACE_SERVER_DB (required), GRADTRACE_SERVER_HOST (default 0.0.0.0),
# GRADTRACE_SERVER_PORT (8000), GRADTRACE_SERVER_WORKERS (1), GRADTRACE_SERVER_* (see config.py).
# Extra arguments are passed to `gradtrace serve`.
set -eu

: "${GRADTRACE_SERVER_DB:?set GRADTRACE_SERVER_DB to the database URL, e.g. postgresql://gradtrace@db:5432/gradtrace}"
: "${GRADTRACE_SERVER_HOST:=0.0.0.0}"
: "${GRADTRACE_DB_WAIT:=60}"
GRADTRACE="${GRADTRACE_BIN:-gradtrace}"
PYTHON="${GRADTRACE_PYTHON:-python}"
export GRADTRACE_SERVER_DB GRADTRACE_SERVER_HOST GRADTRACE_DB_WAIT

log() { printf '{"ts":"%s","level":"info","logger":"gradtrace.entrypoint","msg":"%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

log "waiting up to ${GRADTRACE_DB_WAIT}s for the database"
"$PYTHON" - <<'PY'
import os, sys, time
from sqlalchemy import create_engine, text
from gradtrace.store import normalize_url

url = normalize_url(os.environ["GRADTRACE_SERVER_DB"])
deadline = time.monotonic() + float(os.environ["GRADTRACE_DB_WAIT"])
engine = create_engine(url, pool_pre_ping=True)
last = None
while time.monotonic() < deadline:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        sys.exit(0)
    except Exception as exc:  # refused / starting up / DNS not yet there
        last = exc
        time.sleep(1)
print(f"database not reachable: {type(last).__name__}: {last}", file=sys.stderr)
sys.exit(1)
PY

log "running migrations"
"$GRADTRACE" db upgrade --db "$GRADTRACE_SERVER_DB"

log "starting the server on ${GRADTRACE_SERVER_HOST}:${GRADTRACE_SERVER_PORT:-8000}"
exec "$GRADTRACE" serve "$@"
