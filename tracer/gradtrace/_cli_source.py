"""Where a command's records are: a database URL (``--db``) or a gradtrace server (``--server``).

Every command that takes ``--db``, ``--server`` or ``--url`` checks the value here,
so a malformed one is one line naming the flag (or the environment variable it
came from) and what a valid value looks like, with exit code 2, never a traceback.

Example::

    >>> from gradtrace._cli_source import server_url
    >>> server_url("http://gradtrace.team:8000/", "--server")
    'http://gradtrace.team:8000'
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from gradtrace.cli import UsageError

if TYPE_CHECKING:
    from gradtrace.store import Store

SERVER_EXAMPLE = "http(s)://host[:port], e.g. http://gradtrace.team:8000"
DB_EXAMPLE = "a SQLite file (runs.db, sqlite:///path/runs.db) or postgresql://user@host:5432/dbname"


def is_server_url(url: str | None) -> bool:
    """True when ``url`` names a gradtrace server (``http://`` or ``https://``)."""
    return bool(url) and url.strip().lower().startswith(("http://", "https://"))  # type: ignore[union-attr]


def server_url(raw: str, flag: str) -> str:
    """``raw`` as a server base URL (no trailing slash); :class:`UsageError` naming ``flag`` if malformed."""
    url = raw.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check ("http://h:x" raises here)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"{flag} {raw!r} is not a server URL; expected {SERVER_EXAMPLE}")
    return url.rstrip("/")


def database_url(raw: str | None, flag: str = "--db") -> str:
    """The SQLAlchemy URL ``raw`` names (``None``: ``$GRADTRACE_URL``, else ./gradtrace.db).

    Raises :class:`UsageError` naming ``flag`` (or ``$GRADTRACE_URL`` when the value
    came from it) when it is a server address or not a URL SQLAlchemy can parse (a
    bad port, an unknown database kind).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from gradtrace.store import StoreError, normalize_url

    if not (raw or "").strip():
        raw, flag = os.environ.get("GRADTRACE_URL") or None, "$GRADTRACE_URL"
    if raw is not None and is_server_url(raw):
        raise UsageError(
            f"{flag} {raw!r} is a gradtrace server, not a database; pass a database URL: {DB_EXAMPLE}"
        )
    try:
        full = normalize_url(raw)
    except StoreError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    try:
        url = make_url(full)
        url.port  # noqa: B018 - a malformed port raises here
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UsageError(f"{flag} {raw!r} is not a usable database URL ({exc}); expected {DB_EXAMPLE}") from None
    return full


def add_source_args(p: argparse.ArgumentParser) -> None:
    """``--db`` / ``--server`` (exclusive) and ``--token`` of the read commands."""
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--db", "--store", dest="db", metavar="URL",
        help="database URL or SQLite file, as trace(store=...) (default: $GRADTRACE_URL, else ./gradtrace.db)")
    src.add_argument(
        "--server", metavar="URL",
        help="read through a gradtrace server's REST API (default when $GRADTRACE_URL is http(s)://)")
    p.add_argument("--token", help="API token for a server (default $GRADTRACE_TOKEN)")


def remote_server(db: str | None, server: str | None) -> str | None:
    """The server a read command reads through, or None to read a database.

    ``--db`` wins, then ``--server``; with neither, ``$GRADTRACE_URL`` when it is an
    ``http(s)://`` address (the setting a training script uses to send to the team
    server), so ``gradtrace runs/show/compare/check`` read from where the script wrote.
    """
    if db:
        return None
    if server:
        return server_url(server, "--server")
    env = os.environ.get("GRADTRACE_URL", "")
    if is_server_url(env):
        return server_url(env, "$GRADTRACE_URL")
    return None


def token(arg: str | None) -> str | None:
    """The API token: ``--token``, else ``$GRADTRACE_TOKEN``."""
    return arg or os.environ.get("GRADTRACE_TOKEN") or None


def sqlite_path(full_url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and ``:memory:``)."""
    if not full_url.startswith("sqlite:///") or full_url == "sqlite:///:memory:":
        return None
    path = full_url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path else None


def open_db(raw: str | None, flag: str = "--db", *, must_exist: bool = True, check_schema: bool = True) -> Store:
    """Open the store ``raw`` names for a command; every failure is a :class:`UsageError`.

    ``must_exist``: a SQLite file that does not exist is refused instead of created
    (only ``gradtrace db upgrade``, the tracer and the server create databases).
    """
    from gradtrace.store import StoreError, open_store

    full = database_url(raw, flag)
    path = sqlite_path(full)
    if must_exist and path is not None and not path.exists():
        # Opening would create an empty file (and its directory): a typo'd path must not.
        raise UsageError(
            f"no gradtrace database at {path}; check the path, run a traced script first "
            f"(it writes ./gradtrace.db) or pass --db URL, or create an empty database with: "
            f"gradtrace db upgrade --db {path}"
        )
    try:
        return open_store(full, check_schema=check_schema)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # connection refused, missing driver, unreadable file, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot open {full}: {first}") from None


__all__ = ["add_source_args", "database_url", "is_server_url", "open_db", "remote_server", "server_url", "sqlite_path", "token"]
