"""Airflow assets of a pipeline DAG: sources as inlets, sinks as outlets (the tenant's assets, as the service
resolves them), and the data schedule (`schedule.onDatasets`) as Airflow's asset-triggered scheduling."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAll, AssetAny
from airflow.serialization.serialized_objects import DagSerialization

from dag_factory import build_dag, load_pipeline_dag
from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_definition
from dag_factory.spec.datasets import Endpoint, definition_datasets, tenant_asset
from dag_factory.timetables import ScheduleSetTimetable, schedule_parameters

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())["definition"]
CONNS = {"sales-database": "acme.sales-database", "warehouse": "acme.warehouse"}
ENDPOINTS = {
    "sales-database": Endpoint("postgres", "db.internal", 5432, "sales"),
    "warehouse": Endpoint("postgres", "wh.internal", None, "warehouse"),
}
SINK_URI = "postgres://wh.internal:5432/warehouse/analytics/daily_transactions?tenant=acme"
TABLE = "analytics.daily_transactions"
SINK_NAME = "acme:postgres://wh.internal:5432/warehouse.analytics.daily_transactions"


def assets_of(definition: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    """What the service's publisher puts into the DAG file's config."""
    named = definition_datasets(validate_definition(definition), ENDPOINTS, tenant=tenant, file_root="/files")
    return {
        "sources": {n: tenant_asset(d, tenant).as_json() for n, d in named.sources.items()},
        "sinks": {n: tenant_asset(d, tenant).as_json() for n, d in named.sinks.items()},
    }


def downstream(on: list[str]) -> dict[str, Any]:
    """Reads the example's sink table and writes another one; runs when the given datasets are written."""
    return {
        "sources": {"daily": {"type": "postgres", "connection": "warehouse", "table": TABLE}},
        "sinks": {
            "summary": {"type": "postgres", "connection": "warehouse", "table": "analytics.summary", "input": "daily"}
        },
        "schedule": {"onDatasets": on},
    }


def test_sources_are_inlets_and_sinks_are_outlets_with_the_tenants_assets() -> None:
    dag = build_dag(EXAMPLE, dag_id="acme.daily-sales-etl", connections=CONNS, assets=assets_of(EXAMPLE))
    (outlet,) = dag.get_task("sinks.daily_transactions").outlets
    assert isinstance(outlet, Asset) and (outlet.name, outlet.uri) == (SINK_NAME, SINK_URI)
    (inlet,) = dag.get_task("sources.raw_transactions").inlets
    assert inlet.uri == "postgres://db.internal:5432/sales/public/raw_transactions?tenant=acme"
    assert dag.get_task("sources.products").inlets[0].name == "acme:postgres://db.internal:5432/sales.public.products"
    # Only the reading and writing steps: a transformation or a check touches no outside dataset.
    others = [t for t in dag.task_ids if not t.startswith(("sources.", "sinks."))]
    assert all(not dag.get_task(t).inlets and not dag.get_task(t).outlets for t in others)
    assert isinstance(dag.timetable, ScheduleSetTimetable)  # no data schedule: as before


def test_each_tenant_has_its_own_asset_of_the_same_table() -> None:
    """Airflow keeps one asset per (name, URI) and lets only one active asset have a given name or URI: both
    carry the tenant, so a write by one tenant is an event on its asset alone."""
    a = assets_of(EXAMPLE, "acme")["sinks"]["daily_transactions"]
    b = assets_of(EXAMPLE, "beta")["sinks"]["daily_transactions"]
    assert a["name"] != b["name"] and a["uri"] != b["uri"]
    assert b["uri"] == SINK_URI.replace("tenant=acme", "tenant=beta")
    # Airflow's URI normalisation (the postgres provider's) keeps it as it is.
    assert Asset(name=a["name"], uri=a["uri"]).uri == a["uri"]


def test_files_get_tenant_assets_too() -> None:
    definition = copy.deepcopy(EXAMPLE)
    definition["sinks"]["daily_transactions"] = {"type": "file", "path": "out/daily", "input": "enrich_with_products"}
    definition["quality_checks"] = []
    definition["orchestration"]["staging_connection"] = "warehouse"
    sink = assets_of(definition)["sinks"]["daily_transactions"]
    assert sink == {"name": "acme:/files/acme/out/daily", "uri": "file:///files/acme/out/daily?tenant=acme"}


