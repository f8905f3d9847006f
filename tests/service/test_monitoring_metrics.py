"""Monitoring metrics: a pipeline's figures over a period (count, success rate, mean and p95 duration computed in
SQL and checked against a Python reference, rows, bytes, cost) with its daily history; the tenant's totals and
report (slowest and most-failing pipelines, bottleneck tasks, failures by task, top errors); periods other than
1h/24h/7d/30d/90d refused naming `period`; other tenants' pipelines invisible; empty periods are zeros."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from service.db import utcnow
from service.executions.models import Execution, ExecutionTask
from tests.service.helpers import Api, Service, example, expect_error

URL = "/v1/pipelines/monitoring/metrics"


def percentile(values: list[float], q: float) -> float:
    """Reference: linear interpolation between the nearest ranks (PostgreSQL's percentile_cont)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def add_run(
    svc: Service,
    pipeline: dict[str, Any],
    *,
    ago: timedelta,
    duration_ms: int | None,
    status: str = "COMPLETED",
    rows: int | None = None,
    size: int | None = None,
    error: str | None = None,
    tasks: dict[str, tuple[str, int]] | None = None,
    cost: str | None = None,
    tenant: str = "acme",
) -> str:
    """An execution as sync leaves it (with its execution_tasks rows), submitted `ago` before now."""
    execution_id = "exec-" + uuid.uuid4().hex[:24]
    submitted = utcnow() - ago
    started = submitted + timedelta(seconds=1)
    finished = None if duration_ms is None else started + timedelta(milliseconds=duration_ms)
    with svc.app.state.sessions.begin() as s:
        s.add(
            Execution(
                id=execution_id,
                tenant_id=tenant,
                pipeline_id=pipeline["pipelineId"],
                pipeline_revision=1,
                dag_id=pipeline["dagId"],
                status=status,
                parameters={},
                submitted=True,
                progress={},
                submitted_at=submitted,
                started_at=started,
                finished_at=finished,
                rows_processed=rows,
                bytes_processed=size,
                error_message=error,
                cost_compute_usd=None if cost is None else Decimal(cost),
                cost_storage_usd=None if cost is None else Decimal(0),
                cost_network_usd=None if cost is None else Decimal(0),
                cost_settled_for=None if cost is None else finished,
            )
        )
        s.flush()
        for task_id, (state, ms) in (tasks or {}).items():
            s.add(
                ExecutionTask(
                    execution_id=execution_id,
                    task_id=task_id,
                    tenant_id=tenant,
                    pipeline_id=pipeline["pipelineId"],
                    state=state,
                    try_number=1,
                    duration_ms=ms,
                    started_at=started,
                    finished_at=finished,
                )
            )
    return execution_id


