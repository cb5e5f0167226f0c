"""``POST /api/v1/ingest``: the tracer's batches, one transaction each, idempotent by batch id.

The body is read here (not by FastAPI's body parsing) so that its size is
bounded both as sent and after gzip decoding, and so that non-UTF-8 bytes,
malformed JSON and schema violations each get a precise 4xx.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from gradtrace import schema
from gradtrace.store import IngestResult as StoreIngestResult
from gradtrace.store import InvalidInput, StoreError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from gradtrace_server._middleware import BodyTooLarge
from gradtrace_server.api.deps import SettingsDep, StoreDep, WriteAccess
from gradtrace_server.api.models import ErrorOut, IngestOut
from gradtrace_server.errors import validation_detail, validation_response

logger = logging.getLogger("gradtrace.server.ingest")

router = APIRouter(prefix="/api/v1", tags=["ingest"])

_JSON_TYPES = ("application/json", "text/json")


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    # Bounded decompression: a small gzip bomb must not expand past the limit.
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decomp.decompress(data, limit + 1)
        if len(out) > limit or decomp.unconsumed_tail:
            raise BodyTooLarge(limit, "request body after gzip decoding")
        out += decomp.flush()
    except zlib.error as exc:
        raise HTTPException(400, f"Content-Encoding: the body is not valid gzip ({exc})") from None
    if not decomp.eof:
        raise HTTPException(400, "Content-Encoding: the gzip body is truncated")
    if len(out) > limit:
        raise BodyTooLarge(limit, "request body after gzip decoding")
    return out


_BATCH_SCHEMA: dict[str, Any] = {"$ref": "#/components/schemas/Batch"}


@router.post(
    "/ingest",
    response_model=IngestOut,
    summary="Store one batch of a run's step records",
    responses={
        400: {"model": ErrorOut, "description": "Body not UTF-8, or bad gzip"},
        401: {"model": ErrorOut, "description": "Token missing or unknown"},
        403: {"model": ErrorOut, "description": "Token of another project, or read scope"},
        413: {"model": ErrorOut, "description": "Body larger than `max_body_bytes` (also after gzip decoding)"},
        415: {"model": ErrorOut, "description": "Content-Type not JSON or Content-Encoding not gzip/identity"},
        422: {"model": ErrorOut, "description": "Malformed JSON or schema violation; `message` names the field"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_SCHEMA}},
            "description": "A `gradtrace.schema.Batch`. Send `Content-Encoding: gzip` for large bodies.",
        }
    },
)
async def ingest(request: Request, store: StoreDep, settings: SettingsDep, access: WriteAccess) -> Any:
    """Store a batch whole or not at all.

    A batch whose `batch_id` was stored before is acknowledged with
    `stored: false` and nothing is written again (resending is safe). The
    run's metadata (`run`) is re-sent with every batch; the copy with the
    highest `revision` is kept. Non-finite floats are the strings `"NaN"`,
    `"Infinity"`, `"-Infinity"`.
    """
    metrics = request.app.state.metrics
    started = time.perf_counter()
    limit = settings.max_body_bytes
    try:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES:
            raise HTTPException(415, f"Content-Type: expected application/json, got {content_type!r}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", ""):
            raise HTTPException(415, f"Content-Encoding: {encoding!r} is not supported (use gzip or none)")
        raw = await _read_body(request, limit)
        if encoding in ("gzip", "x-gzip"):
            raw = _gunzip(raw, limit)
        if not raw.strip():
            raise HTTPException(422, "body: empty; expected a gradtrace Batch as JSON")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPException(
                400, f"body: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
            ) from None
        try:
            batch = await run_in_threadpool(schema.Batch.model_validate_json, text)
        except ValidationError as exc:
            return _rejected(metrics, validation_response(validation_detail(exc.errors(), ("body",))))
        access.require_project(batch.run.project, "body.run.project")
        try:
            result: StoreIngestResult = await run_in_threadpool(store.ingest, batch)
        except InvalidInput as exc:
            return _rejected(
                metrics,
                validation_response(
                    [{"loc": ["body", *exc.field.replace("[", ".").replace("]", "").split(".")],
                      "field": f"body.{exc.field}", "msg": exc.message, "type": "value_error"}]
                ),
            )
        except StoreError as exc:
            # Refusals other than bad fields (e.g. a run id already used by another project).
            raise HTTPException(409, str(exc)) from None
    except HTTPException as exc:
        if exc.status_code < 500:
            metrics.batches.labels("rejected").inc()
        raise
    except BodyTooLarge:
        metrics.batches.labels("rejected").inc()
        raise
    elapsed = time.perf_counter() - started
    metrics.batch_seconds.observe(elapsed)
    if result.stored:
        metrics.batches.labels("stored").inc()
        metrics.ingested_steps.inc(result.steps)
    else:
        metrics.batches.labels("duplicate").inc()
    logger.debug("batch %s of run %s: stored=%s steps=%d in %.1f ms",
                 batch.batch_id, result.run_id, result.stored, result.steps, elapsed * 1000)
    return IngestOut(stored=result.stored, run_id=result.run_id, steps=result.steps)


def _rejected(metrics: Any, response: Any) -> Any:
    metrics.batches.labels("rejected").inc()
    return response
