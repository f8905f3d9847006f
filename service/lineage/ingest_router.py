"""POST /api/v1/lineage: where Airflow's OpenLineage http transport posts (the standard path, outside /v1).

Authenticated with the OpenLineage API key (`Authorization: Bearer <key>`, compared in constant time), not
with a user's JWT: the caller is Airflow, on behalf of every tenant. The tenant of an event is the one whose
pipeline the event's DAG is (service/lineage/receiver.py).

The hot path of the lineage feature (every task of every run posts two to three events): the body is parsed
and validated on the event loop (CPU work of tens of microseconds: no thread for it), and stored by the
group commit of service/lineage/ingest.py — the answer comes once the event's transaction has committed —
rather than through the DbSession dependency's transaction per request.
"""

from __future__ import annotations

import hmac
import logging
import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.errors import ErrorResponse, ServiceError, Unauthorized, ValidationFailed
from service.lineage.ingest import EventWriter
from service.lineage.receiver import Outcome, parse_event

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
PATH = "/api/v1/lineage"

router = APIRouter(tags=["lineage"])


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class LineageAck(BaseModel):
    status: Outcome = Field(
        description="stored; duplicate (the same event was stored before: nothing changed); ignored (the "
        "event is of no pipeline of this service: acknowledged so the transport does not retry it)"
    )


def _check_key(request: Request) -> None:
    expected: str = request.app.state.openlineage_api_key
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized(
            "missing OpenLineage API key: send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("invalid OpenLineage API key", headers={"WWW-Authenticate": "Bearer"})


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"an event may be at most {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"an event may be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if (request.headers.get("content-encoding") or "").lower() == "gzip":  # the transport's `compression`
        # Decompressed at most one byte past the limit: a small bomb must not expand in memory first.
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflate.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error:
            raise ValidationFailed(
                "body: not gzip", details=[{"path": "body", "message": "Content-Encoding gzip, body is not"}]
            ) from None
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"an event may be at most {MAX_BODY_BYTES} bytes")
        if not inflate.eof:
            raise ValidationFailed(
                "body: truncated gzip", details=[{"path": "body", "message": "the gzip stream ends early"}]
            )
    return body


@router.post(
    PATH,
    response_model=LineageAck,
    summary="Receive an OpenLineage run event (Airflow's openlineage provider posts here)",
    responses={
        400: {"model": ErrorResponse, "description": "not an OpenLineage RunEvent: the field is named"},
        401: {"model": ErrorResponse, "description": "missing or wrong OpenLineage API key"},
        413: {"model": ErrorResponse},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "an OpenLineage RunEvent "
                        "(https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent); authenticated with "
                        "`Authorization: Bearer <PIPELINE_OPENLINEAGE_API_KEY>`, not with a user's JWT",
                    }
                }
            },
        }
    },
)
async def receive_lineage(request: Request) -> JSONResponse:
    # Served by LineageFastPath below; this route documents it (OpenAPI) and answers should the middleware
    # not be installed.
    return JSONResponse({"status": await _receive(request)})


async def _receive(request: Request) -> Outcome:
    _check_key(request)
    body = await _body(request)
    try:
        payload = body.decode()
    except UnicodeDecodeError:
        raise ValidationFailed("body: not UTF-8", details=[{"path": "body", "message": "must be UTF-8 JSON"}]) from None
    ev = parse_event(payload)
    writer: EventWriter = request.app.state.lineage_writer
    return await writer.write(ev, payload)


class LineageFastPath:
    """POST /api/v1/lineage answered before FastAPI's exception middleware, routing and dependency machinery
    (as service/executions/fastpath.py does for status polls): the same answers, errors in the same
    {"error": {code, message, details}} shape; about a tenth less CPU per event (bench/lineage_ingest.py)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = JSONResponse({"status": await _receive(request)})
        except ServiceError as exc:
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
            response = JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)
        await response(scope, receive, send)
