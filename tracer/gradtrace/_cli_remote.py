"""Reading records through a gradtrace server's REST API (``--server URL``, or ``$GRADTRACE_URL=http(s)://...``).

:class:`RemoteStore` answers the few store calls the read commands make
(``runs``, ``resolve``, ``run_detail``, ``steps``) with GET requests, standard
library only, so ``gradtrace runs``/``show``/``compare``/``check`` print the same
thing whether the records are in a local file or behind the team server.

Example::

    >>> from gradtrace._cli_remote import RemoteStore
    >>> store = RemoteStore("http://gradtrace.team:8000", token=None)
    >>> store.url
    'http://gradtrace.team:8000'
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from gradtrace.cli import UsageError
from gradtrace.store._types import Page, RunDetail, RunSummary, StoreError

TIMEOUT = 60.0
_PAGE = 1000
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def http_get(base: str, path: str, params: dict[str, Any], token: str | None) -> Any:
    """GET ``base + path`` as JSON; an HTTP error or an unreachable server is a :class:`UsageError`.

    A 404 raises :class:`~gradtrace.store.StoreError` with the server's message, so
    callers treat an unknown run the same way as with a local database.
    """
    query = {k: v for k, v in params.items() if v is not None}
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "gradtrace-cli"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 (user-given server URL)
            return json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read().decode())
            msg = body.get("message") or body.get("detail")
        except (ValueError, AttributeError):
            msg = exc.reason
        if exc.code == 404 and isinstance(msg, str):
            raise StoreError(msg.removeprefix("run_id: ")) from None
        hint = "; pass a token with --token or $GRADTRACE_TOKEN" if exc.code in (401, 403) else ""
        raise UsageError(f"{base} answered {exc.code}: {msg}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UsageError(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None


def _decode(value: Any) -> Any:
    """JSON's non-finite float strings back to floats (the record format's encoding)."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class RemoteStore:
    """The read side of :class:`gradtrace.store.Store`, over a server's REST API."""

    def __init__(self, base: str, token: str | None) -> None:
        self.url = base.rstrip("/")
        self._token = token

    def _get(self, path: str, **params: Any) -> Any:
        return http_get(self.url, path, params, self._token)

    def runs(
        self, project: str | None = None, *, name: str | None = None, status: str | None = None, limit: int = 50
    ) -> Page[RunSummary]:
        """Runs newest first, of ``project`` or of every project the token may read."""
        if project is not None:
            projects = [project]
        else:
            projects = [p["name"] for p in self._get("/api/v1/projects")["items"]]
        items: list[RunSummary] = []
        total = 0
        for p in projects:
            doc = self._get(f"/api/v1/projects/{urllib.parse.quote(p, safe='')}/runs",
                            name=name, status=status, limit=min(max(limit, 1), 1000))
            items += [RunSummary.model_validate(r) for r in doc["items"]]
            total += int(doc["total"])
        items.sort(key=lambda r: r.started_at, reverse=True)
        return Page[RunSummary](items=items[:limit], total=total, limit=limit, offset=0)

    def resolve(self, ref: str, project: str | None = None) -> RunSummary:
        """The run ``ref`` names (uid, unique prefix, or latest run of that name)."""
        if project is not None:
            named = self.runs(project, name=ref, limit=1).items
            if named:
                return named[0]
        run = RunSummary.model_validate(
            self._get(f"/api/v1/runs/{urllib.parse.quote(ref, safe='')}")["summary"]
        )
        if project is not None and run.project != project:
            raise StoreError(f"no run {ref!r} in project {project!r}")
        return run

    def run_detail(self, uid: str) -> RunDetail:
        """Metadata, variable inventory and layers of run ``uid``."""
        return RunDetail.model_validate(_decode(self._get(f"/api/v1/runs/{urllib.parse.quote(uid, safe='')}")))

    def steps(
        self,
        uid: str,
        start: int = 0,
        stop: int | None = None,
        *,
        vars: list[int] | None = None,
        fields: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Step records ``start <= step < stop``, fetched a page at a time."""
        path = f"/api/v1/runs/{urllib.parse.quote(uid, safe='')}/steps"
        next_start: int | None = start
        while next_start is not None:
            doc = self._get(
                path,
                start=next_start,
                stop=stop,
                limit=_PAGE,
                vars=",".join(map(str, vars)) if vars is not None else None,
                fields=",".join(fields) if fields is not None else None,
            )
            for rec in doc["steps"]:
                yield _decode(rec)
            next_start = doc.get("next_start")

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RemoteStore", "http_get"]
