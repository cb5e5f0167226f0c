"""``gradtrace serve`` and ``gradtrace token create|list|revoke``.

FastAPI and uvicorn are imported only when ``serve`` runs (extra ``server``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from typing import Any

logger = logging.getLogger("gradtrace.cli.server")

SERVE_EPILOG = """\
Where records are: --db URL, else $GRADTRACE_SERVER_DB, else $GRADTRACE_URL (when it is
a database URL), else sqlite:///./gradtrace.db. A SQLite file is created and migrated on
start; PostgreSQL must be upgraded first (gradtrace db upgrade --db URL).

Tokens are required when --host is not a loopback address, or with --require-auth.

Examples:
  gradtrace serve                                   UI + API on http://127.0.0.1:8000, no tokens
  gradtrace serve --db postgresql://gt@db/gradtrace --host 0.0.0.0 --workers 4
  GRADTRACE_SERVER_MAX_BODY_BYTES=16777216 gradtrace serve --port 9000
"""

TOKEN_EPILOG = """\
Examples:
  gradtrace token create --project digits --scope write --name ci   prints the token once
  gradtrace token list --project digits
  gradtrace token revoke 3

Tokens live in the server's database (--db, else $GRADTRACE_SERVER_DB, else a
database $GRADTRACE_URL, else ./gradtrace.db), which must exist: gradtrace serve or
gradtrace db upgrade --db URL creates it.

A training script sends records with GRADTRACE_URL=http://server:8000 GRADTRACE_TOKEN=<token>.
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``serve`` and ``token`` commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "serve",
        help="run the team server (REST API + web UI)",
        description="Run the gradtrace server with uvicorn: ingest from tracers, REST queries, web UI.",
        epilog=SERVE_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--db", metavar="URL", help="database URL or SQLite file")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    p.add_argument("--require-auth", action="store_true", default=None, help="require tokens even on loopback")
    p.add_argument("--max-body-bytes", type=int, metavar="N", help="largest request body (default 64 MiB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    t = sub.add_parser(
        "token",
        help="create, list or revoke API tokens",
        description="API tokens: one project each, read or write scope. Stored hashed; shown once.",
        epilog=TOKEN_EPILOG,
        formatter_class=fmt,
    )
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION")
    c = tsub.add_parser("create", help="create a token and print it", epilog=TOKEN_EPILOG, formatter_class=fmt)
    c.add_argument("--project", required=True, help="the project the token may read/write")
    c.add_argument("--scope", required=True, choices=["read", "write"])
    c.add_argument("--name", help="a label (who/what uses it)")
    c.add_argument("--db", metavar="URL")
    c.add_argument("--json", action="store_true", help="print {id, project, scope, token} as JSON")
    c.set_defaults(func=cmd_token_create)
    ls = tsub.add_parser("list", help="list tokens (never their value)")
    ls.add_argument("--project")
    ls.add_argument("--db", metavar="URL")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_token_list)
    r = tsub.add_parser("revoke", help="delete a token by id")
    r.add_argument("id", type=int)
    r.add_argument("--db", metavar="URL")
    r.set_defaults(func=cmd_token_revoke)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])


