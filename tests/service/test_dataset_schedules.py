"""Data schedules (`definition.schedule.onDatasets`) against the fake Airflow: validation naming the dataset,
the tenant's assets in the DAG file, the read-only listing with the cron schedules, and asset-triggered runs
recorded as executions of the data schedule."""

from __future__ import annotations

from typing import Any

from service.workers import ClearedRunsWatch
from tests.service.fake_airflow import read_config
from tests.service.helpers import Api, Service, example, expect_error

URL = "/v1/pipelines/schedules"
SINK_FQN = "x.analytics.daily_transactions"  # the example's sink through the helpers' connections (database x)
SINK_TABLE = "analytics.daily_transactions"
SINK_URI = "postgres://127.0.0.1:5432/x/analytics/daily_transactions?tenant={tenant}"


def downstream(name: str = "summary", on: list[str] | None = None, table: str = "analytics.summary") -> dict[str, Any]:
    """Reads the example's sink table, writes another; runs when `on` (default: the example's sink) is written."""
    return {
        "name": name,
        "version": "1.0.0",
        "definition": {
            "sources": {"daily": {"type": "postgres", "connection": "warehouse", "table": SINK_TABLE}},
            "sinks": {"out": {"type": "postgres", "connection": "warehouse", "table": table, "input": "daily"}},
            "schedule": {"onDatasets": on or [SINK_FQN]},
        },
    }  # fmt: skip


def published(svc: Service, api: Api, body: dict[str, Any]) -> dict[str, Any]:
    created = api.create_pipeline(body)
    svc.publish()
    pipeline = api.pipeline(created["pipelineId"])
    assert pipeline["status"] == "ACTIVE", pipeline
    return pipeline


def test_a_data_schedule_names_a_dataset_another_pipeline_of_the_tenant_writes(svc: Service, acme: Api) -> None:
    # Nothing writes it yet.
    resp = acme.post("/v1/pipelines", json=downstream())
    error = expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")
    assert SINK_FQN in error["message"] and "no other pipeline" in error["message"]
    published(svc, acme, example())
    # Its own sink: a run would trigger the next one. Each bad dataset is named, by its index.
    resp = acme.post("/v1/pipelines", json=downstream(on=["x.analytics.nope", "x.analytics.summary"]))
    error = expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")
    assert [d["path"] for d in error["details"]] == [
        "definition.schedule.onDatasets[0]",
        "definition.schedule.onDatasets[1]",
    ]
    assert "itself" in error["details"][1]["message"] and SINK_FQN in error["details"][0]["message"]  # the hint
    resp = acme.post("/v1/pipelines", json=downstream(table="analytics.daily_transactions"))
    expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")  # writes what it waits for
    summary = acme.create_pipeline(downstream())
    assert summary["definition"]["schedule"] == {"onDatasets": [SINK_FQN]}
    # An update to write the table it waits for is refused too; nothing is stored.
    body = downstream(table="analytics.daily_transactions")
    resp = acme.put(f"/v1/pipelines/{summary['pipelineId']}", json=body)
    expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")
    assert acme.pipeline(summary["pipelineId"])["revision"] == 1
    assert acme.post("/v1/pipelines/validate", json={"definition": downstream()["definition"]}).status_code == 200


