"""ASGI middleware: request size limit, access log and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses stay streamed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gradtrace_server.metrics import Metrics

access_logger = logging.getLogger("gradtrace.server.access")


class BodyTooLarge(Exception):
    """The request body exceeded ``max_body_bytes`` (mapped to 413)."""

    def __init__(self, limit: int, what: str = "request body") -> None:
        super().__init__(too_large_message(limit, what))
        self.limit = limit
        self.what = what


def too_large_message(limit: int, what: str = "request body") -> str:
    return (
        f"{what} is larger than the server's limit of {limit} bytes "
        "(GRADTRACE_SERVER_MAX_BODY_BYTES); send fewer steps per batch"
    )


def too_large_body(limit: int, what: str = "request body") -> bytes:
    msg = too_large_message(limit, what)
    return json.dumps({"detail": msg, "message": msg, "limit": limit}).encode()


class RequestMiddleware:
    """Rejects oversized bodies early, counts and logs every HTTP request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "bytes_out": 0, "bytes_in": 0}
        limit = self.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes_in"] += len(message.get("body", b""))
                if state["bytes_in"] > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                # Refuse before reading a byte of it.
                body = too_large_body(limit)
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send_wrapper({"type": "http.response.body", "body": body})
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            self._record(scope, state, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], elapsed: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        status = state["status"]
        self.metrics.requests.labels(scope["method"], template, str(status)).inc()
        self.metrics.request_seconds.labels(template).observe(elapsed)
        if not self.access_log:
            return
        client = scope.get("client")
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "route": template,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "bytes_in": state["bytes_in"],
            "bytes_out": state["bytes_out"],
            "client": f"{client[0]}:{client[1]}" if client else None,
            "project": scope.get("state", {}).get("gradtrace_project"),
        }
        access_logger.info(
            "%s %s %s %.1fms", entry["method"], entry["path"], status, entry["duration_ms"],
            extra={"access": entry},
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
