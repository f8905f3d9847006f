"""Bearer JWT + X-Tenant-ID on every /v1 request; /health is open."""

from __future__ import annotations

import httpx

from service.auth import mint_token
from tests.service.helpers import Service, example, expect_error


def get_pipelines(svc: Service, **headers: str) -> httpx.Response:
    return svc.client.get("/v1/pipelines", headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_no_authorization_header_is_401(svc: Service) -> None:
    error = expect_error(get_pipelines(svc, X_Tenant_ID="acme"), 401, "unauthorized")
    assert "Authorization" in error["message"]


def test_garbage_token_is_401(svc: Service) -> None:
    resp = get_pipelines(svc, Authorization="Bearer not-a-jwt", X_Tenant_ID="acme")
    assert "invalid token" in expect_error(resp, 401, "unauthorized")["message"]


def test_expired_token_is_401(svc: Service) -> None:
    resp = get_pipelines(svc, Authorization=f"Bearer {svc.token(ttl=-10)}", X_Tenant_ID="acme")
    assert "expired" in expect_error(resp, 401, "unauthorized")["message"]


def test_token_signed_with_another_secret_is_401(svc: Service) -> None:
    forged = mint_token("another-secret-entirely-" * 2, tenant="acme", roles=["admin"])
    resp = get_pipelines(svc, Authorization=f"Bearer {forged}", X_Tenant_ID="acme")
    assert "signature" in expect_error(resp, 401, "unauthorized")["message"].lower()


def test_tenant_header_must_match_the_token(svc: Service) -> None:
    resp = get_pipelines(svc, Authorization=f"Bearer {svc.token('acme')}", X_Tenant_ID="globex")
    assert "X-Tenant-ID" in expect_error(resp, 403, "forbidden")["message"]


def test_missing_tenant_header_is_400(svc: Service) -> None:
    resp = get_pipelines(svc, Authorization=f"Bearer {svc.token('acme')}")
    expect_error(resp, 400, "validation_error", path="X-Tenant-ID")


def test_viewer_reads_but_cannot_write(svc: Service) -> None:
    admin, viewer = svc.api("acme"), svc.api("acme", roles=("viewer",))
    admin.create_connection("sales-database")
    admin.create_connection("warehouse")
    pipeline = admin.create_pipeline(example())
    url = f"/v1/pipelines/{pipeline['pipelineId']}"

    assert viewer.get("/v1/pipelines").json()["total"] == 1
    assert viewer.get(url).status_code == 200
    for resp in (
        viewer.post("/v1/pipelines", json=example("other")),
        viewer.put(url, json=example()),
        viewer.delete(url),
        viewer.post(f"{url}/execute", json={}),
        viewer.post("/v1/pipelines/connections", json={"name": "x"}),
    ):
        assert "viewer" in expect_error(resp, 403, "forbidden")["message"]
    assert admin.pipeline(pipeline["pipelineId"])["revision"] == 1
    assert admin.get("/v1/pipelines/executions").json()["total"] == 0


def test_health_needs_no_auth_and_reports_database_and_airflow(svc: Service) -> None:
    resp = svc.client.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["database"] == {"status": "up"}
    assert body["airflow"]["status"] == "up"
    assert body["airflow"]["url"] == "http://airflow.test"
    assert body["airflow"]["metadatabase"] == {"status": "healthy"}


def test_health_reports_airflow_down(svc: Service) -> None:
    svc.fake.down = True
    body = svc.client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["database"] == {"status": "up"}
    assert body["airflow"]["status"] == "down"
    assert "unreachable" in body["airflow"]["error"]


def test_health_reports_airflow_answering_an_error_page(svc: Service) -> None:
    svc.fake.health_response = httpx.Response(503, text="<html>Service Unavailable</html>")
    resp = svc.client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["airflow"]["status"] == "down"