def test_a_loop_of_data_schedules_is_refused(svc: Service, acme: Api) -> None:
    etl = published(svc, acme, example())
    published(svc, acme, downstream("summary"))  # runs when the example wrote; writes analytics.summary
    published(svc, acme, downstream("rollup", on=["x.analytics.summary"], table="analytics.rollup"))
    # The example on the rollup: its own write runs summary, whose write runs rollup, which writes it.
    body = example()
    body["definition"]["schedule"] = {"onDatasets": ["x.analytics.rollup"]}
    resp = acme.put(f"/v1/pipelines/{etl['pipelineId']}", json=body)
    error = expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")
    assert "'rollup'" in error["message"] and "loop" in error["message"]
    # A dataset outside the chain is fine: a pipeline that nothing of the example's writes runs.
    published(svc, acme, downstream("other", on=["x.analytics.rollup"], table="analytics.other"))
    body["definition"]["schedule"] = {"onDatasets": ["x.analytics.other"]}
    error = expect_error(acme.put(f"/v1/pipelines/{etl['pipelineId']}", json=body), 400, "validation_error")
    assert "'other'" in error["message"]  # other runs on rollup: still in the chain
    standalone = downstream("standalone", on=["x.analytics.daily_transactions"], table="analytics.standalone")
    standalone["definition"]["sources"]["daily"]["table"] = "analytics.elsewhere"
    published(svc, acme, standalone)
    body["definition"]["schedule"] = {"onDatasets": ["x.analytics.standalone"]}
    error = expect_error(acme.put(f"/v1/pipelines/{etl['pipelineId']}", json=body), 400, "validation_error")
    assert "'standalone'" in error["message"]  # standalone runs on the example's own write
    # A writer outside every chain: allowed.
    feeder = downstream("feeder", table="analytics.feed")
    del feeder["definition"]["schedule"]
    published(svc, acme, feeder)
    body["definition"]["schedule"] = {"onDatasets": ["x.analytics.feed"]}
    assert acme.put(f"/v1/pipelines/{etl['pipelineId']}", json=body).status_code == 200


def test_another_tenant_cannot_schedule_on_a_dataset_it_does_not_write(svc: Service, acme: Api) -> None:
    published(svc, acme, example())
    beta = svc.api("beta")
    beta.create_connection("warehouse")  # the same database as acme's: the same dataset name
    resp = beta.post("/v1/pipelines", json=downstream())
    expect_error(resp, 400, "validation_error", "definition.schedule.onDatasets[0]")
    # Once one of beta's own pipelines writes the table, beta may: it is then beta's dataset too.
    beta.create_connection("sales-database")
    beta.create_pipeline(example())
    assert beta.post("/v1/pipelines", json=downstream()).status_code == 201


def test_the_dag_file_carries_the_tenants_assets(svc: Service, acme: Api) -> None:
    etl = published(svc, acme, example())
    assets = read_config(svc.dag_file(etl["dagId"]))["assets"]
    sink = {
        "name": "acme:postgres://127.0.0.1:5432/x.analytics.daily_transactions",
        "uri": SINK_URI.format(tenant="acme"),
    }
    assert assets["sinks"] == {"daily_transactions": sink}
    assert set(assets["sources"]) == {"raw_transactions", "products"} and "schedule" not in assets
    assert assets["sources"]["products"]["uri"] == "postgres://127.0.0.1:5432/x/public/products?tenant=acme"
    summary = published(svc, acme, downstream())
    config = read_config(svc.dag_file(summary["dagId"]))
    assert config["assets"]["schedule"] == {SINK_FQN: [sink]}
    assert config["assets"]["sources"]["daily"] == sink  # it reads what the example writes: the same asset
    # Another tenant's pipeline on the same table gets its own asset (Airflow's assets are global).
    beta = svc.api("beta")
    beta.create_connection("sales-database")
    beta.create_connection("warehouse")
    theirs = published(svc, beta, example())
    their_sink = read_config(svc.dag_file(theirs["dagId"]))["assets"]["sinks"]["daily_transactions"]
    assert their_sink["uri"] == SINK_URI.format(tenant="beta") and their_sink["name"].startswith("beta:")


def test_a_data_schedule_whose_dataset_is_no_longer_written_makes_the_pipeline_invalid(svc: Service, acme: Api) -> None:
    etl = published(svc, acme, example())
    summary = published(svc, acme, downstream())
    assert acme.delete(f"/v1/pipelines/{etl['pipelineId']}").status_code == 204
    before = svc.dag_file(summary["dagId"]).read_text()
    # Republished (a cron schedule added): the dataset resolves to nothing any more.
    cron = {"pipelineId": summary["pipelineId"], "cronExpression": "0 6 * * *"}
    assert acme.post(URL, json=cron).status_code == 201
    svc.publish()
    pipeline = acme.pipeline(summary["pipelineId"])
    assert pipeline["status"] == "INVALID" and SINK_FQN in pipeline["statusDetail"], pipeline
    assert "definition.schedule.onDatasets[0]" in pipeline["statusDetail"]
    assert svc.dag_file(summary["dagId"]).read_text() == before  # nothing half-written