def test_a_data_schedule_runs_on_the_assets_the_service_resolved() -> None:
    definition = downstream(["warehouse.analytics.daily_transactions"])
    resolved = {"warehouse.analytics.daily_transactions": [{"name": SINK_NAME, "uri": SINK_URI}]}
    dag = build_dag(definition, dag_id="acme.summary", connections=CONNS, assets={"schedule": resolved})
    timetable = dag.timetable
    # AssetOrTimeSchedule also without cron schedules: the inner timetable names the DAG's scheduled runs.
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert isinstance(timetable.timetable, ScheduleSetTimetable) and not timetable.timetable.schedules
    assert isinstance(timetable.asset_condition, AssetAll)
    (only,) = timetable.asset_condition.objects
    assert (only.name, only.uri) == (SINK_NAME, SINK_URI)
    # Airflow's scheduler sees the same after serialization (the dag-processor stores it so).
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert type(back.timetable).__name__ == "AssetOrTimeSchedule"
    assert [(a.name, a.uri) for _, a in back.timetable.asset_condition.iter_assets()] == [(SINK_NAME, SINK_URI)]
    assert back.timetable.can_be_scheduled is False  # no cron: only the assets start runs


def test_a_data_schedule_with_cron_schedules_keeps_the_timetable_and_its_parameters() -> None:
    definition = downstream(["warehouse.analytics.daily_transactions", "sales.public.products"])
    resolved = {
        "warehouse.analytics.daily_transactions": [
            {"name": SINK_NAME, "uri": SINK_URI},
            {"name": "acme:postgres://other:5432/warehouse.analytics.daily_transactions", "uri": "postgres://other:5432/warehouse/analytics/daily_transactions?tenant=acme"},
        ],
        "sales.public.products": [{"name": "acme:p", "uri": "postgres://db.internal:5432/sales/public/products?tenant=acme"}],
    }  # fmt: skip
    definition["parameters"] = {"day": {"type": "string", "default": "any"}}
    cron = {"id": "sch-a", "cron": "0 6 * * *", "timezone": "UTC", "parameters": {"day": "x"}, "since": None}
    cfg = {"dag_id": "acme.summary", "definition": definition, "connections": CONNS, "schedules": [cron]}
    dag = load_pipeline_dag(json.dumps({**cfg, "assets": {"schedule": resolved}}))
    condition = dag.timetable.asset_condition
    # A list of datasets: all of them written (Airflow's list semantics); one written on two hosts: either.
    assert isinstance(condition, AssetAll) and isinstance(condition.objects[0], AssetAny)
    assert len(condition.objects[0].objects) == 2 and condition.objects[1].uri.endswith("products?tenant=acme")
    inner = dag.timetable.timetable
    assert isinstance(inner, ScheduleSetTimetable) and inner.can_be_scheduled and dag.timetable.can_be_scheduled
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert back.timetable.timetable == inner  # the plugin's timetable, inside Airflow's
    run_id = "scheduled__sch-a__2026-11-26T06:00:00+00:00"
    assert back.timetable.generate_run_id(run_type="scheduled", run_after=_utc(), data_interval=None) == run_id
    assert schedule_parameters(dag, run_id) == {"day": "x"}  # a cron run still gets its schedule's parameters


def _utc() -> Any:
    import pendulum

    return pendulum.datetime(2026, 11, 26, 6, tz="UTC")


def test_an_unresolved_data_schedule_does_not_build() -> None:
    definition = downstream(["warehouse.analytics.daily_transactions"])
    with pytest.raises(DefinitionError) as err:
        build_dag(definition, dag_id="acme.summary", connections=CONNS)
    assert err.value.errors[0]["path"] == "schedule.onDatasets[0]"


def test_the_definition_checks_the_schedule() -> None:
    cases = [
        (["a.b.c", "a.b.c"], "schedule.onDatasets"),
        (["a b"], "schedule.onDatasets[0]"),
        ([], "schedule.onDatasets"),
    ]
    for on, path in cases:
        with pytest.raises(DefinitionError) as err:
            validate_definition(downstream(on))
        assert err.value.errors[0]["path"] == path
    with pytest.raises(DefinitionError):
        validate_definition({**downstream(["a.b.c"]), "schedule": {"on_datasets": ["a.b.c"]}})  # the key is onDatasets