def metrics(api: Api, **params: Any) -> dict[str, Any]:
    resp = api.get(URL, params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def other(acme: Api, svc: Service, name: str) -> dict[str, Any]:
    created = acme.create_pipeline(example(name))
    svc.publish()
    return acme.pipeline(created["pipelineId"])


def test_pipeline_metrics_match_a_python_reference(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    rnd = random.Random(14)
    pid = active["pipelineId"]
    durations: list[int] = []
    statuses: list[str] = []
    for i in range(37):  # over the last 6 days, oldest first
        ms = rnd.randint(1_000, 900_000)
        status = "FAILED" if i % 5 == 0 else "COMPLETED"
        add_run(svc, active, ago=timedelta(hours=150 - 4 * i), duration_ms=ms, status=status, rows=100 + i, size=7)
        durations.append(ms)
        statuses.append(status)
    add_run(svc, active, ago=timedelta(minutes=10), duration_ms=None, status="RUNNING", rows=5)
    add_run(svc, active, ago=timedelta(minutes=5), duration_ms=4_000, cost="1.250000", rows=1)
    durations.append(4_000)
    add_run(svc, active, ago=timedelta(days=20), duration_ms=9_999_999, cost="100")  # only in 30d and 90d

    week = metrics(acme, pipelineId=pid, period="7d")
    m = week["metrics"]
    assert (week["pipelineId"], week["period"]) == (pid, "7d")
    assert m["executionCount"] == 39 and m["failedCount"] == statuses.count("FAILED")
    assert m["completedCount"] == statuses.count("COMPLETED") + 1
    assert m["successRate"] == round(m["completedCount"] / 38, 4)  # the running one is not finished
    assert m["avgDurationMs"] == pytest.approx(sum(durations) / len(durations), abs=1)
    assert m["p95DurationMs"] == pytest.approx(percentile(durations, 0.95), abs=1)
    assert m["totalRowsProcessed"] == sum(100 + i for i in range(37)) + 5 + 1
    assert m["totalBytesProcessed"] == 37 * 7
    assert m["totalCostUsd"] == 1.25
    history = week["history"]
    assert [d["date"] for d in history] == sorted(d["date"] for d in history) and len(history) >= 6
    assert sum(d["executionCount"] for d in history) == 39
    assert history[-1]["status"] == "COMPLETED" and history[-1]["date"] == utcnow().date().isoformat()
    first = history[0]
    assert first["failedCount"] + first["completedCount"] == first["executionCount"]

    month = metrics(acme, pipelineId=pid, period="30d")["metrics"]
    assert month["executionCount"] == 40 and month["totalCostUsd"] == 101.25
    assert month["p95DurationMs"] == pytest.approx(percentile([*durations, 9_999_999], 0.95), abs=1)
    hour = metrics(acme, pipelineId=pid, period="1h")["metrics"]
    assert (hour["executionCount"], hour["p95DurationMs"], hour["avgDurationMs"]) == (2, 4_000, 4_000)


@pytest.mark.parametrize("n", [1, 2, 3, 20, 21])
def test_p95_interpolates_like_percentile_cont(svc: Service, acme: Api, active: dict[str, Any], n: int) -> None:
    values = [(i * 7919) % 100_003 + 1 for i in range(1, n + 1)]
    for i, ms in enumerate(values):
        add_run(svc, active, ago=timedelta(minutes=i + 1), duration_ms=ms)
    got = metrics(acme, pipelineId=active["pipelineId"], period="24h")["metrics"]["p95DurationMs"]
    assert got == pytest.approx(percentile(values, 0.95), abs=1)
    tenant = metrics(acme, period="24h")
    assert tenant["metrics"]["p95DurationMs"] == got
    assert tenant["report"]["slowestPipelines"][0]["p95DurationMs"] == got


def test_tenant_report(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    slow = other(acme, svc, "slow-one")
    boom = "task 'transformations.clean' failed: division by zero"
    for i in range(4):
        add_run(
            svc,
            active,
            ago=timedelta(hours=i + 1),
            duration_ms=10_000,
            status="FAILED" if i < 3 else "COMPLETED",
            error=boom if i < 3 else None,
            tasks={"extract": ("success", 1_000), "transformations.clean": ("failed" if i < 3 else "success", 8_000)},
        )
    for i in range(2):
        add_run(
            svc,
            slow,
            ago=timedelta(hours=i + 1),
            duration_ms=600_000,
            status="FAILED" if i == 0 else "COMPLETED",
            error="task 'sinks.x' failed: disk full" if i == 0 else None,
            tasks={"extract": ("success", 500_000), "sinks.x": ("failed" if i == 0 else "success", 50_000)},
        )
    body = metrics(acme, period="24h")
    assert "pipelineId" not in body and "history" not in body
    assert body["metrics"]["executionCount"] == 6 and body["metrics"]["successRate"] == round(2 / 6, 4)
    report = body["report"]
    assert [p["pipelineId"] for p in report["slowestPipelines"]] == [slow["pipelineId"], active["pipelineId"]]
    assert report["slowestPipelines"][0]["name"] == "slow-one"
    failing = report["mostFailingPipelines"]
    assert [(p["pipelineId"], p["failedCount"], p["failureRate"]) for p in failing] == [
        (active["pipelineId"], 3, 0.75),
        (slow["pipelineId"], 1, 0.5),
    ]
    bottlenecks = {b["pipelineId"]: b for b in report["bottlenecks"]}
    assert bottlenecks[active["pipelineId"]]["taskId"] == "transformations.clean"
    assert bottlenecks[active["pipelineId"]]["share"] == round(8 / 9, 4)
    assert bottlenecks[active["pipelineId"]]["avgDurationMs"] == 8_000
    assert bottlenecks[slow["pipelineId"]]["taskId"] == "extract"
    assert [b["pipelineId"] for b in report["bottlenecks"]][0] == slow["pipelineId"]  # the most time first
    assert [(f["pipelineId"], f["taskId"], f["failures"]) for f in report["failuresByTask"]] == [
        (active["pipelineId"], "transformations.clean", 3),
        (slow["pipelineId"], "sinks.x", 1),
    ]
    errors = report["topErrors"]
    assert [(e["message"], e["count"], e["pipelineCount"]) for e in errors] == [
        (boom, 3, 1),
        ("task 'sinks.x' failed: disk full", 1, 1),
    ]
    assert datetime.fromisoformat(errors[0]["lastSeenAt"]) > utcnow() - timedelta(hours=1, minutes=1)


def test_empty_period_is_zeros_not_an_error(acme: Api, active: dict[str, Any]) -> None:
    body = metrics(acme, pipelineId=active["pipelineId"], period="90d")
    assert body["history"] == []
    assert body["metrics"] == {
        "executionCount": 0,
        "completedCount": 0,
        "failedCount": 0,
        "successRate": None,
        "avgDurationMs": None,
        "p95DurationMs": None,
        "totalRowsProcessed": 0,
        "totalBytesProcessed": 0,
        "totalCostUsd": 0.0,
    }
    report = metrics(acme, period="1h")["report"]
    assert all(v == [] for v in report.values()), report


@pytest.mark.parametrize("period", ["week", "", "7D", "0d", "1d", "24h "])
def test_a_bad_period_is_a_400_naming_period(acme: Api, active: dict[str, Any], period: str) -> None:
    expect_error(acme.get(URL, params={"period": period}), 400, "validation_error", "period")
    resp = acme.get(URL, params={"period": period, "pipelineId": active["pipelineId"]})
    expect_error(resp, 400, "validation_error", "period")
    expect_error(acme.get(URL, params={"period": period, "pipelineId": "nope"}), 400, "validation_error", "period")


def test_other_tenants_and_unknown_pipelines_are_404_and_viewers_read(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    add_run(svc, active, ago=timedelta(minutes=3), duration_ms=1_000, status="FAILED", error="secret-ish")
    for pipeline_id in ("nope", "x" * 65, "a\x00b"):
        expect_error(acme.get(URL, params={"pipelineId": pipeline_id}), 404, "not_found")
    stranger = svc.api("globex")
    expect_error(stranger.get(URL, params={"pipelineId": active["pipelineId"]}), 404, "not_found")
    theirs = metrics(stranger, period="90d")
    assert theirs["metrics"]["executionCount"] == 0 and all(v == [] for v in theirs["report"].values())
    viewer = svc.api("acme", roles=("viewer",))
    assert metrics(viewer, pipelineId=active["pipelineId"])["metrics"]["executionCount"] == 1
    assert metrics(viewer)["report"]["topErrors"][0]["message"] == "secret-ish"