def test_data_schedules_are_listed_read_only_with_the_cron_schedules(svc: Service, acme: Api) -> None:
    etl = published(svc, acme, example())
    summary = published(svc, acme, downstream())
    cron = acme.post(URL, json={"pipelineId": etl["pipelineId"], "cronExpression": "0 6 * * *"}).json()
    data_id = f"data-{summary['pipelineId']}"
    listed = acme.get(URL).json()
    assert listed["total"] == 2 and [s["scheduleId"] for s in listed["items"]] == [cron["scheduleId"], data_id]
    entry = listed["items"][1]
    assert entry["type"] == "datasets" and entry["onDatasets"] == [SINK_FQN] and entry["cronExpression"] is None
    assert entry["pipelineId"] == summary["pipelineId"] and entry["nextRunAt"] is None and entry["enabled"]
    assert SINK_FQN in entry["description"]
    assert listed["items"][0]["type"] == "cron" and listed["items"][0]["onDatasets"] is None
    # The same shape everywhere: one item, filtered, paged.
    assert acme.get(f"{URL}/{data_id}").json() == entry
    only = acme.get(URL, params={"pipelineId": summary["pipelineId"]}).json()
    assert (only["total"], only["items"]) == (1, [entry])
    assert acme.get(URL, params={"pipelineId": etl["pipelineId"]}).json()["items"] == [listed["items"][0]]
    second = acme.get(URL, params={"size": 1, "page": 1}).json()
    assert (second["total"], second["items"]) == (2, [entry])
    assert acme.get(URL, params={"size": 1, "page": 2}).json()["items"] == []
    # Read-only: the definition says it.
    for resp in (
        acme.put(f"{URL}/{data_id}", json={"pipelineId": summary["pipelineId"], "cronExpression": "0 6 * * *"}),
        acme.patch(f"{URL}/{data_id}", {"enabled": False}),
        acme.delete(f"{URL}/{data_id}"),
    ):
        error = expect_error(resp, 409, "conflict", "scheduleId")
        assert "definition.schedule.onDatasets" in error["message"]
    # Another tenant sees none of it.
    beta = svc.api("beta")
    assert beta.get(URL).json()["total"] == 0
    for resp in (beta.get(f"{URL}/{data_id}"), beta.delete(f"{URL}/{data_id}"), beta.post(f"{URL}/{data_id}/trigger")):
        expect_error(resp, 404, "not_found")
    # Triggered by hand: an ordinary execution of the pipeline, with its defaults, of that schedule.
    resp = acme.post(f"{URL}/{data_id}/trigger")
    assert resp.status_code == 202, resp.text
    assert resp.json()["scheduleId"] == data_id
    # Its definition without the schedule: no data schedule any more.
    body = downstream()
    del body["definition"]["schedule"]
    assert acme.put(f"/v1/pipelines/{summary['pipelineId']}", json=body).status_code == 200
    assert acme.get(URL).json()["total"] == 1
    expect_error(acme.get(f"{URL}/{data_id}"), 404, "not_found")


def test_asset_triggered_runs_become_executions_of_the_data_schedule(svc: Service, acme: Api) -> None:
    published(svc, acme, example())
    summary = published(svc, acme, downstream())
    dag_id, run_id = summary["dagId"], "asset_triggered__2026-12-05T07:30:00.123456+00:00_AbCdEfGh"
    svc.fake.start_scheduled_run(dag_id, run_id)
    svc.fake.runs[(dag_id, run_id)].update(run_type="asset_triggered", logical_date=None)  # as Airflow makes it
    svc.fake.set_run(dag_id, run_id, "running", {"prepare_staging": "success"})
    watch = ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow)
    watch.step()
    watch.step()  # idempotent
    listed = acme.get("/v1/pipelines/executions", params={"pipelineId": summary["pipelineId"]}).json()
    assert [e["executionId"] for e in listed["items"]] == [run_id]
    ex = acme.execution(run_id)
    assert ex["scheduleId"] == f"data-{summary['pipelineId']}" and ex["status"] == "RUNNING"
    svc.fake.set_run(dag_id, run_id, "success")
    by_schedule = acme.get("/v1/pipelines/executions", params={"scheduleId": f"data-{summary['pipelineId']}"})
    assert by_schedule.json()["total"] == 1
    assert svc.api("beta").get(f"/v1/pipelines/executions/{run_id}").status_code == 404
