"""Connections: stored per tenant, materialised in Airflow as '<tenant>.<name>', never echoing a password."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connections import Credentials
from service import cli
from service.config import Settings
from service.secrets import AwsSecrets, make_backend
from tests.connections.servers import MotoServer
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


def test_a_busy_airflow_leaves_the_connection_pending_until_the_worker_gets_it_there(svc: Service, api: Api) -> None:
    resp = api.post(URL, json=connection_body("warehouse"))
    assert resp.status_code == 201 and resp.json()["airflowSync"] == "SYNCED", resp.text
    svc.fake.fail_next = [500]  # e.g. its SQLite metadata database locked for a moment
    resp = api.post(URL, json=connection_body("lake"))
    assert resp.status_code == 201, resp.text
    lake = resp.json()
    assert lake["airflowSync"] == "PENDING" and "HTTP 500" in lake["airflowSyncError"]
    assert CONN_PASSWORD not in resp.text and "database is locked" not in resp.text  # Airflow's body is not relayed
    assert "acme.lake" not in svc.fake.connections

    svc.fake.fail_next = [503, 503, 503]
    svc.sync_connections()  # still busy: the error is recorded, the change stays pending
    assert api.get(f"{URL}/{lake['connectionId']}").json()["airflowSync"] == "PENDING"
    svc.sync_connections()
    assert svc.fake.connections["acme.lake"]["password"] == CONN_PASSWORD
    synced = api.get(f"{URL}/{lake['connectionId']}").json()
    assert (synced["airflowSync"], synced["airflowSyncError"]) == ("SYNCED", None)


def test_content_airflow_refuses_is_400_and_stores_nothing(svc: Service, api: Api) -> None:
    svc.fake.fail_next = [422]
    resp = api.post(URL, json=connection_body("lake"))
    expect_error(resp, 400, "airflow_rejected")
    assert "Airflow refused the connection 'lake'" in resp.text and CONN_PASSWORD not in resp.text
    assert api.get(URL).json()["total"] == 0  # nothing half-written


def test_executions_wait_for_their_connections_to_reach_airflow(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    svc.publish()
    warehouse = next(c for c in acme.get(URL).json()["items"] if c["name"] == "warehouse")
    svc.fake.down = True  # the change cannot reach Airflow: pending
    body = connection_body("warehouse", properties={"sslMode": "require"})
    changed = acme.put(f"{URL}/{warehouse['connectionId']}", json=body).json()
    assert changed["airflowSync"] == "PENDING" and "unreachable" in changed["airflowSyncError"]
    svc.fake.down = False
    execution = acme.execute(pipeline["pipelineId"])
    svc.dispatch()
    waiting = acme.execution(execution["executionId"])
    assert waiting["status"] == "QUEUED" and not svc.fake.runs
    assert "waiting for connection(s) to reach Airflow: 'warehouse'" in waiting["errorMessage"]

    svc.sync_connections()
    assert json.loads(svc.fake.connections["acme.warehouse"]["extra"])["sslmode"] == "require"
    svc.dispatch()
    assert (pipeline["dagId"], execution["executionId"]) in svc.fake.runs


def test_secret_ref_is_resolved_from_the_environment(svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PIPELINE_SECRET_ACME__PROD_DB_CREDS", json.dumps({"username": "etl", "password": "from-env-42"})
    )
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef="prod-db-creds"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["credentialSecretRef"] == "prod-db-creds"
    assert resp.json()["hasInlineCredentials"] is False
    assert "from-env-42" not in resp.text
    conn = svc.fake.connections["acme.warehouse"]
    assert (conn["login"], conn["password"]) == ("etl", "from-env-42")


def test_missing_secret_env_var_is_400(svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_SECRET_ACME__NOT_THERE", raising=False)
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef="not-there"))
    error = expect_error(resp, 400, "validation_error", path="credentialSecretRef")
    assert "PIPELINE_SECRET_ACME__NOT_THERE" in error["message"]
    assert api.get(URL).json()["total"] == 0 and svc.fake.connections == {}


def test_neither_secret_ref_nor_credentials_is_400(api: Api) -> None:
    resp = api.post(URL, json=connection_body("warehouse", credentials=None))
    error = expect_error(resp, 400, "validation_error", path="credentialSecretRef")
    assert "credentialSecretRef" in error["message"]


def test_both_secret_ref_and_credentials_is_400(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SECRET_ACME__REF", json.dumps({"username": "u", "password": "p"}))
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


def test_airflow_down_stores_it_pending_and_the_worker_catches_up(svc: Service, api: Api) -> None:
    svc.fake.down = True
    resp = api.post(URL, json=connection_body("warehouse"))
    assert resp.status_code == 201 and resp.json()["airflowSync"] == "PENDING", resp.text
    assert api.get(URL).json()["total"] == 1
    svc.fake.down = False
    svc.sync_connections()
    assert svc.fake.connections["acme.warehouse"]["password"] == CONN_PASSWORD
    assert api.get(URL).json()["items"][0]["airflowSync"] == "SYNCED"


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


# -- update (PUT) --------------------------------------------------------------------------------------
def test_put_updates_the_airflow_connection_and_keeps_the_stored_password(svc: Service, api: Api) -> None:
    conn = api.create_connection("warehouse")
    body = connection_body("warehouse", credentials=None, host="dwh.internal", port=6432, database="dwh")
    resp = api.put(f"{URL}/{conn['connectionId']}", json=body)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["host"], resp.json()["port"], resp.json()["database"]) == ("dwh.internal", 6432, "dwh")
    assert resp.json()["hasInlineCredentials"] is True and CONN_PASSWORD not in resp.text
    airflow_conn = svc.fake.connections["acme.warehouse"]
    assert (airflow_conn["host"], airflow_conn["port"], airflow_conn["schema"]) == ("dwh.internal", 6432, "dwh")
    assert (airflow_conn["login"], airflow_conn["password"]) == ("u", CONN_PASSWORD)


def test_put_can_switch_from_inline_credentials_to_a_secret_ref(
    svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = api.create_connection("warehouse")
    monkeypatch.setenv("PIPELINE_SECRET_ACME__WH", json.dumps({"username": "etl", "password": "rotated-77"}))
    resp = api.put(
        f"{URL}/{conn['connectionId']}", json=connection_body("warehouse", credentials=None, credentialSecretRef="wh")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["hasInlineCredentials"] is False and resp.json()["credentialSecretRef"] == "wh"
    assert (svc.fake.connections["acme.warehouse"]["login"], svc.fake.connections["acme.warehouse"]["password"]) == (
        "etl",
        "rotated-77",
    )


def test_put_refuses_a_rename_and_bad_properties(svc: Service, api: Api) -> None:
    conn = api.create_connection("warehouse")
    expect_error(
        api.put(f"{URL}/{conn['connectionId']}", json=connection_body("other")), 400, "validation_error", path="name"
    )
    bad = connection_body("warehouse", properties={"connectionTimeout": -1})
    expect_error(
        api.put(f"{URL}/{conn['connectionId']}", json=bad), 400, "validation_error", path="properties.connectionTimeout"
    )
    assert svc.fake.connections["acme.warehouse"]["port"] == 5432


def test_put_of_another_tenants_connection_is_404(svc: Service, api: Api) -> None:
    conn = api.create_connection("warehouse")
    expect_error(
        svc.api("globex").put(f"{URL}/{conn['connectionId']}", json=connection_body("warehouse")), 404, "not_found"
    )


def test_a_connection_in_use_cannot_become_s3(acme: Api) -> None:
    acme.create_pipeline(example())
    warehouse = acme.get(URL).json()["items"][1]
    body = {"name": "warehouse", "type": "s3", "properties": {"bucket": "lake"}}
    error = expect_error(acme.put(f"{URL}/{warehouse['connectionId']}", json=body), 409, "conflict")
    assert error["details"] == {"pipelines": ["daily-sales-etl"]}


# -- other types -----------------------------------------------------------------------------------------
def test_s3_and_http_connections_are_materialised_with_their_airflow_types(svc: Service, api: Api) -> None:
    s3 = {
        "name": "lake",
        "type": "s3",
        "credentials": {"username": "AKIAEXAMPLE", "password": CONN_PASSWORD},
        "properties": {"bucket": "raw-data", "region": "eu-west-1", "endpointUrl": "http://minio:9000"},
    }
    resp = api.post(URL, json=s3)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["host"], resp.json()["port"], resp.json()["database"]) == ("minio", 9000, "raw-data")
    aws = svc.fake.connections["acme.lake"]
    assert aws["conn_type"] == "aws" and aws["password"] == CONN_PASSWORD
    assert json.loads(aws["extra"]) == {"region_name": "eu-west-1", "endpoint_url": "http://minio:9000"}
    http = {"name": "crm", "type": "http", "url": "https://crm.example.com/api", "properties": {"healthPath": "/ping"}}
    resp = api.post(URL, json=http)
    assert resp.status_code == 201, resp.text
    assert resp.json()["properties"]["basePath"] == "/api"
    assert svc.fake.connections["acme.crm"]["conn_type"] == "http"


def test_type_specific_errors_name_the_field(api: Api) -> None:
    bad_region = {"name": "lake", "type": "s3", "properties": {"bucket": "raw-data", "region": "moon"}}
    expect_error(api.post(URL, json=bad_region), 400, "validation_error", path="properties.region")
    secret_header = {"name": "crm", "type": "http", "host": "crm", "properties": {"headers": {"Authorization": "x"}}}
    expect_error(api.post(URL, json=secret_header), 400, "validation_error", path="properties.headers")
    jdbc_url = {"name": "db", "type": "jdbc", "url": "jdbc:mysql://h/d", "credentials": {"username": "u"}}
    expect_error(api.post(URL, json=jdbc_url), 400, "validation_error", path="url")
    no_host = {"name": "db", "type": "postgres", "database": "d", "credentials": {"username": "u"}}
    expect_error(api.post(URL, json=no_host), 400, "validation_error", path="host")


# -- test ------------------------------------------------------------------------------------------------
def test_test_against_the_local_postgres_reports_version_and_details(api: Api) -> None:
    conn = api.create_connection(
        "local", database="postgres", credentials={"username": "postgres", "password": CONN_PASSWORD}
    )
    resp = api.post(f"{URL}/{conn['connectionId']}/test")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["connected"] is True and body["version"].startswith("PostgreSQL ")
    assert "public" in body["details"]["schemas"] and isinstance(body["details"]["tables"], int)
    assert [s["name"] for s in body["stages"]] == [
        "credentials",
        "dns",
        "network",
        "tcp",
        "authentication",
        "privilege",
    ]
    assert body["failedStage"] is None and isinstance(body["latencyMs"], int)
    assert CONN_PASSWORD not in resp.text


def test_a_failed_test_is_a_200_with_the_stage_and_a_hint(api: Api) -> None:
    conn = api.create_connection("closed", port=1, database="postgres")
    resp = api.post(f"{URL}/{conn['connectionId']}/test")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["connected"], body["failedStage"]) == (False, "tcp")
    assert body["hint"] == "TCP connect to 127.0.0.1:1 refused: is the server running and is the port right?"
    assert body["stages"][-1] == {
        "name": "tcp",
        "ok": False,
        "ms": body["stages"][-1]["ms"],
        "message": "connection to 127.0.0.1:1 refused",
    }


def test_a_secret_gone_since_creation_fails_the_test_at_credentials(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SECRET_ACME__GONE", json.dumps({"username": "postgres", "password": "x"}))
    conn = api.create_connection("gone", credentials=None, credentialSecretRef="gone")
    monkeypatch.delenv("PIPELINE_SECRET_ACME__GONE")
    body = api.post(f"{URL}/{conn['connectionId']}/test").json()
    assert (body["connected"], body["failedStage"]) == (False, "credentials")
    assert body["hint"] == "secret 'gone' not found: set the environment variable PIPELINE_SECRET_ACME__GONE"


def test_test_of_an_unknown_connection_is_404(api: Api) -> None:
    expect_error(api.post(f"{URL}/conn-nope/test"), 404, "not_found")


# -- secrets backends --------------------------------------------------------------------------------------
def test_file_backend_resolves_what_the_cli_put(svc: Service, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(svc.settings.data_dir))
    monkeypatch.setenv("PIPELINE_SECRETS_BACKEND", "file")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"username": "filer", "password": "from-file-9"})))
    assert cli.main(["secret", "put", "--tenant", "acme", "wh-file"]) == 0
    assert b"from-file-9" not in svc.settings.resolved_secrets_file().read_bytes()
    svc.app.state.secrets = make_backend(Settings(data_dir=svc.settings.data_dir, secrets_backend="file"))
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef="wh-file"))
    assert resp.status_code == 201, resp.text
    assert svc.fake.connections["acme.warehouse"]["password"] == "from-file-9"
    missing = api.post(URL, json=connection_body("other", credentials=None, credentialSecretRef="nope"))
    error = expect_error(missing, 400, "validation_error", path="credentialSecretRef")
    assert "pipeline-service secret put --tenant acme nope" in error["message"]


def test_cli_refuses_bad_json_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_SECRETS_BACKEND", "file")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"password": "leak-me-not"'))
    assert cli.main(["secret", "put", "--tenant", "acme", "x"]) == 2
    assert "leak-me-not" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    yield server
    server.stop()


def test_aws_secrets_manager_backend(svc: Service, api: Api, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(
        data_dir=svc.settings.data_dir,
        secrets_backend="aws",
        secrets_aws_region="us-east-1",
        secrets_aws_endpoint_url=moto.url,
        secrets_aws_prefix="pipelines/",
    )
    backend = make_backend(settings)
    assert isinstance(backend, AwsSecrets)
    ref = "wh-" + uuid.uuid4().hex[:6]
    backend.put("acme", ref, Credentials("aws-user", "from-aws-5"))
    svc.app.state.secrets = backend
    resp = api.post(URL, json=connection_body("warehouse", credentials=None, credentialSecretRef=ref))
    assert resp.status_code == 201, resp.text
    assert (svc.fake.connections["acme.warehouse"]["login"], svc.fake.connections["acme.warehouse"]["password"]) == (
        "aws-user",
        "from-aws-5",
    )
    missing = api.post(URL, json=connection_body("other", credentials=None, credentialSecretRef="absent"))
    error = expect_error(missing, 400, "validation_error", path="credentialSecretRef")
    assert "AWS Secrets Manager secret 'pipelines/acme/absent'" in error["message"]


def test_list_is_paged_in_creation_order(api: Api) -> None:
    names = [api.create_connection(f"db-{i}")["name"] for i in range(3)]
    body = api.get("/v1/pipelines/connections").json()
    assert [c["name"] for c in body["items"]] == names and body["total"] == 3
    second = api.get("/v1/pipelines/connections", params={"page": 1, "size": 2}).json()
    assert ([c["name"] for c in second["items"]], second["total"], second["page"], second["size"]) == (
        names[2:],
        3,
        1,
        2,
    )
