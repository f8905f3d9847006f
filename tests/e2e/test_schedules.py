"""Schedules through a real Airflow: Airflow's own scheduler fires the pipelines' schedules (one timetable per
DAG, several crons each with its time zone and parameters), the runs come back as executions with their
schedule's parameters, a disabled schedule fires nothing, the trigger endpoint, and the 400 cases.

The scenarios share one wait: three pipelines are scheduled at once, then the test waits for the first
minute boundaries (every-minute crons) and checks them all."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, example, query

pytestmark = pytest.mark.e2e
SCHEDULES = "/v1/pipelines/schedules"
EXECUTIONS = "/v1/pipelines/executions"
# One retry: on a loaded machine a task's start call to Airflow's API can time out before the task runs.
ORCHESTRATION = {"retries": 1, "retry_delay_seconds": 5, "max_active_runs": 1}
WAIT = 300  # every-minute crons: the first runs come within ~2 min; headroom for a busy machine


def schedule(api: httpx.Client, pipeline_id: str, cron: str, **fields: Any) -> dict[str, Any]:
    body = {"pipelineId": pipeline_id, "cronExpression": cron, "timezone": "UTC", "parameters": {}, **fields}
    resp = api.post(SCHEDULES, json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def executions_of(api: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    resp = api.get(EXECUTIONS, params={"scheduleId": schedule_id, "size": 50})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def completed(api: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    return [e for e in executions_of(api, schedule_id) if e["status"] == "COMPLETED"]


def rendered_where(airflow: httpx.Client, dag_id: str, run_id: str) -> str:
    ti = airflow.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/sources.raw_transactions").json()
    return str((ti.get("rendered_fields") or {}).get("where"))


def diagnose(api: httpx.Client, airflow: httpx.Client, pipelines: list[dict[str, Any]]) -> str:
    lines = []
    for p in pipelines:
        dag = airflow.get(f"/dags/{p['dagId']}").json()
        keys = ("timetable_summary", "next_dagrun_run_after", "next_dagrun_logical_date", "is_paused")
        lines.append(f"{p['dagId']}: " + ", ".join(f"{k}={dag.get(k)}" for k in keys))
        for r in airflow.get(f"/dags/{p['dagId']}/dagRuns").json().get("dag_runs", []):
            lines.append(f"  run {r['dag_run_id']} {r['run_type']} {r['state']}")
        for e in api.get(EXECUTIONS, params={"pipelineId": p["pipelineId"]}).json()["items"]:
            lines.append(f"  execution {e['executionId']} {e['status']} {e['scheduleId']} {e['errorMessage']}")
    return "\n".join(lines)


def test_schedules_fire_in_airflow_with_their_parameters(running: harness.Running, tenant: httpx.Client, sales_db: str,
                                                          warehouse_db: str) -> None:  # fmt: skip
    api, airflow = tenant, running.airflow()
    t0 = time.monotonic()
    one = create_active(api, example("sched-one", "sched.one", quality_checks=[], orchestration=ORCHESTRATION))
    two = create_active(api, example("sched-two", "sched.two", quality_checks=[], orchestration=ORCHESTRATION))
    off = create_active(api, example("sched-off", "sched.off", quality_checks=[], orchestration=ORCHESTRATION))

    # 400s name the field and store nothing.
    for fields, path in (
        ({"cronExpression": "0 25 * * *"}, "cronExpression"),
        ({"timezone": "Atlantis/Capital"}, "timezone"),
        ({"parameters": {"lookback_days": 1}}, "parameters.lookback_days"),
        ({"parameters": {"end_date": "12 Feb"}}, "parameters.end_date"),
    ):
        body = {"pipelineId": one["pipelineId"], "cronExpression": "* * * * *", "timezone": "UTC", **fields}
        resp = api.post(SCHEDULES, json=body)
        assert resp.status_code == 400, resp.text
        assert path in [d["path"] for d in resp.json()["error"]["details"]], resp.text
    assert api.get(SCHEDULES).json()["total"] == 0

    # One schedule; two schedules with different parameters on one pipeline; a disabled one.
    window = {"start_date": "2026-02-10", "end_date": "2026-02-12"}
    s1 = schedule(api, one["pipelineId"], "* * * * *", parameters=window)
    s2a = schedule(api, two["pipelineId"], "* * * * *", parameters={"end_date": "2026-02-03"})
    s2b = schedule(api, two["pipelineId"], "* * * * *", timezone="Asia/Kolkata", parameters={"end_date": "2026-02-08"})
    s3 = schedule(api, off["pipelineId"], "* * * * *", enabled=False, parameters={"end_date": "2026-02-02"})
    daily = schedule(api, off["pipelineId"], "0 6 * * *", timezone="America/New_York")
    assert daily["description"] == "At 06:00 (America/New_York)"
    local = datetime.fromisoformat(daily["nextRunAtLocal"])
    assert (local.hour, local.minute) == (6, 0)
    assert datetime.fromisoformat(daily["nextRunAt"].replace("Z", "+00:00")) == local
    assert s3["nextRunAt"] is None
    for p in (one, two, off):  # republished with the schedules in their DAG files
        harness.wait_for(
            lambda p=p: api.get(f"/v1/pipelines/{p['pipelineId']}").json()["status"], lambda s: s == "ACTIVE", 60
        )

    # The trigger endpoint: an execution now, with the (disabled) schedule's parameters.
    resp = api.post(f"{SCHEDULES}/{s3['scheduleId']}/trigger")
    assert resp.status_code == 202, resp.text
    triggered = resp.json()
    assert triggered["scheduleId"] == s3["scheduleId"]
    assert triggered["parameters"] == {"start_date": "2026-02-01", "end_date": "2026-02-02"}

    def all_done() -> bool:
        return bool(completed(api, s1["scheduleId"]) and completed(api, s2a["scheduleId"])
                    and completed(api, s2b["scheduleId"]))  # fmt: skip

    if not harness.wait_for(all_done, bool, WAIT, 2.0):
        pytest.fail("no completed scheduled run of every schedule:\n" + diagnose(api, airflow, [one, two, off]))
    waited = time.monotonic() - t0
    print(f"\nschedules: first scheduled runs of all three schedules completed {waited:.0f} s after the start")

    # Scheduled runs are executions with their schedule's parameters, and the task rendered them.
    [run1, *_] = completed(api, s1["scheduleId"])
    # Named `scheduled__<scheduleId>__<time>`; a first run may carry Airflow's plain id when the scheduler
    # still held the DAG's previous version: its logical date names the schedule then.
    assert run1["executionId"].startswith("scheduled__") and run1["scheduleId"] == s1["scheduleId"]
    assert run1["parameters"] == window
    assert "'2026-02-10'" in rendered_where(airflow, one["dagId"], run1["executionId"])
    expected = query(
        sales_db,
        "SELECT count(*) FROM raw_transactions WHERE created_at >= '2026-02-10' AND created_at < '2026-02-12' "
        "AND amount > 0",
    )[0][0]
    rows = query(warehouse_db, "SELECT count(*), min(sale_date), max(sale_date) FROM sched.one")[0]
    if not (expected > 0 and rows[0] == expected):  # say which run wrote what
        runs = airflow.get(f"/dags/{one['dagId']}/dagRuns").json()["dag_runs"]
        seen = [(r["dag_run_id"], r["logical_date"], r["state"], rendered_where(airflow, one["dagId"], r["dag_run_id"]))
                for r in runs]  # fmt: skip
        pytest.fail(f"sched.one holds {rows}, expected {expected} rows: {seen}\n" + diagnose(api, airflow, [one]))
    assert str(rows[1]) >= "2026-02-10" and str(rows[2]) < "2026-02-12"

    for s, end in ((s2a, "2026-02-03"), (s2b, "2026-02-08")):
        [run, *_] = completed(api, s["scheduleId"])
        assert run["parameters"] == {"start_date": "2026-02-01", "end_date": end}
        assert f"'{end}'" in rendered_where(airflow, two["dagId"], run["executionId"])

    # The disabled schedule fired nothing: its only execution is the triggered one, and Airflow has no
    # scheduled run of that DAG (its other schedule is daily at 06:00 New York time).
    done = harness.wait_for(
        lambda: api.get(f"{EXECUTIONS}/{triggered['executionId']}").json(), lambda e: e["status"] in TERMINAL, 120
    )
    assert done["status"] == "COMPLETED", done
    assert [e["executionId"] for e in executions_of(api, s3["scheduleId"])] == [triggered["executionId"]]
    runs = airflow.get(f"/dags/{off['dagId']}/dagRuns").json()["dag_runs"]
    assert [r["run_type"] for r in runs] == ["manual"], runs

    # Airflow's view: one timetable per DAG, next run from it.
    dag = airflow.get(f"/dags/{two['dagId']}").json()
    assert dag["timetable_summary"] == "* * * * * UTC, * * * * * Asia/Kolkata", dag
    assert datetime.fromisoformat(dag["next_dagrun_run_after"].replace("Z", "+00:00")) > datetime(
        2026, 1, 1, tzinfo=UTC
    )

    # A run Airflow's scheduler starts while the service is down becomes an execution once it is back.
    running.server.should_exit = True
    running.thread.join(timeout=30)
    try:
        before = {r["dag_run_id"] for r in airflow.get(f"/dags/{one['dagId']}/dagRuns").json()["dag_runs"]}

        def finished_since_stop() -> list[dict[str, Any]]:
            runs = airflow.get(f"/dags/{one['dagId']}/dagRuns").json()["dag_runs"]
            return [r for r in runs if r["dag_run_id"] not in before and r["state"] in ("success", "failed")]

        missed = harness.wait_for(finished_since_stop, bool, WAIT, 2.0)
        assert missed, "Airflow started no scheduled run while the service was down:\n" + diagnose(api, airflow, [one])
    finally:
        running.server, running.thread, running.app = harness.start_service(running.settings)
    run_id = missed[0]["dag_run_id"]
    back = harness.wait_for(
        lambda: api.get(f"{EXECUTIONS}/{run_id}"),
        lambda r: r.status_code == 200 and r.json()["status"] in TERMINAL,
        120,
        1.0,
    )
    assert back.status_code == 200, back.text
    recorded = back.json()
    assert (recorded["scheduleId"], recorded["parameters"], recorded["status"]) == (
        s1["scheduleId"],
        window,
        "COMPLETED",
    )

    # Stop the every-minute schedules.
    for s in (s1, s2a, s2b):
        assert api.delete(f"{SCHEDULES}/{s['scheduleId']}").status_code == 204
