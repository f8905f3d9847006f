"""Finding 6 / 10: schemathesis over the service's own OpenAPI, with a valid admin token of one tenant.

Every operation gets a bounded number of generated requests (valid and invalid ones, a fixed seed so a failure
replays), sent in-process to the app on SQLite with the fake Airflow behind it. Asserted for each response: no
5xx, its status documented for the operation, its body and content type what the document says. The tenant
has data (connections, a published pipeline, an execution, a schedule) so lists are not trivially empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.service_app import running_service
from tests.service.helpers import Service, example

SEED = 20261202
DERANDOMIZE = True
CASES_PER_OPERATION = 40  # x 45 operations x 2 modes: about 1.5 minutes on two cores (CI budget: 3)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One app for the whole module: the fuzzer's requests share (and may mutate) the tenant's seeded data."""
    with running_service(tmp_path_factory.mktemp("fuzz")) as svc:
        _seed_tenant(svc)
        yield svc
        shutdown_lifespans()  # schemathesis started the app's lifespan a second time, for its own client


def _seed_tenant(svc: Service) -> None:
    """Objects of every kind, so that list responses carry items whose schema is checked too."""
    api = svc.api("acme")
    api.create_connection("sales-database")
    api.create_connection("warehouse")
    pipeline = api.create_pipeline(example())
    svc.publish()
    api.execute(pipeline["pipelineId"])
    body = {"pipelineId": pipeline["pipelineId"], "cronExpression": "0 3 * * *"}
    assert api.post("/v1/pipelines/schedules", json=body).status_code == 201


def _fuzz(operation: APIOperation, mode: GenerationMode, headers: dict[str, str]) -> Callable[[], None]:
    """One Hypothesis test of one operation: the cases are reproducible (derandomized), not shrunk (time)."""

    @settings(
        max_examples=CASES_PER_OPERATION,
        derandomize=DERANDOMIZE,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode, headers=headers))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    return run  # type: ignore[no-any-return]


def _failures(schema: schemathesis.BaseSchema, headers: dict[str, str]) -> Iterator[str]:
    """Each operation in both generation modes; a failing one is reported and the next one still runs."""
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, headers)()
            except Unsatisfiable:
                continue  # no invalid request exists for it (string path ids, no query): nothing to negate
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected: one run shows them all
                yield f"{operation.label} [{mode.value}]: {exc}"[:3000]


def test_every_operation_conforms(fuzzed_service: Service) -> None:
    """No 5xx, only documented statuses, bodies and content types as documented, for every operation."""
    headers = {"Authorization": f"Bearer {fuzzed_service.token('acme')}", "X-Tenant-ID": "acme"}
    config = schemathesis.Config.from_dict({"seed": SEED})
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_service.app, config=config)
    assert len(list(schema.get_all_operations())) >= 40
    failures = list(_failures(schema, headers))
    assert not failures, f"{len(failures)} failing operation(s):\n" + "\n\n".join(failures)


def test_openapi_declares_auth_and_errors(tmp_path: Path) -> None:
    """Every /v1 operation requires the bearer scheme and X-Tenant-ID and documents the error shape;
    /health and /openapi.json stay open. (An app of its own: the fuzzer's app ends with its lifespan.)"""
    with running_service(tmp_path) as svc:
        doc = svc.client.get("/openapi.json").json()
        assert svc.client.get("/health").status_code == 200
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/v1/"):
                assert "security" not in operation, (method, path)
                continue
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
            headers = [p for p in operation["parameters"] if p["in"] == "header"]
            assert any(p["name"] == "X-Tenant-ID" and p["required"] for p in headers), (method, path)
            for status in ("400", "401", "403", "404"):
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, status)
    execute = doc["paths"]["/v1/pipelines/{pipeline_id}/execute"]["post"]["responses"]
    assert {"409", "429"} <= set(execute), "executing can conflict and be rate-limited"
    assert "422" not in str(doc["paths"]), "request validation answers 400, never FastAPI's default 422"