def _say(text: str, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(text + "\n")


def _db_source(arg: str | None) -> tuple[str | None, str]:
    """The database URL the server and token commands use, and where it came from."""
    if arg:
        return arg, "--db"
    if os.environ.get("GRADTRACE_SERVER_DB"):
        return os.environ["GRADTRACE_SERVER_DB"], "$GRADTRACE_SERVER_DB"
    url = os.environ.get("GRADTRACE_URL", "")
    if url and not url.lower().startswith(("http://", "https://")):
        return url, "$GRADTRACE_URL"
    return None, "--db"


def _db_url(arg: str | None) -> str | None:
    return _db_source(arg)[0]


def _open(db: str | None, *, must_exist: bool = True, flag: str | None = None) -> Any:
    from gradtrace._cli_source import open_db

    url, origin = _db_source(db)
    # None: $GRADTRACE_URL is unset or names a server (a client's setting), not a database
    return open_db(url or "sqlite:///./gradtrace.db", flag or origin, must_exist=must_exist)


def cmd_token_create(args: argparse.Namespace) -> int:
    from gradtrace.cli import UsageError
    from gradtrace.store import InvalidInput

    store = _open(args.db)
    try:
        plain = store.create_token(args.project, args.scope, args.name)
        info = store.check_token(plain)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    if args.json:
        _say(json.dumps({"id": info.id if info else None, "project": args.project, "scope": args.scope, "token": plain}))
    else:
        _say(
            f"created {args.scope} token {info.id if info else '?'} for project {args.project!r} "
            "(shown once; stored hashed):",
            err=True,
        )
        _say(plain)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        tokens = store.list_tokens(args.project)
    finally:
        store.close()
    if args.json:
        _say(json.dumps([t.model_dump(mode="json") for t in tokens]))
        return 0
    if not tokens:
        _say("no tokens" + (f" for project {args.project!r}" if args.project else ""), err=True)
        return 0
    _say(f"{'id':>4}  {'project':20}  {'scope':5}  {'name':20}  created")
    for t in tokens:
        _say(f"{t.id:>4}  {t.project[:20]:20}  {t.scope:5}  {(t.name or '')[:20]:20}  {t.created_at:%Y-%m-%d %H:%M}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from gradtrace.cli import UsageError

    store = _open(args.db)
    try:
        ok = store.revoke_token(args.id)
    finally:
        store.close()
    if not ok:
        raise UsageError(f"no token with id {args.id} (see: gradtrace token list)")
    _say(f"revoked token {args.id}", err=True)
    return 0


def _settings_error(err: Any, overrides: dict[str, Any], db_origin: str) -> str:
    """A settings error naming where the value came from: the flag, or the environment variable."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a check across fields; its message names the field
        field = msg.split(":", 1)[0] if ":" in msg else ""
        msg = msg.split(":", 1)[1].strip() if field else msg
    else:
        field = str(err["loc"][0])
    flag = "--" + field.replace("_", "-")
    if field == "db":
        flag = db_origin
    elif field not in overrides:
        var = "GRADTRACE_SERVER_" + field.upper()
        return f"{var}={os.environ.get(var, '')!r}: {msg} (fix or unset the variable, or pass {flag})"
    return f"{flag}: {msg}"


def cmd_serve(args: argparse.Namespace) -> int:
    from gradtrace.cli import UsageError

    try:
        import uvicorn
        from gradtrace_server._logging import log_config
        from gradtrace_server.config import Settings
        from pydantic import ValidationError
    except ImportError as exc:
        raise UsageError(f"the server needs the 'server' extra: pip install 'gradtrace[server]' ({exc})") from None

    from gradtrace._cli_source import database_url

    db, db_origin = _db_source(args.db)
    if db is not None:
        database_url(db, db_origin)  # a malformed URL: one line naming where it came from
    overrides = {
        k: v
        for k, v in {
            "db": db,
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "require_auth": args.require_auth,
            "max_body_bytes": args.max_body_bytes,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise UsageError(_settings_error(exc.errors()[0], overrides, db_origin)) from None

    # Refuse an out-of-date schema here, with the command to run, rather than in a worker.
    store = _open(settings.db, flag=_db_source(args.db)[1], must_exist=False)  # serve creates a SQLite file
    try:
        if settings.auth_required and not store.list_tokens():
            logger.warning("tokens are required but none exist: gradtrace token create --project P --scope write --db URL")
    finally:
        store.close()

    # Workers build their app from the environment (uvicorn's factory mode).
    os.environ.update(
        {
            "GRADTRACE_SERVER_DB": settings.db,
            "GRADTRACE_SERVER_HOST": settings.host,
            "GRADTRACE_SERVER_PORT": str(settings.port),
            "GRADTRACE_SERVER_WORKERS": str(settings.workers),
            "GRADTRACE_SERVER_REQUIRE_AUTH": "" if settings.require_auth is None else str(settings.require_auth).lower(),
            "GRADTRACE_SERVER_MAX_BODY_BYTES": str(settings.max_body_bytes),
        }
    )
    if not os.environ["GRADTRACE_SERVER_REQUIRE_AUTH"]:
        del os.environ["GRADTRACE_SERVER_REQUIRE_AUTH"]
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gradtrace-metrics-")
    _say(
        f"gradtrace server on http://{settings.host}:{settings.port} "
        f"(tokens {'required' if settings.auth_required else 'not required'}; API docs at /docs)",
        err=True,
    )
    uvicorn.run(
        "gradtrace_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(args.log_level.upper()),
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return 0
