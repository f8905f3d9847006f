"""Cost and budgets: the rate card, an execution's cost from its task snapshot and the bytes of its OpenLineage
datasets, a pipeline's cost over a period with its trend, monthly budgets refusing executions (409) unless an
admin overrides them, and another tenant seeing none of it."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from service.config import RateCard, Settings
from service.cost import service as cost_service
from service.cost.service import host_of, month_start, slope, trend_of
from service.db import utcnow
from service.executions.models import Execution
from service.lineage.models import LineageDataset, LineageEvent
from tests.service.helpers import Api, Service, example, expect_error

RATES = RateCard(
    compute_usd_per_task_second=0.001,
    compute_usd_per_task_second_by_pool={"big": 0.01},
    compute_usd_per_task_second_by_queue={"gpu": 0.1, "default": 0.002},
    storage_usd_per_gb=0.05,
    network_usd_per_gb=0.02,
)
SALES, WAREHOUSE = "postgres://sales.internal:5432", "postgres://warehouse.internal:5432"
GB = 10**9


@pytest.fixture(autouse=True)
def rates(svc: Service) -> RateCard:
    svc.settings.cost_rate_card = RATES
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0
    return RATES


def add_execution(
    svc: Service,
    pipeline: dict[str, Any],
    tasks: list[dict[str, Any]],
    *,
    status: str = "COMPLETED",
    submitted_at: datetime | None = None,
    tenant: str = "acme",
) -> str:
    """An execution row as the reconciler leaves it (task snapshot in progress["tasks"])."""
    execution_id = "exec-" + uuid.uuid4().hex[:24]
    submitted_at = submitted_at or utcnow()
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
                submitted=False,
                progress={"tasks": tasks},
                submitted_at=submitted_at,
                finished_at=None if status == "RUNNING" else submitted_at + timedelta(minutes=5),
            )
        )
    return execution_id


def task(task_id: str, seconds: float | None, **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "state": "success", "duration_ms": None if seconds is None else int(seconds * 1000)} | (
        fields
    )


def add_datasets(
    svc: Service,
    pipeline: dict[str, Any],
    execution_id: str,
    task_id: str,
    datasets: list[tuple[str, str, str, int | None]],
    *,
    tenant: str = "acme",
    event_type: str = "COMPLETE",
) -> None:
    """One task event with its (direction, namespace, name, bytes) datasets, as the lineage receiver stores it."""
    with svc.app.state.sessions.begin() as s:
        event = LineageEvent(
            dedup_key=uuid.uuid4().hex,
            tenant_id=tenant,
            pipeline_id=pipeline["pipelineId"],
            execution_id=execution_id,
            ol_run_id=str(uuid.uuid4()),
            event_type=event_type,
            event_time=utcnow(),
            job_namespace="airflow",
            job_name=f"{pipeline['dagId']}.{task_id}",
            task_id=task_id,
            payload="{}",
        )
        s.add(event)
        s.flush()
        for direction, namespace, name, size in datasets:
            s.add(
                LineageDataset(
                    event_id=event.id,
                    tenant_id=tenant,
                    pipeline_id=pipeline["pipelineId"],
                    execution_id=execution_id,
                    task_id=task_id,
                    direction=direction,
                    namespace=namespace,
                    name=name,
                    bytes=size,
                )
            )


def cost_of(api: Api, execution_id: str) -> dict[str, Any]:
    resp = api.get(f"/v1/pipelines/executions/{execution_id}/cost")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def micro(value: float) -> int:
    """An amount in micro-dollars (the API's precision), to compare sums exactly."""
    return int(Decimal(repr(value)) * 1_000_000)


def assert_adds_up(cost: dict[str, Any]) -> None:
    parts = cost["breakdown"]
    assert micro(cost["totalCostUsd"]) == sum(micro(v) for v in parts.values()), cost
    for part in ("compute", "storage", "network"):
        if "tasks" in cost:
            assert micro(parts[part]) == sum(micro(t[f"{part}Usd"]) for t in cost["tasks"]), (part, cost)
        assert parts[part] >= 0


# -- the rate card -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "card, field",
    [
        ({"computeUsdPerTaskSecond": -0.1}, "computeUsdPerTaskSecond"),
        ({"storageUsdPerGb": -1}, "storageUsdPerGb"),
        ({"networkUsdPerGb": "cheap"}, "networkUsdPerGb"),
        ({"computeUsdPerTaskSecondByPool": {"big": -1}}, "computeUsdPerTaskSecondByPool"),
        ({"computeUsdPerTaskSecondByQueue": {"q": float("inf")}}, "computeUsdPerTaskSecondByQueue"),
        ({"storageUsdPerTb": 1}, "storageUsdPerTb"),
    ],
    ids=["negative compute", "negative storage", "not a number", "negative pool", "infinite queue", "unknown key"],
)
def test_a_bad_rate_card_stops_the_settings_naming_the_rate(
    monkeypatch: pytest.MonkeyPatch, card: dict[str, Any], field: str
) -> None:
    import json

    monkeypatch.setenv("PIPELINE_COST_RATE_CARD", json.dumps(card))
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert f"cost_rate_card.{field}" in str(raised.value)


