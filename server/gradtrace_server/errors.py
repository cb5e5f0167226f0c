"""Error responses: every client mistake is a 4xx whose message names the field.

Body shape for all errors: ``{"detail": <str or list>, "message": <str>}``;
validation errors keep FastAPI's ``detail`` list (``loc``, ``msg``, ``type``)
and add a one-line ``message`` such as ``body.run.name: String should have at
most 200 characters``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gradtrace_server._json import GradtraceJSONResponse
from gradtrace_server._middleware import BodyTooLarge

logger = logging.getLogger("gradtrace.server")

_MAX_INPUT_ECHO = 200


def loc_str(loc: Sequence[Any]) -> str:
    """``("body", "steps", 3, "loss")`` -> ``body.steps[3].loss``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _short(value: Any) -> Any:
    if isinstance(value, (str, bytes)) and len(value) > _MAX_INPUT_ECHO:
        return value[:_MAX_INPUT_ECHO] + ("..." if isinstance(value, str) else b"...")
    if isinstance(value, (dict, list)) and len(str(value)) > _MAX_INPUT_ECHO:
        return f"<{type(value).__name__} of {len(value)} items>"
    return value


def validation_detail(errors: Iterable[Any], prefix: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as small JSON-able dicts (the input echo is truncated)."""
    detail = []
    for err in errors:
        loc = list(prefix) + list(err.get("loc", ()))
        item: dict[str, Any] = {"loc": loc, "field": loc_str(loc), "msg": err.get("msg", ""), "type": err.get("type", "")}
        if "input" in err:
            item["input"] = _short(err["input"])
        detail.append(item)
    return detail


def validation_response(detail: list[dict[str, Any]], status: int = 422) -> GradtraceJSONResponse:
    first = detail[0] if detail else {"field": "body", "msg": "invalid"}
    message = f"{first['field']}: {first['msg']}"
    if len(detail) > 1:
        message += f" (and {len(detail) - 1} more)"
    return GradtraceJSONResponse({"detail": detail, "message": message}, status_code=status)


def api_error(status: int, field: str | None, msg: str, headers: dict[str, str] | None = None) -> HTTPException:
    """An ``HTTPException`` whose detail names the field it is about."""
    return HTTPException(status, f"{field}: {msg}" if field else msg, headers=headers)


def install(app: FastAPI) -> None:
    """Registers the handlers on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> GradtraceJSONResponse:
        return validation_response(validation_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> GradtraceJSONResponse:
        detail = exc.detail
        return GradtraceJSONResponse(
            {"detail": detail, "message": detail if isinstance(detail, str) else str(detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> GradtraceJSONResponse:
        msg = str(exc)
        return GradtraceJSONResponse(
            {"detail": msg, "message": msg, "limit": exc.limit}, status_code=413, headers={"Connection": "close"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> GradtraceJSONResponse:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc.orig)
            msg = "the database is unavailable; retry later"
            return GradtraceJSONResponse(
                {"detail": msg, "message": msg}, status_code=503, headers={"Retry-After": "5"}
            )
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        msg = "internal server error (logged on the server)"
        return GradtraceJSONResponse({"detail": msg, "message": msg}, status_code=500)
