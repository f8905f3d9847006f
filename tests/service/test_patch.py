"""PATCH (JSON Merge Patch) on pipelines, schedules and connections: the merged document is a PUT body and goes
through PUT's validation and storage; errors name the field and store nothing; tenants and roles as for PUT."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.service.fake_airflow import read_config
from tests.service.helpers import CONN_PASSWORD, Api, Service, expect_error

PIPELINES = "/v1/pipelines"
SCHEDULES = "/v1/pipelines/schedules"
CONNECTIONS = "/v1/pipelines/connections"


@pytest.fixture
def schedule(acme: Api, active: dict[str, Any]) -> dict[str, Any]:
    body = {"pipelineId": active["pipelineId"], "cronExpression": "0 6 * * *", "parameters": {}}
    resp = acme.post(SCHEDULES, json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _timetable(svc: Service, pipeline: dict[str, Any]) -> list[str]:
    svc.publish()
    return [s["id"] for s in read_config(svc.dag_file(pipeline["dagId"])).get("schedules") or []]


# -- pipelines -------------------------------------------------------------------------------------------
def test_patch_pipeline_changes_only_what_it_names(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    url = f"{PIPELINES}/{active['pipelineId']}"
    resp = acme.patch(url, {"description": "patched", "tags": ["sales", "daily"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["description"], body["tags"], body["revision"]) == ("patched", ["sales", "daily"], 2)
    assert body["definition"] == active["definition"] and body["version"] == active["version"]
    assert body["status"] == "CREATED"  # republished exactly as after a PUT
    svc.publish()
    assert acme.pipeline(active["pipelineId"])["status"] == "ACTIVE"
    # Any part of the definition, merged into the stored one; `null` removes a key.
    table = {"sources": {"products": {"table": "public.products_v2"}}}
    resp = acme.patch(url, {"description": None, "definition": table}, "application/json")
    assert resp.status_code == 200, resp.text
    definition = resp.json()["definition"]
    assert resp.json()["description"] is None and definition["sources"]["products"]["table"] == "public.products_v2"
    assert definition["sources"]["products"]["connection"] == "sales-database"
    assert definition["sinks"] == active["definition"]["sinks"]
    assert [v["revision"] for v in acme.get(f"{url}/versions").json()] == [1, 2, 3]


def test_patch_pipeline_errors_are_puts_and_store_nothing(acme: Api, active: dict[str, Any]) -> None:
    url = f"{PIPELINES}/{active['pipelineId']}"
    expect_error(acme.patch(url, {"tags": ["not a tag!"]}), 400, "validation_error", path="tags[0]")
    expect_error(acme.patch(url, {"name": "renamed"}), 400, "validation_error", path="name")
    expect_error(acme.patch(url, {"definition": None}), 400, "validation_error", path="definition")
    sink = next(iter(active["definition"]["sinks"]))
    bad = {"description": "never stored", "definition": {"sinks": {sink: {"connection": "nowhere"}}}}
    expect_error(acme.patch(url, bad), 400, "validation_error", path=f"definition.sinks.{sink}.connection")
    expect_error(acme.patch(url, {"unknown": 1}), 400, "validation_error", path="unknown")
    assert acme.pipeline(active["pipelineId"]) == active


@pytest.mark.parametrize("body", [[], "text", 1, None])
def test_a_patch_that_is_not_a_json_object_is_a_400(acme: Api, active: dict[str, Any], body: Any) -> None:
    expect_error(acme.patch(f"{PIPELINES}/{active['pipelineId']}", body), 400, "validation_error")
    resp = acme.client.request("PATCH", f"{PIPELINES}/{active['pipelineId']}", headers=acme.headers, content=b"{")
    expect_error(resp, 400, "validation_error")
    assert acme.pipeline(active["pipelineId"]) == active


# -- schedules -------------------------------------------------------------------------------------------
def test_patch_schedule_enabled_false_takes_it_out_of_the_timetable(
    svc: Service, acme: Api, active: dict[str, Any], schedule: dict[str, Any]
) -> None:
    assert _timetable(svc, active) == [schedule["scheduleId"]]
    url = f"{SCHEDULES}/{schedule['scheduleId']}"
    resp = acme.patch(url, {"enabled": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["enabled"] is False and resp.json()["nextRunAt"] is None
    assert resp.json()["cronExpression"] == "0 6 * * *"
    assert acme.pipeline(active["pipelineId"])["status"] == "CREATED"  # republished, as after a PUT
    assert _timetable(svc, active) == []
    resp = acme.patch(url, {"enabled": True, "timezone": "Europe/Berlin"}, "application/json")
    assert resp.status_code == 200, resp.text
    assert (resp.json()["timezone"], resp.json()["cronExpression"]) == ("Europe/Berlin", "0 6 * * *")
    assert _timetable(svc, active) == [schedule["scheduleId"]]


def test_patch_schedule_errors_name_the_field_and_store_nothing(acme: Api, schedule: dict[str, Any]) -> None:
    url = f"{SCHEDULES}/{schedule['scheduleId']}"
    expect_error(acme.patch(url, {"cronExpression": "61 * * * *"}), 400, "validation_error", path="cronExpression")
    expect_error(acme.patch(url, {"enabled": False, "timezone": "Mars/Base"}), 400, "validation_error", "timezone")
    expect_error(acme.patch(url, {"pipelineId": "pl-0000"}), 400, "validation_error", path="pipelineId")
    expect_error(acme.patch(url, {"enabled": "sometimes"}), 400, "validation_error", path="enabled")
    assert acme.get(url).json() == schedule


# -- connections -----------------------------------------------------------------------------------------
def test_patch_connection_keeps_the_credentials_it_does_not_name(svc: Service, acme: Api) -> None:
    conn = acme.get(f"{CONNECTIONS}?size=200").json()["items"][0]
    url = f"{CONNECTIONS}/{conn['connectionId']}"
    resp = acme.patch(url, {"properties": {"applicationName": "patched", "connectionTimeout": 5000}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["properties"] == {"applicationName": "patched", "connectionTimeout": 5000}
    assert (resp.json()["host"], resp.json()["port"], resp.json()["hasInlineCredentials"]) == ("127.0.0.1", 5432, True)
    assert CONN_PASSWORD not in resp.text
    airflow = svc.fake.connections[conn["airflowConnectionId"]]
    assert airflow["password"] == CONN_PASSWORD and airflow["login"] == "u"
    assert json.loads(airflow["extra"])["application_name"] == "patched"
    resp = acme.patch(url, {"credentials": {"username": "v", "password": "new-pw-1"}})
    assert resp.status_code == 200, resp.text
    assert svc.fake.connections[conn["airflowConnectionId"]]["password"] == "new-pw-1"


def test_patch_http_connection_keeps_masked_header_values(svc: Service, api: Api) -> None:
    body = {"name": "crm", "type": "http", "url": "https://crm.example.com/api", "properties": {"headers": {}}}
    body["properties"]["headers"] = {"X-Team": "data", "X-Vault-Token": "tok-1"}
    created = api.post(CONNECTIONS, json=body)
    assert created.status_code == 201, created.text
    url = f"{CONNECTIONS}/{created.json()['connectionId']}"
    resp = api.patch(url, {"properties": {"healthPath": "/ping", "headers": {"X-Team": "platform"}}})
    assert resp.status_code == 200, resp.text
    props = resp.json()["properties"]
    assert props["healthPath"] == "/ping" and props["basePath"] == "/api"
    assert props["headers"] == {"X-Team": "********", "X-Vault-Token": "********"}
    extra = json.loads(svc.fake.connections["acme.crm"]["extra"])
    assert (extra["X-Team"], extra["X-Vault-Token"]) == ("platform", "tok-1")
    assert "tok-1" not in resp.text


def test_patch_connection_errors_name_the_field_and_store_nothing(svc: Service, acme: Api) -> None:
    conn = acme.get(f"{CONNECTIONS}?size=200").json()["items"][0]
    url = f"{CONNECTIONS}/{conn['connectionId']}"
    airflow_before = dict(svc.fake.connections[conn["airflowConnectionId"]])
    expect_error(acme.patch(url, {"port": 0}), 400, "validation_error", path="port")
    expect_error(acme.patch(url, {"host": None}), 400, "validation_error", path="host")
    expect_error(acme.patch(url, {"properties": {"sslMode": "sometimes"}}), 400, "validation_error")
    expect_error(acme.patch(url, {"name": "renamed"}), 400, "validation_error", path="name")
    assert acme.get(url).json() == conn
    assert svc.fake.connections[conn["airflowConnectionId"]] == airflow_before


# -- tenants and roles -----------------------------------------------------------------------------------
def test_patch_is_tenant_scoped_and_refused_to_viewers(
    svc: Service, acme: Api, active: dict[str, Any], schedule: dict[str, Any]
) -> None:
    conn = acme.get(f"{CONNECTIONS}?size=200").json()["items"][0]
    urls = {
        f"{PIPELINES}/{active['pipelineId']}": {"description": "x"},
        f"{SCHEDULES}/{schedule['scheduleId']}": {"enabled": False},
        f"{CONNECTIONS}/{conn['connectionId']}": {"properties": {"applicationName": "x"}},
    }
    before = {url: acme.get(url).json() for url in urls}
    other, viewer = svc.api("globex"), svc.api("acme", roles=("viewer",))
    editor = svc.api("acme", roles=("editor",))
    for url, changes in urls.items():
        expect_error(other.patch(url, changes), 404, "not_found")
        expect_error(viewer.patch(url, changes), 403, "forbidden")
    assert {url: acme.get(url).json() for url in urls} == before
    for url, changes in urls.items():
        assert editor.patch(url, changes).status_code == 200, url


def test_put_stays_a_full_replace(acme: Api, schedule: dict[str, Any]) -> None:
    url = f"{SCHEDULES}/{schedule['scheduleId']}"
    expect_error(acme.put(url, json={"enabled": False}), 400, "validation_error", path="cronExpression")


def test_openapi_documents_patch_with_both_media_types(api: Api) -> None:
    doc = api.get("/openapi.json").json()
    for path in (f"{PIPELINES}/{{pipeline_id}}", f"{SCHEDULES}/{{schedule_id}}", f"{CONNECTIONS}/{{connection_id}}"):
        operation = doc["paths"][path]["patch"]
        assert set(operation["requestBody"]["content"]) == {"application/merge-patch+json", "application/json"}
        assert {"200", "400", "403", "404"} <= set(operation["responses"]), path
