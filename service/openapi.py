"""The OpenAPI document as clients (and schemathesis) need it: the auth every /v1 operation requires and the
error answers each can give, all in the one shape of `service.errors.ErrorResponse`.

FastAPI derives neither: the Authorization and X-Tenant-ID headers are read by `current_principal` as plain
optional headers, and its default 422 never happens (request validation answers 400). So the generated
document is amended once, here, from rules over the routes rather than by hand on every decorator, so that a
new route is documented the same way without anyone remembering to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service import deps
from service.auth import TENANT_PATTERN
from service.errors import ErrorResponse

SECURITY_SCHEME = "bearerAuth"
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
ERRORS = {
    400: "Invalid request: a parameter, header or body field fails validation (`details` names it)",
    401: "Missing, malformed, invalid or expired bearer token",
    403: "X-Tenant-ID is not the token's tenant, or the token's role may not modify resources",
    404: "No such object in the caller's tenant (another tenant's objects do not exist for the caller)",
    409: "Conflicts with an existing name or with the object's current state",
    429: "Too many executions started by the tenant in the last minute",
    502: "Airflow answered with an error",
    503: "Airflow is unreachable or not ready",
}
# Submitting an execution is the one rate-limited act.
RATE_LIMITED = re.compile(
    r"^/v1/pipelines/(\{pipeline_id\}/execute|executions/\{execution_id\}/retry|schedules/.+/trigger)$"
)
# Reading an execution refreshes its status from Airflow without naming the Airflow dependency.
REACHES_AIRFLOW = re.compile(r"^/v1/(airflow/|pipelines/executions/)")
AUTH_HEADERS = {"authorization", "x-tenant-id"}
# /v1/pipelines/{pipeline_id} shares its prefix with fixed paths (/v1/pipelines/schema, /connections, ...), which
# are other operations: the format of a pipeline id (service/pipelines/service.py) says which requests are its.
PATH_ID_PATTERNS = {"pipeline_id": r"^pl-[0-9a-f]+$"}


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with a builder that amends FastAPI's document once and caches it."""

    generate = app.openapi  # FastAPI's own, with every app-level option (servers, tags, ...)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = amend(generate(), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def amend(doc: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """Declare the bearer scheme, X-Tenant-ID and the error responses on every /v1 operation."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_error_schemas())
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    airflow_routes = {(m, r.path_format) for r in _api_routes(app) if _uses_airflow(r.dependant) for m in r.methods}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            operation["responses"].pop("422", None)
            if path.startswith("/v1/"):
                _secure(operation)
                reaches_airflow = (method.upper(), path) in airflow_routes or REACHES_AIRFLOW.match(path)
                _document_errors(operation, _error_statuses(method, path, bool(reaches_airflow)))
    return doc


def _error_schemas() -> dict[str, Any]:
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "ErrorResponse": schema}


def _secure(operation: dict[str, Any]) -> None:
    """The bearer scheme instead of FastAPI's optional `authorization` header; X-Tenant-ID required."""
    params = [
        p for p in operation.get("parameters", []) if not (p["in"] == "header" and p["name"].lower() in AUTH_HEADERS)
    ]
    params.append(
        {
            "name": "X-Tenant-ID",
            "in": "header",
            "required": True,
            "description": "the tenant of the bearer token's `tenant_id` claim",
            "schema": {"type": "string", "pattern": TENANT_PATTERN.pattern},
        }
    )
    for param in params:
        if param["in"] == "path" and param["name"] in PATH_ID_PATTERNS:
            param["schema"] = {**param["schema"], "pattern": PATH_ID_PATTERNS[param["name"]]}
    operation["parameters"] = params
    operation["security"] = [{SECURITY_SCHEME: []}]


def _error_statuses(method: str, path: str, reaches_airflow: bool) -> list[int]:
    statuses = [400, 401, 403, 404]
    if method != "get":
        statuses.append(409)
    if method == "post" and RATE_LIMITED.match(path):
        statuses.append(429)
    if reaches_airflow:
        statuses += [409, 502, 503]  # 409: Airflow's own conflicts (a run id, a connection id) pass through
    return sorted(set(statuses))


def _document_errors(operation: dict[str, Any], statuses: list[int]) -> None:
    responses = operation["responses"]
    for status in statuses:
        responses.setdefault(
            str(status), {"description": ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        )


def _api_routes(app: FastAPI) -> Iterator[APIRoute]:
    return (r for r in app.routes if isinstance(r, APIRoute))


def _uses_airflow(dependant: Dependant) -> bool:
    """Whether the endpoint (or a dependency of it) takes the Airflow client: it can answer 502/503."""
    return any(d.call is deps._airflow or _uses_airflow(d) for d in dependant.dependencies)
