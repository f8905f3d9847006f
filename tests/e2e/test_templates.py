"""Every shipped template, end to end through a real Airflow on the local PostgreSQL: created with its default
parameters through POST /v1/pipelines/templates/{id}/create, executed on its industry's sample data
(templates/industries/<industry>/sample.sql), rows landed, checks passed, compliance controls visible in the
loaded data. All templates are created first, then executed WINDOW at a time (LocalExecutor runs them in parallel).

With other pytest sessions on the same machine, pass `--basetemp=<own dir>`: pytest deletes all but the last
three basetemp folders, and with them the Airflow home of a session still running."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
import pytest

from service.templates import catalog
from tests.e2e import harness
from tests.e2e.conftest import REPO, TERMINAL, connection_body, query, wait_status
from tests.pg import pg_url

pytestmark = pytest.mark.e2e

TEMPLATES = catalog.shipped()
# PIPELINE_TEST_TEMPLATES=fintech,retail/inventory_snapshot runs a subset (ids or industries); default: all.
_ONLY = [s.strip() for s in os.environ.get("PIPELINE_TEST_TEMPLATES", "").split(",") if s.strip()]
SELECTED = sorted(t for t in TEMPLATES if not _ONLY or t in _ONLY or t.split("/")[0] in _ONLY)
# How long all executions may take: a few minutes alone on 2 cores, far more on a machine shared with others.
DEADLINE_S = float(os.environ.get("PIPELINE_TEST_TEMPLATE_DEADLINE", "2400"))
# Executions in flight at once (the test's throughput knob on a small machine).
WINDOW = int(os.environ.get("PIPELINE_TEST_TEMPLATE_WINDOW", "8"))
SAMPLES = sorted((REPO / "templates" / "industries").glob("*/sample.sql"))


def pipeline_name(template_id: str) -> str:
    return "tpl-" + template_id.replace("/", "-").replace("_", "-")


@pytest.fixture(scope="module")
def template_dbs(make_database) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    source, warehouse = make_database("tpl_source"), make_database("tpl_warehouse")
    with psycopg.connect(pg_url(source), autocommit=True) as conn:
        for sample in SAMPLES:
            conn.execute(sample.read_text())
    return source, warehouse


@pytest.fixture(scope="module")
def runs(running: harness.Running, template_dbs: tuple[str, str]) -> dict[str, Any]:
    """Creates a pipeline from every template, executes them all at once, waits for all of them."""
    source, warehouse = template_dbs
    api = running.client(tenant="tpl" + str(int(time.time()))[-6:])
    for name, db in (("source-db", source), ("warehouse", warehouse)):
        resp = api.post("/v1/pipelines/connections", json=connection_body(name, db))
        assert resp.status_code == 201, resp.text
    started = time.monotonic()
    created = {}
    for template_id in SELECTED:
        resp = api.post(
            f"/v1/pipelines/templates/{template_id}/create", json={"pipelineName": pipeline_name(template_id)}
        )
        assert resp.status_code == 201, resp.text
        created[template_id] = resp.json()
    pipelines = {tid: wait_status(api, p["pipelineId"], {"ACTIVE", "INVALID"}, 240) for tid, p in created.items()}
    active_s = time.monotonic() - started
    for template_id, pipeline in pipelines.items():
        assert pipeline["status"] == "ACTIVE", (template_id, pipeline["statusDetail"])
    done = execute_all(api, pipelines)
    total_s = time.monotonic() - started
    print(f"\n{len(SELECTED)} templates: ACTIVE after {active_s:.1f} s, executions ended after {total_s:.1f} s")
    return {"source": source, "warehouse": warehouse, "pipelines": pipelines, "executions": done}


def execute_all(api: Any, pipelines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Executes every pipeline, WINDOW at a time (LocalExecutor runs their tasks in parallel): on 2 cores,
    ~240 task processes started at once starve Airflow's API server (tasks fail with ReadTimeout)."""
    waiting, running, done = list(pipelines), {}, {}
    deadline = time.monotonic() + DEADLINE_S
    while (waiting or running) and time.monotonic() < deadline:
        while waiting and len(running) < WINDOW:
            template_id = waiting.pop(0)
            resp = api.post(f"/v1/pipelines/{pipelines[template_id]['pipelineId']}/execute", json={"parameters": {}})
            assert resp.status_code == 202, resp.text
            running[template_id] = resp.json()["executionId"]
        time.sleep(2.0)
        for template_id, execution_id in list(running.items()):
            execution = api.get(f"/v1/pipelines/executions/{execution_id}").json()
            if execution["status"] in TERMINAL:
                done[template_id] = execution
                del running[template_id]
    assert not waiting and not running, f"still running after {DEADLINE_S:.0f} s: {sorted(running)}"
    return done


