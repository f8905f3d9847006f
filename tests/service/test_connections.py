"""Connections: stored per tenant, materialised in Airflow as '<tenant>.<name>', never echoing a password."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.service.helpers import CONN_PASSWORD, Api, Service, connection_body, example, expect_error

URL = "/v1/pipelines/connections"


def test_create_is_201_and_never_returns_the_password(api: Api) -> None:
    resp = api.post(URL, json=connection_body("warehouse", properties={"sslMode": "require"}))
    assert resp.status_code == 201, resp.text
    assert CONN_PASSWORD not in resp.text
    body = resp.json()
    assert body["connectionId"].startswith("conn-")
    assert (body["name"], body["type"], body["host"], body["port"], body["database"]) == (
        "warehouse",
        "postgres",
        "127.0.0.1",
        5432,
        "x",
    )
    assert body["hasInlineCredentials"] is True and body["credentialSecretRef"] is None
    assert body["properties"] == {"sslMode": "require"}
    assert body["airflowConnectionId"] == "acme.warehouse"

    for read in (api.get(f"{URL}/{body['connectionId']}"), api.get(URL)):
        assert read.status_code == 200 and CONN_PASSWORD not in read.text


def test_airflow_receives_the_connection_with_its_password(svc: Service, api: Api) -> None:
    api.create_connection("warehouse", port=6543, properties={"sslMode": "require", "connectionTimeout": 5000})
    conn = svc.fake.connections["acme.warehouse"]
    assert (conn["conn_type"], conn["host"], conn["port"], conn["schema"]) == (
        "postgres",
        "127.0.0.1",
        6543,
        "x",
    )
    assert (conn["login"], conn["password"]) == ("u", CONN_PASSWORD)
    assert json.loads(conn["extra"]) == {"sslmode": "require", "connect_timeout": 5}


def test_secret_ref_is_resolved_from_the_environment(svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SECRET_PROD_DB_CREDS", json.dumps({"username": "etl", "password": "from-env-42"}))
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef="prod-db.creds"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["credentialSecretRef"] == "prod-db.creds"
    assert resp.json()["hasInlineCredentials"] is False
    assert "from-env-42" not in resp.text
    conn = svc.fake.connections["acme.warehouse"]
    assert (conn["login"], conn["password"]) == ("etl", "from-env-42")


def test_missing_secret_env_var_is_400(svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_SECRET_NOT_THERE", raising=False)
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef="not-there"))
    error = expect_error(resp, 400, "validation_error", path="credentialSecretRef")
    assert "PIPELINE_SECRET_NOT_THERE" in error["message"]
    assert api.get(URL).json()["total"] == 0 and svc.fake.connections == {}


def test_neither_secret_ref_nor_credentials_is_400(api: Api) -> None:
    resp = api.post(URL, json=connection_body("warehouse", credentials=None))
    error = expect_error(resp, 400, "validation_error", path="credentialSecretRef")
    assert "credentialSecretRef" in error["message"]


def test_both_secret_ref_and_credentials_is_400(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SECRET_REF", json.dumps({"username": "u", "password": "p"}))
    resp = api.post(URL, json=connection_body("warehouse", credentialSecretRef="ref"))
    error = expect_error(resp, 400, "validation_error", path="credentials")
    assert "credentialSecretRef" in error["message"]


def test_bad_properties_are_400_naming_the_property(svc: Service, api: Api) -> None:
    resp = api.post(URL, json=connection_body("warehouse", properties={"sslMode": "sometimes"}))
    expect_error(resp, 400, "validation_error", path="properties.sslMode")
    resp = api.post(URL, json=connection_body("warehouse", properties={"colour": "red"}))
    expect_error(resp, 400, "validation_error", path="properties.colour")
    assert svc.fake.connections == {}


def test_duplicate_name_is_409(svc: Service, api: Api) -> None:
    api.create_connection("warehouse")
    resp = api.post(URL, json=connection_body("warehouse", credentials={"username": "u", "password": "other"}))
    expect_error(resp, 409, "conflict", path="name")
    assert svc.fake.connections["acme.warehouse"]["password"] == CONN_PASSWORD


def test_airflow_down_stores_nothing(svc: Service, api: Api) -> None:
    svc.fake.down = True
    expect_error(api.post(URL, json=connection_body("warehouse")), 503, "airflow_unavailable")
    assert api.get(URL).json()["total"] == 0


def test_delete_of_a_connection_in_use_is_409_naming_the_pipeline(svc: Service, acme: Api) -> None:
    acme.create_pipeline(example())
    warehouse = acme.get(URL).json()["items"][1]
    assert warehouse["name"] == "warehouse"
    error = expect_error(acme.delete(f"{URL}/{warehouse['connectionId']}"), 409, "conflict")
    assert "daily-sales-etl" in error["message"]
    assert error["details"] == {"pipelines": ["daily-sales-etl"]}
    assert "acme.warehouse" in svc.fake.connections


def test_delete_unused_is_204_and_removes_it_from_airflow(svc: Service, api: Api) -> None:
    conn = api.create_connection("warehouse")
    assert api.delete(f"{URL}/{conn['connectionId']}").status_code == 204
    expect_error(api.get(f"{URL}/{conn['connectionId']}"), 404, "not_found")
    assert "acme.warehouse" not in svc.fake.connections
    assert api.create_connection("warehouse")["name"] == "warehouse"  # the name is free again


def test_another_tenant_cannot_see_it(svc: Service, api: Api) -> None:
    conn: dict[str, Any] = api.create_connection("warehouse")
    globex = svc.api("globex")
    expect_error(globex.get(f"{URL}/{conn['connectionId']}"), 404, "not_found")
    expect_error(globex.delete(f"{URL}/{conn['connectionId']}"), 404, "not_found")
    assert globex.get(URL).json()["total"] == 0
    # Same name in another tenant: a separate Airflow connection.
    assert globex.create_connection("warehouse")["airflowConnectionId"] == "globex.warehouse"
    assert set(svc.fake.connections) == {"acme.warehouse", "globex.warehouse"}
    # ...and globex's pipelines cannot use acme's connections.
    globex_body = example()
    expect_error(
        globex.post("/v1/pipelines", json=globex_body),
        400,
        "validation_error",
        path="definition.sources.raw_transactions.connection",
    )


def test_delete_while_airflow_is_down_keeps_the_connection(svc: Service, api: Api) -> None:
    conn = api.create_connection("warehouse")
    svc.fake.down = True
    expect_error(api.delete(f"{URL}/{conn['connectionId']}"), 503, "airflow_unavailable")
    svc.fake.down = False
    assert api.get(f"{URL}/{conn['connectionId']}").status_code == 200
    assert "acme.warehouse" in svc.fake.connections
