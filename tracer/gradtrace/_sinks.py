"""Where batches go: the embedded SQL store or a gradtrace server over HTTP.

A :class:`Sink` writes one :class:`~gradtrace.schema.Batch` or raises
:class:`SinkError`, which says whether trying again can help (``retryable``)
and, when the destination said so, after how long (``retry_after``). Sinks do
not retry, queue or spool: the exporter does.

- :class:`StoreSink` (alias ``SqliteSink``): any SQLAlchemy URL, through
  ``gradtrace.store.open_store(url).ingest(batch)`` (imported on first write).
- :class:`HttpSink`: ``POST <base>/api/v1/ingest`` with the standard library
  only, so a training script needs no HTTP package.

Example::

    >>> from gradtrace._sinks import make_sink
    >>> make_sink("https://ci:secret@team.example:8000/").destination
    'https://ci:***@team.example:8000'
    >>> type(make_sink("sqlite:////tmp/runs.db")).__name__
    'StoreSink'
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol, runtime_checkable

from gradtrace import schema

logger = logging.getLogger("gradtrace.sinks")

INGEST_PATH = "/api/v1/ingest"
GZIP_MIN_BYTES = 64 * 1024
# Status codes after which the same request may succeed later.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 300.0


class SinkError(Exception):
    """A batch was not written.

    ``retryable``: sending the same batch again may succeed (network down,
    server busy, database locked). ``retry_after``: seconds the destination
    asked to wait. ``status``: the HTTP status when there was one. ``reason``:
    a short stable word for lost-record counts (``"http_422"``, ``"invalid"``).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        reason: str = "error",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.reason = reason


@runtime_checkable
class Sink(Protocol):
    """A destination for batches."""

    destination: str  # the URL without secrets, for logs and the spool

    def write(self, batch: schema.Batch, timeout: float | None = None) -> None:
        """Store ``batch`` (idempotent by ``batch_id``) or raise :class:`SinkError`."""

    def close(self) -> None:
        """Release connections; the sink is not used afterwards."""


