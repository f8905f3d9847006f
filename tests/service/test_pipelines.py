"""Pipelines: create, validate, list, version, delete; publishing is driven by run_pending()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.service.fake_airflow import read_config
from tests.service.helpers import CONN_PASSWORD, EXAMPLE, Api, Service, example, expect_error


def test_create_returns_201_created(acme: Api) -> None:
    resp = acme.post("/v1/pipelines", json=example())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["pipelineId"].startswith("pl-")
    assert body["status"] == "CREATED"
    assert (body["name"], body["version"], body["revision"]) == ("daily-sales-etl", "1.0.0", 1)
    assert body["tags"] == ["sales", "daily", "etl"]
    assert body["dagId"] == "acme.daily-sales-etl"
    assert body["definition"] == EXAMPLE["definition"]
    assert body["deployedAt"] is None


def test_publishing_makes_it_active_and_writes_a_dag_file_without_secrets(svc: Service, acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    assert svc.publish() == 1

    pipeline = acme.pipeline(pipeline_id)
    assert pipeline["status"] == "ACTIVE" and pipeline["statusDetail"] is None
    assert pipeline["deployedAt"] is not None
    path = svc.dag_file("acme.daily-sales-etl")
    assert path.parent == svc.settings.dags_dir and path.exists()
    assert CONN_PASSWORD not in path.read_text()
    config = read_config(path)
    assert config["definition"] == EXAMPLE["definition"]
    assert config["connections"] == {"sales-database": "acme.sales-database", "warehouse": "acme.warehouse"}
    assert svc.fake.dags["acme.daily-sales-etl"]["is_paused"] is False
    assert svc.publish() == 0  # nothing left to do


def test_list_pages_and_filters(svc: Service, acme: Api) -> None:
    first = acme.create_pipeline(example("a", tags=["sales", "daily"]))
    second = acme.create_pipeline(example("b", tags=["sales"]))
    third = acme.create_pipeline(example("c", tags=["daily", "sales", "etl"]))

    body = acme.get("/v1/pipelines").json()
    assert (body["total"], body["page"], body["size"]) == (3, 0, 20)
    assert [p["name"] for p in body["items"]] == ["a", "b", "c"]
    assert "definition" not in body["items"][0] or body["items"][0]["definition"] is None

    page = acme.get("/v1/pipelines", params={"page": 1, "size": 1}).json()
    assert (page["total"], page["page"], page["size"]) == (3, 1, 1)
    assert [p["pipelineId"] for p in page["items"]] == [second["pipelineId"]]

    tagged = acme.get("/v1/pipelines", params={"tags": "daily, sales"}).json()
    assert [p["pipelineId"] for p in tagged["items"]] == [first["pipelineId"], third["pipelineId"]]
    assert tagged["total"] == 2
    tagged_page = acme.get("/v1/pipelines", params={"tags": "sales,daily", "page": 1, "size": 1}).json()
    assert [p["pipelineId"] for p in tagged_page["items"]] == [third["pipelineId"]] and tagged_page["total"] == 2
    assert acme.get("/v1/pipelines", params={"tags": "etl,nope"}).json() | {"items": []} == {
        "items": [], "total": 0, "page": 0, "size": 20
    }  # fmt: skip

    svc.publish()
    acme.put(f"/v1/pipelines/{third['pipelineId']}", json=example("c", version="1.1.0"))
    created = acme.get("/v1/pipelines", params={"status": "CREATED"}).json()
    assert [p["pipelineId"] for p in created["items"]] == [third["pipelineId"]]
    assert acme.get("/v1/pipelines", params={"status": "ACTIVE"}).json()["total"] == 2


def test_list_rejects_an_unknown_status(acme: Api) -> None:
    error = expect_error(acme.get("/v1/pipelines", params={"status": "RUNNING"}), 400, "validation_error", "status")
    assert "ACTIVE" in error["message"]


def test_another_tenant_cannot_see_it(svc: Service, acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    globex = svc.api("globex")
    expect_error(globex.get(f"/v1/pipelines/{pipeline_id}"), 404, "not_found")
    expect_error(globex.get(f"/v1/pipelines/{pipeline_id}/versions"), 404, "not_found")
    expect_error(globex.put(f"/v1/pipelines/{pipeline_id}", json=example()), 404, "not_found")
    expect_error(globex.delete(f"/v1/pipelines/{pipeline_id}"), 404, "not_found")
    assert globex.get("/v1/pipelines").json() == {"items": [], "total": 0, "page": 0, "size": 20}
    assert acme.pipeline(pipeline_id)["revision"] == 1


def test_duplicate_name_is_409(acme: Api) -> None:
    acme.create_pipeline(example())
    error = expect_error(acme.post("/v1/pipelines", json=example()), 409, "conflict", path="name")
    assert "daily-sales-etl" in error["message"]
    assert acme.get("/v1/pipelines").json()["total"] == 1


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to the definition at a dotted path ('a.b.0.c' indexes lists); value None deletes."""

    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if value is None:
            del d[last]
        else:
            d[last] = value

    return change


INVALID = {
    "unknown key": (
        _set("sources.raw_transactions.colour", "red"),
        "definition.sources.raw_transactions.colour",
    ),
    "missing sinks": (_set("sinks", None), "definition.sinks"),
    "unknown input": (_set("transformations.0.inputs", ["nope"]), "definition.transformations[0].inputs[0]"),
    "merge without keys": (
        _set("sinks.daily_transactions.keys", None),
        "definition.sinks.daily_transactions",
    ),
    "check on unknown dataset": (
        _set("quality_checks.0.dataset", "nope"),
        "definition.quality_checks[0].dataset",
    ),
    "unknown connection": (
        _set("sinks.daily_transactions.connection", "nowhere"),
        "definition.sinks.daily_transactions.connection",
    ),
    "bad parameter default": (
        _set("parameters.start_date.default", "yesterday"),
        "definition.parameters.start_date.default",
    ),
}


