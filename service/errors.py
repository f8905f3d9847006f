"""Typed domain errors and the one handler that renders them as {"error": {code, message, details}}."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dag_factory.spec import json_path

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class ValidationFailed(ServiceError):
    status_code = 400
    code = "validation_error"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class BudgetExceeded(ServiceError):
    """The calendar month's cost has reached a monthly budget (service/cost): executing is refused."""

    status_code = 409
    code = "BUDGET_EXCEEDED"


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"


class AirflowUnavailable(ServiceError):
    status_code = 503
    code = "airflow_unavailable"


class UpstreamError(ServiceError):
    status_code = 502
    code = "airflow_error"


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: validation_error, not_found, conflict, ...")
    message: str
    details: Any = Field(default=None, description="e.g. [{path, message}] naming the offending fields")


class ErrorResponse(BaseModel):
    """What every error answer looks like; the OpenAPI document references it for each error status."""

    error: ErrorBody


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic's errors as [{path, message}], the path without its request part (`body`, `query`, ...)."""
    details = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        details.append({"path": json_path(loc), "message": err.get("msg", "invalid")})
    return details


def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = validation_details(exc.errors())
    first = details[0] if details else {"path": "", "message": "invalid request"}
    message = f"{first['path'] or 'body'}: {first['message']}"
    return JSONResponse(status_code=400, content=_body("validation_error", message, details))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content=_body(exc.code, exc.message, exc.details), headers=exc.headers
        )

    app.add_exception_handler(RequestValidationError, _request_validation)  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(status_code=exc.status_code, content=_body(code, str(exc.detail)))

    @app.exception_handler(IntegrityError)
    def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # Two requests raced for the same unique name: the loser gets what a sequential request would.
        return JSONResponse(status_code=409, content=_body("conflict", "conflicts with an existing resource"))

    def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The database is down or restarting (connection refused, a connection it closed): nothing the client
        # did; retry. The pool's pre-ping replaces dead connections, so the service recovers on its own.
        log.warning("the database is unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        body = _body("database_unavailable", "the service's database is unavailable; retry shortly")
        return JSONResponse(status_code=503, content=body, headers={"Retry-After": "5"})

    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)

    @app.exception_handler(httpx.InvalidURL)
    def _invalid_url(_: Request, exc: httpx.InvalidURL) -> JSONResponse:
        # Client input (an id, a host) that cannot form a URL: the client's mistake, never a 500.
        return JSONResponse(status_code=400, content=_body("validation_error", "not a valid URL", str(exc)[:200]))

    @app.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The message is not echoed: it could carry internals; the log has the traceback.
        log.exception("unhandled error")
        return JSONResponse(status_code=500, content=_body("internal_error", "internal error"))