def redact(url: str) -> str:
    """``url`` without a password or query string (those may hold secrets)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://?"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def destination_key(url: str) -> str:
    """A short, filesystem-safe name for a destination (its spool folder)."""
    return hashlib.sha256(redact(url).encode()).hexdigest()[:16]


class StoreSink:
    """Writes batches into a gradtrace store (embedded SQLite file or any database).

    The store is opened on the first write, in the exporter's thread, so that
    starting a run does not import SQLAlchemy or touch the database.
    """

    def __init__(self, url: str) -> None:
        url = _absolute_sqlite(url)
        self.url = url
        self.destination = redact(url)
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._store is None:
            from gradtrace.store import open_store

            self._store = open_store(self.url)
        return self._store

    def write(self, batch: schema.Batch, timeout: float | None = None) -> None:
        """Ingest ``batch`` in one transaction; a batch seen before is acknowledged."""
        with self._lock:
            try:
                store = self._open()
                store.ingest(batch)
            except Exception as exc:
                raise _classify_store_error(exc) from exc

    def close(self) -> None:
        """Dispose of the store's engine."""
        with self._lock:
            store, self._store = self._store, None
        close = getattr(store, "close", None) or getattr(store, "dispose", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.debug("closing the store failed", exc_info=True)


SqliteSink = StoreSink


def _absolute_sqlite(url: str) -> str:
    # A relative SQLite path names a different file in another working directory;
    # the spool keys on the destination, so make it absolute.
    prefix, sep, rest = url.partition(":///")
    if not sep or not prefix.startswith("sqlite") or not rest or rest.startswith(":memory:"):
        return url
    path, q, query = rest.partition("?")
    if os.path.isabs(path) or path.startswith("file:"):
        return url
    return f"{prefix}:///{os.path.abspath(path)}{q}{query}"


def _classify_store_error(exc: Exception) -> SinkError:
    """Transient database trouble is retryable; a batch the store refuses is not."""
    from pydantic import ValidationError

    name = type(exc).__name__
    module = type(exc).__module__ or ""
    refused = (
        isinstance(exc, ValidationError)
        or "Invalid" in name
        or (module.startswith("sqlalchemy") and name in {"IntegrityError", "DataError"})
    )
    if refused:
        return SinkError(f"store refused the batch: {exc}", retryable=False, reason="invalid")
    # Locked or unreachable databases, an out-of-date schema someone is upgrading,
    # anything unknown: keep the batch (spool) rather than lose it.
    return SinkError(f"{name}: {exc}", retryable=True, reason="store_error")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class HttpSink:
    """POSTs batches to a gradtrace server's ``/api/v1/ingest`` (stdlib ``urllib``).

    Bodies larger than ``GZIP_MIN_BYTES`` are gzip-compressed; if the server
    refuses the encoding (415, or 400 to a compressed body) the sink resends
    uncompressed and stops compressing. Batches go in the current schema version;
    a server that refuses it (422 naming ``schema_version``: one older than
    version 2) gets the batch again in version 1, and so do later batches. 2xx: written (a resent batch answers
    ``stored: false``, also fine). 408/409/425/429/5xx and network errors are
    retryable, honouring ``Retry-After``; any other 4xx is final.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        base = url.rstrip("/")
        if base.endswith(INGEST_PATH):
            base = base[: -len(INGEST_PATH)]
        self.endpoint = base + INGEST_PATH
        self.destination = redact(base)
        self._token = token
        self.timeout = timeout
        self._gzip = True
        self.schema_version = schema.SCHEMA_VERSION

    def write(self, batch: schema.Batch, timeout: float | None = None) -> None:
        """POST ``batch``; raise :class:`SinkError` unless the server answered 2xx."""
        limit = self.timeout if timeout is None else max(0.01, min(self.timeout, timeout))
        try:
            self._write(batch, limit)
        except SinkError as exc:
            if exc.status == 422 and "schema_version" in str(exc) and self.schema_version > 1:
                logger.info(
                    "%s does not read schema version %d; sending version 1 from now on",
                    self.destination,
                    self.schema_version,
                )
                self.schema_version = 1
                self._write(batch, limit)
            else:
                raise

    def _write(self, batch: schema.Batch, limit: float) -> None:
        body = schema.dumps(batch, version=self.schema_version).encode("utf-8")
        compress = self._gzip and len(body) >= GZIP_MIN_BYTES
        try:
            self._post(body, compress, limit)
        except SinkError as exc:
            if compress and exc.status in (400, 415):
                logger.info(
                    "%s refused a gzip body (HTTP %s); sending uncompressed from now on",
                    self.destination,
                    exc.status,
                )
                self._gzip = False
                self._post(body, False, limit)
            else:
                raise

    def _post(self, body: bytes, compress: bool, timeout: float) -> None:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "gradtrace",
        }
        if compress:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(
                f"{self.destination} unreachable: {reason}", retryable=True, reason="network"
            ) from None

    def _http_error(self, exc: urllib.error.HTTPError) -> SinkError:
        status = exc.code
        try:
            detail = exc.read(2000).decode("utf-8", "replace")
        except Exception:
            detail = ""
        finally:
            exc.close()
        detail = _short_detail(detail)
        retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        retryable = status in RETRYABLE_STATUS or status >= 500
        return SinkError(
            f"{self.destination} answered HTTP {status}: {detail}",
            retryable=retryable,
            retry_after=retry_after,
            status=status,
            reason=f"http_{status}",
        )

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""


def _short_detail(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict) and "detail" in data:
        data = data["detail"]
    return json.dumps(data)[:500]


def make_sink(url: str, token: str | None = None, timeout: float = 10.0) -> Sink:
    """The sink for ``url``: ``http(s)://`` -> :class:`HttpSink`, else :class:`StoreSink`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return HttpSink(url, token=token, timeout=timeout)
    if not scheme:
        url = "sqlite:///" + url
    return StoreSink(url)


__all__ = [
    "HttpSink",
    "Sink",
    "SinkError",
    "SqliteSink",
    "StoreSink",
    "destination_key",
    "make_sink",
    "parse_retry_after",
    "redact",
]
