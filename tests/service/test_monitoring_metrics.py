"""Monitoring metrics: a pipeline's figures over a period (count, success rate, mean and p95 duration computed in
SQL and checked against a Python reference, rows, bytes, cost) with its daily history; the tenant's totals and
report (slowest and most-failing pipelines, bottleneck tasks, failures by task, top errors); periods other than
1h/24h/7d/30d/90d refused naming `period`; other tenants' pipelines invisible; empty periods are zeros. The
per-day rollup (service/monitoring/rollup.py) gives the figures the raw rows give (p95 within 1 %), rebuilds a
day whose executions changed, and replicas take turns building it."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from service.db import utcnow
from service.executions.models import Execution, ExecutionTask
from service.monitoring import rollup
from service.monitoring.metrics_repository import Window
from service.monitoring.models import MetricsDay, MetricsRollup
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
                    submitted_at=submitted,
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


# -- the per-day rollup ------------------------------------------------------------------------------------
def build_rollup(svc: Service) -> int:
    """The metrics-rollup worker's steps until every sealed day is in: how many (tenant, day) they built."""
    return rollup.catch_up(svc.app.state.sessions)


def without_p95(body: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """The body without its p95 figures (approximate from the rollup), and those figures. Mean durations are
    kept to the millisecond (SQLite's julianday arithmetic and Python's may round the other way)."""
    body = {k: v for k, v in body.items() if k not in ("since", "until")}
    p95s = [body["metrics"].pop("p95DurationMs")]
    for slow in body.get("report", {}).get("slowestPipelines", []):
        p95s.append(slow.pop("p95DurationMs"))
    for figures in [body["metrics"], *body.get("report", {}).get("slowestPipelines", [])]:
        if figures.get("avgDurationMs") is not None:
            figures["avgDurationMs"] = pytest.approx(figures["avgDurationMs"], abs=1)
    return body, p95s


def test_the_rollup_gives_the_figures_of_the_raw_rows(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    rnd = random.Random(3)
    second = other(acme, svc, "second")
    for i in range(100):  # every 8 hours over 20 days, then every 2 days to 100 days ago (the rollup's blocks)
        failed = i % 7 == 0
        add_run(
            svc,
            active if i % 3 else second,
            ago=timedelta(hours=8 * i + 1 if i < 60 else 480 + 48 * (i - 60)),
            duration_ms=rnd.randint(1_000, 600_000),
            status="FAILED" if failed else "COMPLETED",
            rows=i,
            size=2 * i,
            error=f"task 'load' failed: error {i % 2}" if failed else None,
            tasks={"extract": ("success", 100 + i), "load": ("failed" if failed else "success", 50 * i)},
            cost="0.5" if i % 2 else None,
        )
    add_run(svc, active, ago=timedelta(days=5), duration_ms=None, status="RUNNING", rows=3)
    queries = [{"period": p} for p in ("7d", "30d", "90d")]
    queries += [{"period": p, "pipelineId": active["pipelineId"]} for p in ("7d", "30d")]
    raw = [metrics(acme, **q) for q in queries]

    assert build_rollup(svc) >= 19  # one (tenant, day) per past day with runs
    sessions = svc.app.state.sessions
    with sessions() as s:
        assert s.scalar(select(MetricsRollup.sealed_through)) == rollup.last_sealable(utcnow())
        assert len(s.scalars(select(MetricsDay)).all()) >= 19
        now = utcnow()
        span = rollup.span_of(s, Window("acme", None, now - timedelta(days=7), now))
        assert span is not None and (span.last - span.first).days >= 4  # the 7d window reads the rollup
        # ... and the 90d window a few blocks of days tiling its sealed days, each rolled up.
        span = rollup.span_of(s, Window("acme", None, now - timedelta(days=90), now))
        assert span is not None
        tiles = rollup.blocks_of(span.first, span.last)
        assert len(tiles) <= 12 and max(days for _, days in tiles) >= 16
        assert sum(days for _, days in tiles) == (span.last - span.first).days + 1
        built = set(s.execute(select(MetricsDay.day, MetricsDay.days).where(MetricsDay.tenant_id == "acme")))
        assert {(start, days) for start, days in tiles if days > 1} <= built  # a run every 2 days at most
    # Another tenant reads the same rollup tables and finds none of acme's days.
    assert metrics(svc.api("globex"), period="90d")["metrics"]["executionCount"] == 0
    for query, before in zip(queries, raw, strict=True):
        after = metrics(acme, **query)
        (b, b95), (a, a95) = without_p95(before), without_p95(after)
        b["metrics"]["totalCostUsd"] = pytest.approx(b["metrics"]["totalCostUsd"], rel=1e-4)  # the live run's
        for key in ("metrics", "report", "history"):
            assert a.get(key) == b.get(key), (query, key)
        assert a == b, query
        assert a95 == [pytest.approx(v, rel=0.01) for v in b95], query


def test_a_sealed_day_is_rebuilt_when_its_executions_change(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    pid = active["pipelineId"]
    ex = add_run(
        svc, active, ago=timedelta(days=3), duration_ms=1_000, status="FAILED", error="x", tasks={"t": ("failed", 5)}
    )
    add_run(svc, active, ago=timedelta(days=4), duration_ms=2_000)
    build_rollup(svc)
    week = metrics(acme, pipelineId=pid, period="7d")["metrics"]
    assert (week["executionCount"], week["failedCount"]) == (2, 1)
    assert metrics(acme, period="7d")["report"]["failuresByTask"][0]["failures"] == 1

    with svc.app.state.sessions.begin() as s:  # re-run and succeeded, as sync writes it (updated_at moves)
        execution = s.get(Execution, ex)
        assert execution is not None
        execution.status, execution.error_message, execution.rows_processed = "COMPLETED", None, 42
    assert build_rollup(svc) >= 1
    week = metrics(acme, pipelineId=pid, period="7d")["metrics"]
    assert (week["executionCount"], week["failedCount"], week["completedCount"]) == (2, 0, 2)
    assert week["totalRowsProcessed"] == 42
    quarter = metrics(acme, period="90d")["metrics"]  # the blocks of days holding the changed day are rebuilt
    assert (quarter["executionCount"], quarter["failedCount"], quarter["totalRowsProcessed"]) == (2, 0, 42)
    # A run recorded late in a sealed day (its insert sets updated_at) is rolled up too.
    add_run(svc, active, ago=timedelta(days=6), duration_ms=3_000)
    assert build_rollup(svc) >= 1
    assert metrics(acme, pipelineId=pid, period="7d")["metrics"]["executionCount"] == 3
    assert metrics(acme, period="90d")["metrics"]["executionCount"] == 3
    # Deleting the pipeline deletes its rolled-up days with its executions.
    assert acme.delete(f"/v1/pipelines/{pid}").status_code == 204
    assert metrics(acme, period="7d")["metrics"]["executionCount"] == 0
    with svc.app.state.sessions() as s:
        assert s.scalars(select(MetricsDay)).all() == []


def test_replicas_take_turns_building_the_rollup(svc: Service, database_url: str, active: dict[str, Any]) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("one process on SQLite: no replicas")
    add_run(svc, active, ago=timedelta(days=2), duration_ms=1_000)
    sessions = svc.app.state.sessions
    with sessions.begin() as other_replica:
        other_replica.execute(select(MetricsRollup).with_for_update())
        assert rollup.step(sessions) == 0  # skipped, not blocked
    assert build_rollup(svc) == 1
    with sessions() as s:
        assert s.scalar(select(MetricsDay.executions)) == 1


@pytest.mark.parametrize("n", [1, 2, 5, 20, 101, 1_000])
def test_the_histogram_percentile_is_within_one_percent(n: int) -> None:
    rnd = random.Random(n)
    values = [rnd.lognormvariate(9, 2) for _ in range(n)]
    histogram: dict[int, int] = {}
    for v in values:
        histogram[rollup.bucket_of(v)] = histogram.get(rollup.bucket_of(v), 0) + 1
    exact = percentile(values, 0.95)
    assert rollup.percentile(histogram, 0.95) == pytest.approx(exact, rel=0.01, abs=0.5)
    assert rollup.percentile({}, 0.95) is None
