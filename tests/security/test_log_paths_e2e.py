"""Finding 10 (log paths) through a real Airflow: Airflow's task logs open with the absolute paths of its log
files (under AIRFLOW_HOME); no logs endpoint of the service may show them, or any path of Airflow's home."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, run_to_end

pytestmark = pytest.mark.e2e


def test_no_logs_endpoint_shows_airflow_home(tenant: httpx.Client, running: harness.Running) -> None:
    """All tasks' lines, one task's lines, and the Airflow passthrough: lines yes, host paths no."""
    definition = {
        "sources": {"raw": {"type": "postgres", "connection": "sales-database", "table": "public.raw_transactions"}},
        "sinks": {"out": {"type": "postgres", "connection": "warehouse", "table": "qa.logpaths", "input": "raw"}},
        "orchestration": {"retries": 0, "max_active_runs": 1},
    }
    pipeline = create_active(tenant, {"name": "log-paths", "version": "1.0.0", "definition": definition})
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "COMPLETED", done
    run_id, dag_id = done["executionId"], pipeline["dagId"]
    every = tenant.get(f"/v1/pipelines/executions/{run_id}/logs", params={"lines": 10_000}).json()["lines"]
    one = tenant.get(f"/v1/pipelines/executions/{run_id}/logs", params={"task": "sinks.out"}).json()["lines"]
    passthrough = tenant.get(f"/v1/airflow/dags/{dag_id}/runs/{run_id}/tasks/sinks.out/logs").json()["lines"]
    assert every and one and passthrough
    home, data = str(running.stack.home), str(running.settings.data_dir)
    for line in every + one + passthrough:
        assert home not in line and data not in line and "dag_id=" not in line, line