def test_the_rate_card_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_COST_RATE_CARD", '{"storageUsdPerGb": 0.5, "computeUsdPerTaskSecondByPool": {"x": 2}}')
    card = Settings().cost_rate_card
    assert (card.storage_usd_per_gb, card.compute_usd_per_task_second_by_pool) == (0.5, {"x": 2.0})
    assert card.compute_usd_per_task_second == RateCard().compute_usd_per_task_second  # the default stays
    assert card.compute_rate("x", "any") == 2.0 and card.compute_rate("other", None) == card.compute_usd_per_task_second


def test_pool_rate_wins_over_queue_rate() -> None:
    assert RATES.compute_rate("big", "gpu") == 0.01
    assert RATES.compute_rate("default_pool", "gpu") == 0.1
    assert RATES.compute_rate(None, None) == 0.001


def test_rate_card_is_shown_to_any_role(svc: Service) -> None:
    resp = svc.api("acme", roles=("viewer",)).get("/v1/cost/rate-card")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "computeUsdPerTaskSecond": 0.001,
        "computeUsdPerTaskSecondByPool": {"big": 0.01},
        "computeUsdPerTaskSecondByQueue": {"gpu": 0.1, "default": 0.002},
        "storageUsdPerGb": 0.05,
        "networkUsdPerGb": 0.02,
    }


# -- an execution's cost -------------------------------------------------------------------------------
def test_hosts_of_namespaces() -> None:
    assert host_of("postgres://User@DB1:5432") == "postgres://db1:5432"
    assert host_of("postgres://db1:5432") != host_of("postgres://db1:5433")
    assert host_of("s3://bucket") == "s3://bucket" and host_of("file") == "file"


