"""Cost and budgets through a real Airflow: the example's run costs its tasks' run time (and the bytes its
OpenLineage events report, where they do) at the configured rates, the sums add up, a budget of 0 refuses the
next execution unless an admin overrides it, and another tenant sees none of it."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, example, run_to_end

pytestmark = pytest.mark.e2e


def micro(value: float) -> int:
    return int(Decimal(repr(value)) * 1_000_000)


def assert_adds_up(cost: dict[str, Any]) -> None:
    parts = cost["breakdown"]
    assert all(v >= 0 for v in parts.values()) and cost["totalCostUsd"] >= 0, cost
    assert micro(cost["totalCostUsd"]) == sum(micro(v) for v in parts.values()), cost
    for part in ("compute", "storage", "network") if "tasks" in cost else ():
        assert micro(parts[part]) == sum(micro(t[f"{part}Usd"]) for t in cost["tasks"]), (part, cost)


def test_execution_and_pipeline_cost_budgets_and_isolation(tenant: httpx.Client, running: harness.Running) -> None:
    pipeline = create_active(tenant, example("costed", "qa.costed"))
    pid = pipeline["pipelineId"]
    done = run_to_end(tenant, pid)
    assert done["status"] == "COMPLETED", done
    eid = done["executionId"]

    resp = tenant.get(f"/v1/pipelines/executions/{eid}/cost")
    assert resp.status_code == 200, resp.text
    cost = resp.json()
    assert (cost["executionId"], cost["pipelineId"], cost["status"], cost["live"]) == (eid, pid, "COMPLETED", False)
    assert cost["rates"] == tenant.get("/v1/cost/rate-card").json()
    assert cost["breakdown"]["compute"] > 0, cost
    assert_adds_up(cost)
    tasks = {t["taskId"]: t for t in cost["tasks"]}
    assert {t["taskId"] for t in done["tasks"]} <= set(tasks), (done["tasks"], cost["tasks"])
    load = tasks["sinks.daily_transactions"]
    assert load["durationSeconds"] > 0 and load["computeUsd"] > 0 and load["pool"] == "default_pool", load
    # Storage is charged exactly when OpenLineage reported bytes written; both connections are on one host
    # (127.0.0.1:5432), so nothing is charged as moved between hosts.
    assert (cost["breakdown"]["storage"] > 0) == any(t["bytesWritten"] > 0 for t in cost["tasks"]), cost
    assert cost["breakdown"]["network"] == 0 and all(t["bytesMoved"] == 0 for t in cost["tasks"]), cost
    rate = cost["rates"]["computeUsdPerTaskSecond"]
    assert load["computeUsd"] == pytest.approx(load["durationSeconds"] * rate, abs=1e-6)

    summary = tenant.get(f"/v1/pipelines/{pid}/cost", params={"period": "1d"}).json()
    assert (summary["pipelineId"], summary["period"], summary["executionCount"]) == (pid, "1d", 1), summary
    assert_adds_up(summary)
    assert (summary["totalCostUsd"], summary["breakdown"]) == (cost["totalCostUsd"], cost["breakdown"])
    assert (summary["costPerExecution"], summary["trend"]) == (summary["totalCostUsd"], "stable")
    assert summary["projectedMonthUsd"] >= summary["monthToDateUsd"] > 0
    assert tenant.get(f"/v1/pipelines/{pid}/cost", params={"period": "week"}).status_code == 400

    # Another tenant: the execution's and the pipeline's cost do not exist.
    stranger = running.client(tenant="t" + uuid.uuid4().hex[:10])
    for url in (f"/v1/pipelines/executions/{eid}/cost", f"/v1/pipelines/{pid}/cost", f"/v1/pipelines/{pid}/budget"):
        resp = stranger.get(url)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", (url, resp.text)

    # A budget of 0 is reached at once: executing is refused; an editor may not override it, an admin may.
    budget = tenant.put(f"/v1/pipelines/{pid}/budget", json={"monthlyUsd": 0})
    assert budget.status_code == 200 and budget.json()["reached"] is True, budget.text
    assert budget.json()["spentThisMonthUsd"] == summary["monthToDateUsd"]
    refused = tenant.post(f"/v1/pipelines/{pid}/execute", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "BUDGET_EXCEEDED", refused.text
    assert refused.json()["error"]["details"]["budget"] == "pipeline"
    editor = running.client(tenant=tenant.headers["X-Tenant-ID"], roles=("editor",))
    assert editor.post(f"/v1/pipelines/{pid}/execute", json={"overrideBudget": True}).status_code == 403

    overridden = tenant.post(f"/v1/pipelines/{pid}/execute", json={"overrideBudget": True})
    assert overridden.status_code == 202 and overridden.json()["budgetOverride"] is True, overridden.text
    # Cost is live while the run goes: running tasks count up to now.
    cost_url = f"/v1/pipelines/executions/{overridden.json()['executionId']}/cost"
    live = harness.wait_for(
        lambda: tenant.get(cost_url).json(),
        lambda c: c["status"] == "RUNNING" and c["breakdown"]["compute"] > 0,
        120,
        0.5,
    )
    assert live["live"] is True, live
    second = harness.wait_for(
        lambda: tenant.get(f"/v1/pipelines/executions/{overridden.json()['executionId']}").json(),
        lambda e: e["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
        180,
        1.0,
    )
    assert second["status"] == "COMPLETED" and second["budgetOverride"] is True, second
    after = tenant.get(f"/v1/pipelines/{pid}/cost", params={"period": "1d"}).json()
    again = tenant.get(f"/v1/pipelines/executions/{second['executionId']}/cost").json()
    assert after["executionCount"] == 2 and again["live"] is False, (after, again)
    assert again["breakdown"]["compute"] >= live["breakdown"]["compute"], (live, again)
    assert micro(after["totalCostUsd"]) == micro(cost["totalCostUsd"]) + micro(again["totalCostUsd"]), after