@pytest.mark.parametrize("change, path", INVALID.values(), ids=INVALID.keys())
def test_invalid_definition_is_400_naming_the_path_and_stores_nothing(
    svc: Service, acme: Api, change: Callable[[dict[str, Any]], None], path: str
) -> None:
    body = example()
    change(body["definition"])
    error = expect_error(acme.post("/v1/pipelines", json=body), 400, "validation_error", path=path)
    assert error["message"].startswith(path)
    assert acme.get("/v1/pipelines").json()["total"] == 0
    assert svc.publish() == 0


def test_merge_without_keys_says_keys_are_needed(acme: Api) -> None:
    body = example()
    del body["definition"]["sinks"]["daily_transactions"]["keys"]
    error = expect_error(acme.post("/v1/pipelines", json=body), 400, "validation_error")
    assert "keys" in error["message"]


def test_request_fields_are_validated_too(acme: Api) -> None:
    expect_error(acme.post("/v1/pipelines", json=example(version="1.0")), 400, "validation_error", "version")
    expect_error(acme.post("/v1/pipelines", json=example("has space")), 400, "validation_error", "name")
    expect_error(acme.post("/v1/pipelines", json={**example(), "owner": "me"}), 400, "validation_error", "owner")


def test_update_adds_a_revision_and_keeps_the_old_one(svc: Service, acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    svc.publish()
    changed = example(version="1.1.0", description="now with retries", tags=["sales"])
    changed["definition"]["orchestration"]["retries"] = 5

    resp = acme.put(f"/v1/pipelines/{pipeline_id}", json=changed)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["revision"], body["version"], body["status"]) == (2, "1.1.0", "CREATED")
    assert body["tags"] == ["sales"] and body["definition"] == changed["definition"]

    versions = acme.get(f"/v1/pipelines/{pipeline_id}/versions").json()
    assert [(v["revision"], v["version"]) for v in versions] == [(1, "1.0.0"), (2, "1.1.0")]
    first = acme.get(f"/v1/pipelines/{pipeline_id}/versions/1").json()
    assert first["definition"] == EXAMPLE["definition"] and first["tags"] == EXAMPLE["tags"]
    expect_error(acme.get(f"/v1/pipelines/{pipeline_id}/versions/3"), 404, "not_found")

    assert svc.publish() == 1
    assert acme.pipeline(pipeline_id)["status"] == "ACTIVE"
    config = read_config(svc.dag_file(body["dagId"]))
    assert config["definition"]["orchestration"]["retries"] == 5


def test_rejected_update_leaves_revision_1_intact(acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    bad = example(version="2.0.0")
    bad["definition"]["sinks"]["daily_transactions"]["mode"] = "upsert"

    expect_error(
        acme.put(f"/v1/pipelines/{pipeline_id}", json=bad),
        400,
        "validation_error",
        path="definition.sinks.daily_transactions.mode",
    )
    pipeline = acme.pipeline(pipeline_id)
    assert (pipeline["revision"], pipeline["version"]) == (1, "1.0.0")
    assert pipeline["definition"] == EXAMPLE["definition"]
    assert len(acme.get(f"/v1/pipelines/{pipeline_id}/versions").json()) == 1


def test_rename_is_rejected(acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    expect_error(
        acme.put(f"/v1/pipelines/{pipeline_id}", json=example("new-name")),
        400,
        "validation_error",
        path="name",
    )
    assert acme.pipeline(pipeline_id)["name"] == "daily-sales-etl"


def test_delete_removes_the_pipeline_and_its_dag(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    path = svc.dag_file(active["dagId"])
    assert path.exists()
    url = f"/v1/pipelines/{active['pipelineId']}"

    assert acme.delete(url).status_code == 204
    expect_error(acme.get(url), 404, "not_found")
    expect_error(acme.delete(url), 404, "not_found")
    assert not path.exists()
    assert active["dagId"] not in svc.fake.dags
    assert acme.get("/v1/pipelines").json()["total"] == 0


def test_delete_takes_the_executions_with_it(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    acme.execute(active["pipelineId"])
    svc.dispatch()
    assert acme.delete(f"/v1/pipelines/{active['pipelineId']}").status_code == 204
    assert acme.get("/v1/pipelines/executions").json()["total"] == 0
    # The name is free again.
    assert acme.create_pipeline(example())["status"] == "CREATED"


def test_error_path_keeps_a_dataset_named_like_a_type(acme: Api) -> None:
    body = example()
    definition = body["definition"]
    definition["sources"]["postgres"] = definition["sources"].pop("products")
    definition["sources"]["postgres"]["colour"] = "red"
    definition["transformations"][1]["lookup"] = "postgres"
    expect_error(
        acme.post("/v1/pipelines", json=body),
        400,
        "validation_error",
        path="definition.sources.postgres.colour",
    )


def test_delete_while_airflow_is_down_still_removes_the_file(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    svc.fake.down = True
    assert acme.delete(f"/v1/pipelines/{active['pipelineId']}").status_code == 204
    assert not svc.dag_file(active["dagId"]).exists()