def test_execution_cost_from_task_time_and_lineage_bytes(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    ex = add_execution(
        svc,
        active,
        [
            task("sources.raw_transactions", 2, pool="default_pool", queue="default"),  # queue rate 0.002
            task("transformations.clean_transactions", 1.5, pool="big", queue="default"),  # pool rate 0.01
            task("quality.daily_transactions", None, state="skipped"),
        ],
    )
    # The source reads the sales host and writes staging on the warehouse host: its output moved.
    add_datasets(
        svc,
        active,
        ex,
        "sources.raw_transactions",
        [("input", SALES, "sales.public.raw", None), ("output", WAREHOUSE, "wh.staging.raw", 2 * GB)],
    )
    # START names the same output without statistics: it must not count twice, nor hide the size.
    add_datasets(svc, active, ex, "sources.raw_transactions", [("output", WAREHOUSE, "wh.staging.raw", None)],
                 event_type="START")  # fmt: skip
    add_datasets(
        svc,
        active,
        ex,
        "transformations.clean_transactions",
        [("input", WAREHOUSE, "wh.staging.raw", None), ("output", WAREHOUSE, "wh.staging.clean", GB // 2)],
    )
    # Another tenant's row under the same run id is not this execution's.
    add_datasets(svc, active, ex, "sources.raw_transactions", [("output", SALES, "x", 100 * GB)], tenant="other")

    cost = cost_of(acme, ex)
    tasks = {t["taskId"]: t for t in cost["tasks"]}
    source, clean, check = (
        tasks["sources.raw_transactions"],
        tasks["transformations.clean_transactions"],
        tasks["quality.daily_transactions"],
    )
    assert (source["durationSeconds"], source["computeUsd"]) == (2.0, 0.004)
    assert (source["bytesWritten"], source["bytesMoved"]) == (2 * GB, 2 * GB)
    assert (source["storageUsd"], source["networkUsd"]) == (0.1, 0.04)
    assert (source["pool"], source["queue"]) == ("default_pool", "default")
    assert (clean["computeUsd"], clean["storageUsd"], clean["networkUsd"]) == (0.015, 0.025, 0.0)
    assert (clean["bytesWritten"], clean["bytesMoved"]) == (GB // 2, 0)
    assert (check["durationSeconds"], check["computeUsd"]) == (0.0, 0.0)
    assert cost["breakdown"] == {"compute": 0.019, "storage": 0.125, "network": 0.04}
    assert cost["totalCostUsd"] == 0.184
    assert (cost["executionId"], cost["pipelineId"], cost["status"], cost["live"]) == (
        ex,
        active["pipelineId"],
        "COMPLETED",
        False,
    )
    assert cost["rates"]["computeUsdPerTaskSecondByPool"] == {"big": 0.01}
    assert_adds_up(cost)


def test_totals_are_the_sums_of_the_rounded_parts(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    # Tasks of 1..7 ms at 0.0013 USD/s: 1.3, 2.6, ... 9.1 micro-USD, shown as 1, 3, 4, 5, 7, 8, 9 (sum 37); the
    # full-precision sum (36.4) would round to 36 and not match the parts shown.
    svc.settings.cost_rate_card = RateCard(compute_usd_per_task_second=0.0013)
    ex = add_execution(svc, active, [task(f"t{i}", 0.001 * (i + 1)) for i in range(7)])
    cost = cost_of(acme, ex)
    assert_adds_up(cost)
    assert [micro(t["computeUsd"]) for t in cost["tasks"]] == [1, 3, 4, 5, 7, 8, 9]
    assert (micro(cost["breakdown"]["compute"]), micro(cost["totalCostUsd"])) == (37, 37)


def test_a_running_execution_costs_live(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    execution = acme.execute(active["pipelineId"])
    svc.dispatch()
    svc.fake.set_run(execution["dagId"], execution["executionId"], "running", {"prepare_staging": "running"})

    first = cost_of(acme, execution["executionId"])
    time.sleep(0.3)
    second = cost_of(acme, execution["executionId"])

    assert first["live"] and second["live"] and second["status"] == "RUNNING"
    setup = [t for t in second["tasks"] if t["taskId"] == "prepare_staging"][0]
    earlier = [t for t in first["tasks"] if t["taskId"] == "prepare_staging"][0]
    assert setup["durationSeconds"] >= earlier["durationSeconds"] + 0.25
    assert second["breakdown"]["compute"] > first["breakdown"]["compute"] > 0
    assert_adds_up(second)


def test_a_cancelled_task_counts_up_to_the_cancel(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    started = utcnow() - timedelta(minutes=10)
    ex = add_execution(
        svc,
        active,
        [{"task_id": "t", "state": "running", "started_at": started.isoformat(), "duration_ms": None}],
        status="CANCELLED",
        submitted_at=started,
    )
    cost = cost_of(acme, ex)  # finished_at = submitted + 5 min
    assert cost["tasks"][0]["durationSeconds"] == 300.0 and cost["live"] is False


# -- a pipeline's cost over a period -------------------------------------------------------------------
def test_slope_and_trend() -> None:
    assert slope([1, 2, 3, 4]) == pytest.approx(1.0)
    assert slope([5]) == 0.0 and slope([2, 2, 2]) == 0.0
    # 30 days, mean 1 USD/day: stable while |slope| x 30 < 0.1
    assert trend_of(0.003, 30, 30.0) == "stable"
    assert trend_of(0.004, 30, 30.0) == "rising"
    assert trend_of(-0.004, 30, 30.0) == "falling"
    assert trend_of(0.0, 30, 0.0) == "stable"


def test_pipeline_cost_over_a_period(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    now = utcnow()
    # Rising: one execution 6 days ago (10 s), one 1 day ago (100 s); one 80 days ago is outside 7d.
    first = add_execution(svc, active, [task("a", 10)], submitted_at=now - timedelta(days=6, hours=1))
    second = add_execution(svc, active, [task("a", 100)], submitted_at=now - timedelta(days=1, hours=1))
    add_execution(svc, active, [task("a", 1000)], submitted_at=now - timedelta(days=80))
    resp = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost", params={"period": "7d"})
    assert resp.status_code == 200, resp.text
    cost = resp.json()
    assert (cost["pipelineId"], cost["period"], cost["executionCount"]) == (active["pipelineId"], "7d", 2)
    assert cost["breakdown"] == {"compute": 0.11, "storage": 0.0, "network": 0.0}
    assert (cost["totalCostUsd"], cost["costPerExecution"]) == (0.11, 0.055)
    # The sum of the executions' costs as each shows it.
    assert micro(cost["totalCostUsd"]) == sum(micro(cost_of(acme, e)["totalCostUsd"]) for e in (first, second))
    assert cost["trend"] == "rising" and cost["trendSlopeUsdPerDay"] > 0 and cost["trendThreshold"] == 0.1
    assert_adds_up(cost)
    month = month_start(now)
    assert cost["monthToDateUsd"] == sum(
        c for c, days in ((0.01, 6), (0.1, 1)) if now - timedelta(days=days, hours=1) >= month
    )
    left = (month_start(month + timedelta(days=32)) - now) / timedelta(days=1)
    assert cost["projectedMonthUsd"] == pytest.approx(cost["monthToDateUsd"] + 0.11 / 7 * left, abs=2e-6)

    ninety = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost", params={"period": "90d"}).json()
    assert (ninety["executionCount"], ninety["totalCostUsd"]) == (3, 1.11)
    assert ninety["trend"] == "falling"  # the 1,000 s run was early in the period


@pytest.mark.parametrize("named", [500, 1])
def test_unsettled_runs_cost_the_same_named_or_not(
    svc: Service, acme: Api, active: dict[str, Any], monkeypatch: pytest.MonkeyPatch, named: int
) -> None:
    """The unsettled runs are looked up by id when few (NAMED_IDS_MAX), by the query itself when many."""
    monkeypatch.setattr(cost_service, "NAMED_IDS_MAX", named)
    now = utcnow()
    for seconds in (10, 20, 30):  # unsettled: their cost is computed live
        add_execution(svc, active, [task("a", seconds)], submitted_at=now - timedelta(hours=seconds))
    params = {"period": "7d", "pipelineId": active["pipelineId"]}
    body = acme.get("/v1/pipelines/monitoring/metrics", params=params).json()
    assert body["metrics"]["totalCostUsd"] == 0.06
    assert (
        acme.get(f"/v1/pipelines/{active['pipelineId']}/cost", params={"period": "7d"}).json()["totalCostUsd"] == 0.06
    )


def test_pipeline_cost_trend_is_stable_for_a_steady_cost(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    now = utcnow()
    for day in range(7):
        add_execution(svc, active, [task("a", 30)], submitted_at=now - timedelta(days=day, hours=1))
    cost = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost?period=7d").json()
    assert (cost["trend"], cost["executionCount"], cost["totalCostUsd"]) == ("stable", 7, 0.21)


def test_pipeline_cost_without_executions_is_zero(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    resp = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost?period=1d")
    assert resp.status_code == 200, resp.text
    cost = resp.json()
    assert (cost["totalCostUsd"], cost["costPerExecution"], cost["executionCount"], cost["trend"]) == (
        0.0,
        0.0,
        0,
        "stable",
    )
    add_execution(svc, active, [task("a", 60)])
    one = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost?period=1d").json()
    assert (one["executionCount"], one["totalCostUsd"], one["trend"]) == (1, 0.06, "stable")  # no trend of one
    assert acme.get(f"/v1/pipelines/{active['pipelineId']}/cost").json()["period"] == "30d"  # the default


@pytest.mark.parametrize("period", ["2w", "30", "0d", "", "365d"])
def test_an_unknown_period_is_400_naming_period(acme: Api, active: dict[str, Any], period: str) -> None:
    resp = acme.get(f"/v1/pipelines/{active['pipelineId']}/cost", params={"period": period})
    error = expect_error(resp, 400, "validation_error", path="period")
    assert "1d, 7d, 30d, 90d" in error["message"]


# -- budgets -------------------------------------------------------------------------------------------
def put_budget(api: Api, url: str, monthly: Any) -> dict[str, Any]:
    resp = api.put(url, json={"monthlyUsd": monthly})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_pipeline_budget_of_zero_refuses_executions(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    url = f"/v1/pipelines/{active['pipelineId']}/budget"
    assert acme.get(url).json()["monthlyUsd"] is None
    budget = put_budget(acme, url, 0)
    assert (budget["monthlyUsd"], budget["spentThisMonthUsd"], budget["remainingUsd"], budget["reached"]) == (
        0.0,
        0.0,
        0.0,
        True,
    )

    error = expect_error(acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={}), 409, "BUDGET_EXCEEDED")
    assert error["details"]["budget"] == "pipeline" and error["details"]["monthlyUsd"] == 0.0
    assert "daily-sales-etl" in error["message"] and "overrideBudget" in error["message"]
    assert acme.get("/v1/pipelines/executions").json()["total"] == 0  # nothing half-written

    editor = svc.api("acme", roles=("editor",))
    resp = editor.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={"overrideBudget": True})
    expect_error(resp, 403, "forbidden", path="overrideBudget")

    ex = acme.execute(active["pipelineId"], overrideBudget=True)
    assert ex["budgetOverride"] is True and ex["status"] == "QUEUED"
    assert acme.execution(ex["executionId"])["budgetOverride"] is True


def test_removing_the_budget_lets_executions_run(acme: Api, active: dict[str, Any]) -> None:
    url = f"/v1/pipelines/{active['pipelineId']}/budget"
    put_budget(acme, url, 0)
    removed = put_budget(acme, url, None)
    assert (removed["monthlyUsd"], removed["remainingUsd"], removed["reached"]) == (None, None, False)
    ex = acme.execute(active["pipelineId"])
    assert ex["budgetOverride"] is False


def test_a_budget_not_yet_reached_lets_executions_run(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    add_execution(svc, active, [task("a", 100)])  # 0.1 USD this month
    budget = put_budget(acme, f"/v1/pipelines/{active['pipelineId']}/budget", 0.5)
    assert (budget["spentThisMonthUsd"], budget["remainingUsd"], budget["reached"]) == (0.1, 0.4, False)
    acme.execute(active["pipelineId"])


def test_the_tenant_budget_counts_every_pipeline(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    other = acme.create_pipeline(example("second"))
    svc.publish()
    add_execution(svc, active, [task("a", 100)])  # 0.1 USD
    add_execution(svc, acme.pipeline(other["pipelineId"]), [task("a", 150)])  # 0.15 USD
    budget = put_budget(acme, "/v1/cost/budget", 0.25)
    assert (budget["scope"], budget["spentThisMonthUsd"], budget["reached"]) == ("tenant", 0.25, True)
    assert acme.get("/v1/cost/budget").json() == budget

    error = expect_error(acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={}), 409, "BUDGET_EXCEEDED")
    assert error["details"] == {
        "budget": "tenant",
        "pipelineId": None,
        "monthlyUsd": 0.25,
        "spentThisMonthUsd": 0.25,
        "month": f"{utcnow():%Y-%m}",
    }
    # Another tenant's budget and spending are its own.
    assert svc.api("other").get("/v1/cost/budget").json()["monthlyUsd"] is None
    put_budget(acme, "/v1/cost/budget", 1)
    acme.execute(active["pipelineId"])


def test_last_month_does_not_count(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    add_execution(svc, active, [task("a", 1000)], submitted_at=month_start(utcnow()) - timedelta(seconds=1))
    budget = put_budget(acme, f"/v1/pipelines/{active['pipelineId']}/budget", 0.5)
    assert (budget["spentThisMonthUsd"], budget["reached"]) == (0.0, False)


@pytest.mark.parametrize("body", [{"monthlyUsd": -1}, {"monthlyUsd": "5"}, {"monthlyUsd": True}, {}, {"usd": 1}])
def test_a_bad_budget_is_400_naming_monthly_usd(acme: Api, active: dict[str, Any], body: dict[str, Any]) -> None:
    for url in (f"/v1/pipelines/{active['pipelineId']}/budget", "/v1/cost/budget"):
        resp = acme.put(url, json=body)
        assert resp.status_code == 400, resp.text
        paths = [d["path"] for d in resp.json()["error"]["details"]]
        assert "monthlyUsd" in paths or "usd" in paths, paths
        assert acme.get(url).json()["monthlyUsd"] is None


def test_a_viewer_cannot_set_budgets(svc: Service, active: dict[str, Any]) -> None:
    viewer = svc.api("acme", roles=("viewer",))
    for url in (f"/v1/pipelines/{active['pipelineId']}/budget", "/v1/cost/budget"):
        expect_error(viewer.put(url, json={"monthlyUsd": 1}), 403, "forbidden")
        assert viewer.get(url).status_code == 200
    editor = svc.api("acme", roles=("editor",))
    assert editor.put("/v1/cost/budget", json={"monthlyUsd": 3}).json()["monthlyUsd"] == 3.0


# -- another tenant ------------------------------------------------------------------------------------
def test_another_tenant_sees_no_cost_and_no_budget(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    ex = add_execution(svc, active, [task("a", 10)])
    put_budget(acme, f"/v1/pipelines/{active['pipelineId']}/budget", 5)
    other = svc.api("other")
    pid = active["pipelineId"]
    for method, url in (
        ("GET", f"/v1/pipelines/executions/{ex}/cost"),
        ("GET", f"/v1/pipelines/{pid}/cost"),
        ("GET", f"/v1/pipelines/{pid}/budget"),
        ("PUT", f"/v1/pipelines/{pid}/budget"),
    ):
        expect_error(other.request(method, url, json={"monthlyUsd": 0}), 404, "not_found")
    assert acme.get(f"/v1/pipelines/{pid}/budget").json()["monthlyUsd"] == 5.0
    assert other.get("/v1/cost/budget").json()["spentThisMonthUsd"] == 0.0


def test_a_finished_execution_s_cost_is_settled_once_and_anew_after_a_retry(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    """The cost worker stores a finished run's cost as shown (SETTLE_AFTER after it finished); month sums read
    the stored cost in SQL and give the same answer as computing it; a run that finishes again is settled anew."""
    from service.cost.service import settle_step

    long_ago = utcnow() - timedelta(minutes=10)  # finished 5 minutes ago: past SETTLE_AFTER
    done = add_execution(svc, active, [task("a", 100), task("b", 20, pool="big")], submitted_at=long_ago)
    add_datasets(svc, active, done, "b", [("input", SALES, "s.public.t", None), ("output", WAREHOUSE, "w.a.t", GB)])
    running = add_execution(svc, active, [task("a", 50)], status="RUNNING")
    recent = add_execution(svc, active, [task("a", 10)])  # finishes in 5 minutes: not yet due
    path = f"/v1/pipelines/{active['pipelineId']}/budget"
    before = put_budget(acme, path, 100)["spentThisMonthUsd"]
    shown = cost_of(acme, done)

    assert settle_step(svc.app.state.sessions, RATES) == 1
    with svc.app.state.sessions() as s:
        row = s.get(Execution, done)
        assert row is not None and row.cost_settled_for == row.finished_at
        stored = (row.cost_compute_usd, row.cost_storage_usd, row.cost_network_usd)
        assert [float(v) for v in stored] == [shown["breakdown"][k] for k in ("compute", "storage", "network")]
        assert sum(stored) == Decimal("0.37")  # 100 s x 0.001 + 20 s x 0.01 + 1 GB x (0.05 + 0.02)
        assert all(s.get(Execution, e).cost_settled_for is None for e in (running, recent))  # type: ignore[union-attr]
    assert settle_step(svc.app.state.sessions, RATES) == 0  # settled once
    assert acme.get(path).json()["spentThisMonthUsd"] == before  # stored or computed: the same month

    # A retry that finishes again (a later finished_at): the stored cost no longer counts until settled anew.
    with svc.app.state.sessions.begin() as s:
        row = s.get(Execution, done)
        assert row is not None
        row.progress = {"tasks": [task("a", 200)]}
        row.finished_at = long_ago + timedelta(minutes=6)
    assert acme.get(path).json()["spentThisMonthUsd"] == pytest.approx(before - 0.37 + 0.2 + 0.07)
    assert settle_step(svc.app.state.sessions, RATES) == 1
    assert acme.get(path).json()["spentThisMonthUsd"] == pytest.approx(before - 0.37 + 0.2 + 0.07)
