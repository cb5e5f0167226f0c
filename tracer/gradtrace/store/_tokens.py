"""API tokens: random, shown once, stored as a SHA-256 hash.

Tokens are 32 random bytes, so a fast hash is enough: there is nothing to
brute-force that a slow password hash would protect (unlike a chosen password).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from sqlalchemy import Connection, delete, insert, select

from gradtrace.store import models as m
from gradtrace.store._ingest import project_id
from gradtrace.store._types import InvalidInput, TokenInfo

PREFIX = "gt_"
SCOPES = ("read", "write")

_T = m.Token.__table__
_P = m.Project.__table__


def hash_token(plain: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(plain.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(conn: Connection, project: str, scope: str, name: str | None = None) -> str:
    if scope not in SCOPES:
        raise InvalidInput("scope", f"must be one of {', '.join(SCOPES)}")
    if not project or len(project) > 200:
        raise InvalidInput("project", "must be 1 to 200 characters")
    if name is not None and len(name) > 200:
        raise InvalidInput("name", "must be at most 200 characters")
    pid = project_id(conn, project)
    plain = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        insert(_T).values(
            hash=hash_token(plain), project_id=pid, name=name, scope=scope,
            created_at=datetime.now(timezone.utc),
        )
    )
    return plain


def _select() -> object:
    return select(_T.c.id, _P.c.name.label("project"), _T.c.scope, _T.c.name, _T.c.created_at).join(
        _P, _P.c.id == _T.c.project_id
    )


def check_token(conn: Connection, plain: str) -> TokenInfo | None:
    if not plain or len(plain) > 200:
        return None
    row = conn.execute(_select().where(_T.c.hash == hash_token(plain))).first()  # type: ignore[attr-defined]
    return None if row is None else TokenInfo(**row._mapping)


def list_tokens(conn: Connection, project: str | None = None) -> list[TokenInfo]:
    q = _select()
    if project is not None:
        q = q.where(_P.c.name == project)  # type: ignore[attr-defined]
    return [TokenInfo(**r._mapping) for r in conn.execute(q.order_by(_T.c.id))]  # type: ignore[attr-defined]


def revoke_token(conn: Connection, token_id: int) -> bool:
    return conn.execute(delete(_T).where(_T.c.id == token_id)).rowcount > 0
