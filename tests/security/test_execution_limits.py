"""Finding 5: max_active_runs and the per-minute rate limit are atomic. 30 executes at once, through two
service replicas sharing one database (SQLite and PostgreSQL), admit exactly as many as the limit allows."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.helpers import EXAMPLE, Api, Service

PARALLEL = 30


@pytest.fixture
def replica(svc: Service) -> Iterator[TestClient]:
    """A second app on the same database and settings: another replica of the service."""
    with TestClient(create_app(svc.settings)) as client:
        yield client


def _pipeline(acme: Api, name: str, max_active_runs: int) -> str:
    body = copy.deepcopy(EXAMPLE)
    body["name"] = name
    body["definition"]["orchestration"]["max_active_runs"] = max_active_runs
    return str(acme.create_pipeline(body)["pipelineId"])


def _execute_at_once(clients: list[TestClient], headers: dict[str, str], pipeline_id: str) -> Counter[int]:
    """PARALLEL executes released together by a barrier, alternating between the replicas: their statuses."""
    start = threading.Barrier(PARALLEL)

    def one(i: int) -> int:
        start.wait()
        client = clients[i % len(clients)]
        return client.post(f"/v1/pipelines/{pipeline_id}/execute", json={}, headers=headers).status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        return Counter(pool.map(one, range(PARALLEL)))


def _executions(acme: Api, pipeline_id: str) -> list[dict[str, Any]]:
    return list(acme.get("/v1/pipelines/executions", params={"pipelineId": pipeline_id, "size": 100}).json()["items"])


def test_max_active_runs_admits_exactly_one_of_30(svc: Service, replica: TestClient, acme: Api) -> None:
    """Check-then-insert let 6 of 30 through (SQLite ignores FOR UPDATE): now the check holds a lock row."""
    pipeline_id = _pipeline(acme, "one-at-a-time", max_active_runs=1)
    statuses = _execute_at_once([svc.client, replica], acme.headers, pipeline_id)
    assert statuses == Counter({202: 1, 409: PARALLEL - 1}), statuses
    assert len(_executions(acme, pipeline_id)) == 1


def test_rate_limit_admits_exactly_the_limit(svc: Service, replica: TestClient, acme: Api) -> None:
    """The per-minute budget is consumed under the tenant's lock row: 5 per minute means 5, however parallel."""
    svc.settings.execute_rate_per_minute = 5  # the settings object both replicas share
    pipeline_id = _pipeline(acme, "many-at-a-time", max_active_runs=PARALLEL + 1)
    statuses = _execute_at_once([svc.client, replica], acme.headers, pipeline_id)
    assert statuses == Counter({202: 5, 429: PARALLEL - 5}), statuses
    assert len(_executions(acme, pipeline_id)) == 5
