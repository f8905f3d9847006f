"""The example end to end on the distributed profile, and a Celery worker killed mid-task."""

from __future__ import annotations

import copy
import time
from typing import Any

import boto3
import psutil
import pytest

from tests.e2e.conftest import TERMINAL, create_active, example, query, run_to_end
from tests.e2e.harness import wait_for
from tests.reliability.conftest import Cluster

pytestmark = pytest.mark.e2e


def bucket_keys(cluster: Cluster, prefix: str) -> list[str]:
    s3 = cluster.profile.s3()
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_example_runs_on_celery_from_the_s3_bundle_through_either_replica(cluster: Cluster) -> None:
    tenant = cluster.tenant()
    first, second = cluster.api(0, tenant), cluster.api(1, tenant)
    started = time.monotonic()
    pipeline = create_active(first, example("dist-etl", "analytics.dist_etl"))
    print(f"create -> ACTIVE on the distributed profile: {time.monotonic() - started:.2f} s")
    dag_id = pipeline["dagId"]
    # The DAG file is published to the bucket (the S3 DAG bundle), nowhere else.
    assert f"dags/pipeline_{dag_id}.py" in bucket_keys(cluster, "dags/")
    copies = [p.relative_to(cluster.profile.data_dir) for p in cluster.profile.data_dir.rglob(f"*{dag_id}*.py")]
    assert all(p.parts[:2] == ("airflow", "dag_bundles") for p in copies), copies  # Airflow's downloads only

    started = time.monotonic()
    done = run_to_end(second, pipeline["pipelineId"])  # executed through the other replica
    print(f"execute -> COMPLETED on the distributed profile: {time.monotonic() - started:.2f} s")
    assert done["status"] == "COMPLETED", done
    execution_id = done["executionId"]
    assert first.get(f"/v1/pipelines/executions/{execution_id}").json()["status"] == "COMPLETED"
    assert query(cluster.warehouse_db, "SELECT count(*) FROM analytics.dist_etl")[0][0] > 0

    with cluster.airflow() as airflow:
        runs = airflow.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]
        assert [r["dag_run_id"] for r in runs] == [execution_id]  # submitted once
    # Task logs went to the bucket (remote logging) and the service reads them back through Airflow.
    logs = bucket_keys(cluster, f"logs/dag_id={dag_id}/run_id={execution_id}/")
    assert any("task_id=sinks.daily_transactions" in k for k in logs), logs
    resp = second.get(f"/v1/pipelines/executions/{execution_id}/logs", params={"task": "sinks.daily_transactions"})
    assert resp.status_code == 200 and resp.json()["lines"], resp.text


def slow_example(name: str, table: str, seconds: int) -> dict[str, Any]:
    """The example with a transformation that sleeps `seconds` in the database, one retry a second later."""
    body = example(name, table)
    definition = body["definition"]
    definition["orchestration"] = {**definition["orchestration"], "retries": 1, "retry_delay_seconds": 1}
    steps = copy.deepcopy(definition["transformations"])
    steps[0]["sql"] = (
        "SELECT id AS transaction_id, product_id, amount, created_at::date AS sale_date "
        f"FROM raw_transactions, (SELECT pg_sleep({seconds})) AS pause WHERE amount > 0"
    )
    steps[0]["materialize"] = "table"
    definition["transformations"] = steps
    return body


def worker_of(cluster: Cluster, pid: int) -> str | None:
    """The Celery worker that started the task process `pid` (its ancestor: the workers run on this machine)."""
    workers = {proc.pid: name for name, proc in cluster.profile.airflow().procs.items() if name.startswith("worker")}
    try:
        ancestors = [p.pid for p in psutil.Process(pid).parents()]
    except psutil.NoSuchProcess:
        return None
    return next((workers[a] for a in ancestors if a in workers), None)


def test_a_celery_worker_killed_mid_task_is_retried_on_the_other_and_the_run_completes(cluster: Cluster) -> None:
    tenant = cluster.tenant()
    api = cluster.api(0, tenant)
    pipeline = create_active(api, slow_example("slow-etl", "analytics.slow_etl", 25))
    resp = api.post(f"/v1/pipelines/{pipeline['pipelineId']}/execute", json={"parameters": {}})
    assert resp.status_code == 202, resp.text
    execution_id = resp.json()["executionId"]
    dag_id = pipeline["dagId"]

    with cluster.airflow() as airflow:

        def sleeping() -> dict[str, Any] | None:
            tis = airflow.get(f"/dags/{dag_id}/dagRuns/{execution_id}/taskInstances").json()["task_instances"]
            return next(
                (t for t in tis if t["task_id"] == "transformations.clean_transactions" and t["state"] == "running"),
                None,
            )

        ti = wait_for(sleeping, lambda t: t is not None and t.get("pid"), timeout=180)
        assert ti is not None and ti["pid"], "the slow task never ran"
        time.sleep(3)  # well inside its 25 s sleep
        victim = worker_of(cluster, ti["pid"])
        assert victim is not None, f"no worker holds task pid {ti['pid']}"
        killed_at = time.monotonic()
        cluster.profile.airflow().kill_component(victim)
        try:
            done = wait_for(
                lambda: api.get(f"/v1/pipelines/executions/{execution_id}").json(),
                lambda e: e["status"] in TERMINAL,
                timeout=300,
                interval=2,
            )
            print(f"worker {victim} killed: the run completed {time.monotonic() - killed_at:.1f} s later")
            assert done["status"] == "COMPLETED", done
            task = next(t for t in done["tasks"] if t["taskId"] == "transformations.clean_transactions")
            assert task["tryNumber"] == 2 and task["state"] == "success", task  # the service reports the retry
            retried = airflow.get(f"/dags/{dag_id}/dagRuns/{execution_id}/taskInstances/{task['taskId']}").json()
            assert retried["try_number"] == 2
            runs = airflow.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]
            assert [r["dag_run_id"] for r in runs] == [execution_id]
        finally:  # the retry ran while the victim was dead: on the other worker
            cluster.profile.airflow().start_component(victim)
