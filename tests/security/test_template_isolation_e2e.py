"""Issue 11, finding 1, through a real Airflow: tenant B cannot reach tenant A's connection (nor XComs,
variables, macros) through the templates of its definitions. Refused at create with 400 naming the field;
and where validation is bypassed (a parameter value, a DAG file edited by hand), the workers' renderer
refuses it: A's password never lands anywhere B can read."""

from __future__ import annotations

import ast
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from service import naming
from service.pipelines import dagfile
from tests.e2e import harness
from tests.e2e.conftest import connection_body, create_active, example, query, run_to_end
from tests.pg import pg_url

pytestmark = pytest.mark.e2e


@pytest.fixture
def tenant_a(running: harness.Running, warehouse_db: str) -> tuple[str, str]:
    """Another tenant with a connection whose password is what B tries to steal: (A's conn id, password)."""
    tenant_id = "a" + uuid.uuid4().hex[:10]
    password = "A-secret-" + uuid.uuid4().hex
    body = connection_body("warehouse", warehouse_db, credentials={"username": "postgres", "password": password})
    resp = running.client(tenant=tenant_id).post("/v1/pipelines/connections", json=body)
    assert resp.status_code == 201, resp.text
    return naming.airflow_conn_id(tenant_id, "warehouse"), password


def hostile_bodies(a_conn: str) -> list[tuple[str, dict[str, Any]]]:
    """(JSON path of the hostile field, pipeline body) for each way of reaching past B's own data."""
    cases: list[tuple[str, dict[str, Any]]] = []

    def case(path: str, change: Any) -> None:
        body = example("hostile-" + uuid.uuid4().hex[:6], "iso.hostile")
        change(body["definition"])
        cases.append((f"definition.{path}", body))

    def sql(text: str) -> Any:
        return lambda d: d["transformations"][0].update(sql=f"SELECT '{text}'::text AS leak FROM raw_transactions")

    case("transformations[0].sql", sql(f'{{{{ conn.get("{a_conn}").get_uri() }}}}'))
    xcom = '{{ ti.xcom_pull(dag_id="other.pipeline", task_ids="sources.orders") }}'
    case("sources.raw_transactions.where", lambda d: d["sources"]["raw_transactions"].update(where=f"'{xcom}' = ''"))
    case("transformations[0].sql", sql("{{ var.value.get('anything') }}"))
    case("transformations[0].sql", sql("{{ macros.ds_add(ds, 1) }}"))
    case("transformations[0].sql", sql("{{ params.__class__ }}"))
    python = {"name": "p", "type": "python", "callable": "dag_factory.callables.union_all", "inputs": ["products"]}
    python["options"] = {"source_column": f"{{{{ conn.get('{a_conn}').password }}}}"}
    case("transformations[2].options.source_column", lambda d: d["transformations"].append(python))
    return cases


def test_hostile_templates_are_refused_at_create(tenant: httpx.Client, tenant_a: tuple[str, str]) -> None:
    for path, body in hostile_bodies(tenant_a[0]):
        resp = tenant.post("/v1/pipelines", json=body)
        assert resp.status_code == 400, (path, resp.text)
        assert path in [d["path"] for d in resp.json()["error"]["details"]], (path, resp.text)


def test_a_parameter_value_is_data_not_a_template(
    tenant: httpx.Client, tenant_a: tuple[str, str], warehouse_db: str
) -> None:
    a_conn, password = tenant_a
    schema = "iso_" + uuid.uuid4().hex[:8]
    body = example("param-data", f"{schema}.notes")
    d = body["definition"]
    d["parameters"]["note"] = {"type": "string", "default": "none"}
    d["transformations"][0]["sql"] = (
        "SELECT id AS transaction_id, product_id, amount, created_at::date AS sale_date, "
        "'{{ params.note }}'::text AS note FROM raw_transactions WHERE amount > 0"
    )
    p = create_active(tenant, body)
    value = f'{{{{ conn.get("{a_conn}").get_uri() }}}}'
    done = run_to_end(tenant, p["pipelineId"], {"note": value})
    assert done["status"] == "COMPLETED", done
    assert query(warehouse_db, f"SELECT DISTINCT note FROM {schema}.notes") == [(value,)]
    assert password not in str(query(warehouse_db, f"SELECT * FROM {schema}.notes"))


def test_a_template_that_skipped_validation_is_refused_by_the_worker(
    tenant: httpx.Client, tenant_a: tuple[str, str], running: harness.Running, warehouse_db: str
) -> None:
    """A definition stored before validation knew better (here: its DAG file edited by hand) still
    renders with the restricted environment: the task fails and A's password is nowhere."""
    a_conn, password = tenant_a
    schema = "iso_" + uuid.uuid4().hex[:8]
    p = create_active(tenant, example("hand-edited", f"{schema}.stolen"))
    stolen = (
        "SELECT id AS transaction_id, product_id, amount, created_at::date AS sale_date, "
        f"'{{{{ conn.get(\"{a_conn}\").get_uri() }}}}'::text AS leak FROM raw_transactions WHERE amount > 0"
    )
    _rewrite_dag_file(running, p, lambda d: d["transformations"][0].update(sql=stolen))
    done = run_to_end(tenant, p["pipelineId"])
    with psycopg.connect(pg_url(warehouse_db)) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.stolen",)).fetchone()
        rows = conn.execute(f"SELECT * FROM {schema}.stolen").fetchall() if found and found[0] else []
    assert password not in str(rows)  # before this fix: A's URI, password included, in every row
    assert done["status"] == "FAILED", done
    ti = running.airflow().get(f"/dags/{p['dagId']}/dagRuns/{done['executionId']}/taskInstances").json()
    states = {t["task_id"]: t["state"] for t in ti["task_instances"]}
    assert states["transformations.clean_transactions"] == "failed", states


def _rewrite_dag_file(running: harness.Running, pipeline: dict[str, Any], change: Any) -> None:
    """Rewrite the pipeline's generated DAG file with `change` applied to its definition, and wait until
    Airflow serves the new version (the task's doc shows its SQL)."""
    path = Path(running.settings.dags_dir) / naming.dag_file_name(pipeline["dagId"])
    call = next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call))
    config = json.loads(ast.literal_eval(call.args[0]))
    definition = copy.deepcopy(config["definition"])
    change(definition)
    config["definition"] = definition
    text = dagfile.render(pipeline_id=pipeline["pipelineId"], tenant=pipeline["dagId"].split(".")[0], config=config)
    dagfile.write_atomic(path, text)
    airflow = running.airflow()
    token = airflow.get(f"/dags/{pipeline['dagId']}/details").json()["file_token"]
    task = f"/dags/{pipeline['dagId']}/tasks/transformations.clean_transactions"

    def served() -> str:
        airflow.put(f"/parseDagFile/{token}")
        return str(airflow.get(task).json().get("doc_md"))

    assert "conn.get" in harness.wait_for(served, lambda doc: "conn.get" in doc, timeout=120, interval=3.0)
