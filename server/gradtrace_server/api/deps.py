"""Dependencies shared by the routes: the store, the settings and the caller's rights.

``StoreDep`` is the app's :class:`gradtrace.store.Store` (opened once per
process in the app's lifespan). ``ReadAccess`` / ``WriteAccess`` yield an
:class:`Access`: which project the caller may touch (``None`` = every project,
the loopback embedded mode) and with which scope. A token is required when
``Settings.auth_required``; it is sent as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from gradtrace.store import Store

from gradtrace_server.config import Settings

logger = logging.getLogger("gradtrace.server.auth")

Scope = Literal["read", "write"]

bearer = HTTPBearer(auto_error=False, description="A project token: `gradtrace token create --project P --scope read|write`")


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    """The app's store (opened in the lifespan)."""
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:  # only when the app is used without its lifespan
        raise HTTPException(503, "the store is not open yet", headers={"Retry-After": "1"})
    return store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]


@dataclass(frozen=True)
class Access:
    """What the caller may do: ``project`` None means every project (no token needed)."""

    project: str | None
    scope: Scope
    token_name: str | None = None

    def may_see(self, project: str) -> bool:
        return self.project is None or self.project == project

    def require_project(self, project: str, field: str = "project") -> None:
        """403 unless the caller's token belongs to ``project``."""
        if not self.may_see(project):
            raise HTTPException(
                403, f"{field}: this token belongs to project {self.project!r}, not {project!r}"
            )


_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="gradtrace"'}


def check_access(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Access:
    if not settings.auth_required:
        return Access(project=None, scope="write")
    if credentials is None:
        header = request.headers.get("authorization")
        msg = "missing token" if not header else "malformed Authorization header, expected 'Bearer <token>'"
        raise HTTPException(401, f"Authorization: {msg}", headers=_UNAUTHENTICATED)
    store = get_store(request)
    token = store.check_token(credentials.credentials)
    if token is None:
        raise HTTPException(401, "Authorization: unknown or revoked token", headers=_UNAUTHENTICATED)
    access = Access(project=token.project, scope=token.scope, token_name=getattr(token, "name", None))
    request.state.gradtrace_project = access.project  # for the access log
    return access


def read_access(access: Annotated[Access, Depends(check_access)]) -> Access:
    """Any valid token (read or write) of some project."""
    return access


def write_access(access: Annotated[Access, Depends(check_access)]) -> Access:
    """A token with write scope."""
    if access.scope != "write":
        raise HTTPException(403, f"Authorization: this token of project {access.project!r} has read scope; writing needs a write token")
    return access


ReadAccess = Annotated[Access, Depends(read_access)]
WriteAccess = Annotated[Access, Depends(write_access)]