def _rendered(template_id: str) -> dict[str, Any]:
    definition, _ = catalog.render(TEMPLATES[template_id])
    return definition


@pytest.mark.parametrize("template_id", SELECTED)
def test_template_runs_with_default_parameters(runs: dict[str, Any], template_id: str) -> None:
    execution = runs["executions"][template_id]
    assert execution["status"] == "COMPLETED", (execution["errorMessage"], execution["tasks"])
    checks = [t for t in execution["tasks"] if t["taskId"].startswith("quality.")]
    assert checks and all(t["state"] == "success" for t in checks), checks
    for result in execution.get("qualityResults") or []:
        assert result["success"] or result["severity"] == "warn", result
    definition = _rendered(template_id)
    pipeline = runs["pipelines"][template_id]
    assert pipeline["template"] == {"id": template_id, "version": "1.0.0", "latestVersion": "1.0.0", "behind": False}
    assert pipeline["definition"] == definition
    for name, sink in definition["sinks"].items():
        (count,) = query(runs["warehouse"], f"SELECT count(*) FROM {sink['table']}")[0]
        assert count > 0, (template_id, name, sink["table"])


def _column(runs: dict[str, Any], template_id: str, sink: str, column: str) -> list[Any]:
    if template_id not in runs["executions"]:
        pytest.skip(f"{template_id} is not selected (PIPELINE_TEST_TEMPLATES)")
    table = _rendered(template_id)["sinks"][sink]["table"]
    return [r[0] for r in query(runs["warehouse"], f"SELECT {column} FROM {table}")]


def test_pci_card_numbers_are_masked(runs: dict[str, Any]) -> None:
    cards = _column(runs, "fintech/payment_processing", "payment_events", "card_number")
    assert cards and all(c.startswith("************") and len(c) == 16 for c in cards), cards[:3]
    pans = {r[0] for r in query(runs["source"], "SELECT card_number FROM fintech.payments")}
    assert pans and not pans & set(cards)


def test_hipaa_phi_is_hashed(runs: dict[str, Any]) -> None:
    ssns = _column(runs, "healthcare/patient_encounters", "patient_encounters", "ssn")
    names = set(_column(runs, "healthcare/patient_encounters", "patient_encounters", "full_name"))
    assert ssns and all(len(s) == 64 and "-" not in s for s in ssns)
    assert names == {"[REDACTED]"}


def test_gdpr_erased_subject_is_not_loaded_and_email_is_pseudonymised(runs: dict[str, Any]) -> None:
    customers = _column(runs, "ecommerce/customer_ltv", "customer_ltv", "customer_id")
    assert customers and 3 not in customers  # customer 3 is in gdpr.erasure_requests (sample data)
    emails = _column(runs, "ecommerce/customer_ltv", "customer_ltv", "email")
    assert all("@" not in e for e in emails)


def test_sox_audit_record_per_run(runs: dict[str, Any]) -> None:
    if "fintech/payment_processing" not in runs["executions"]:
        pytest.skip("fintech/payment_processing is not selected (PIPELINE_TEST_TEMPLATES)")
    execution_id = runs["executions"]["fintech/payment_processing"]["executionId"]
    table = _rendered("fintech/payment_processing")["sinks"]["sox_audit"]["table"]
    rows = query(runs["warehouse"], f"SELECT run_id, template_id, sink, row_count FROM {table}")
    assert rows == [(execution_id, "fintech/payment_processing", "payment_events", rows[0][3])]
    (loaded,) = query(runs["warehouse"], "SELECT count(*) FROM fintech_dw.payment_events")[0]
    assert rows[0][3] == loaded


def test_every_industry_has_sample_data() -> None:
    industries = {t.industry for t in TEMPLATES.values()}
    assert {p.parent.name for p in SAMPLES} == industries
