"""The status fast path (service/executions/fastpath.py): a cached status is answered before FastAPI's
routing with the same authentication and body; everything else goes through the app."""

from __future__ import annotations

from typing import Any

import pytest

from service.auth import current_principal, mint_token
from service.executions.cache import StatusCache
from service.workers import reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, expect_error

EXECUTIONS = "/v1/pipelines/executions"


@pytest.fixture
def finished(svc: Service, acme: Api, active: dict[str, Any]) -> dict[str, Any]:
    """A COMPLETED execution whose status body is cached for a minute."""
    svc.settings.status_cache_seconds = 60
    execution = acme.execute(active["pipelineId"])
    svc.dispatch()
    tasks = dict.fromkeys(task_ids(EXAMPLE["definition"]), "success")
    svc.fake.set_run(execution["dagId"], execution["executionId"], "success", tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    body = acme.execution(execution["executionId"])  # through the app: stores the body
    assert body["status"] == "COMPLETED"
    return body


def _bypassed_app(svc: Service) -> None:
    """From now on a request that reaches the app's routes fails: only the fast path can answer 200."""

    def unreachable() -> None:
        raise AssertionError("the request went through the app")

    svc.app.dependency_overrides[current_principal] = unreachable


def test_a_cached_status_is_answered_before_the_app_with_the_same_body(
    svc: Service, acme: Api, finished: dict[str, Any]
) -> None:
    _bypassed_app(svc)
    resp = acme.get(f"{EXECUTIONS}/{finished['executionId']}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == finished


def test_the_fast_path_enforces_the_same_authentication(svc: Service, acme: Api, finished: dict[str, Any]) -> None:
    url = f"{EXECUTIONS}/{finished['executionId']}"
    token = svc.token("acme")
    # Each of these reaches the app, which renders the error (the cached body is never sent).
    expect_error(svc.client.get(url, headers={"X-Tenant-ID": "acme"}), 401, "unauthorized")
    expect_error(svc.client.get(url, headers={"Authorization": f"Bearer {token}"}), 400, "validation_error")
    wrong_header = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "globex"}
    expect_error(svc.client.get(url, headers=wrong_header), 403, "forbidden")
    expired = mint_token(svc.settings.resolved_jwt_secret(), tenant="acme", roles=["admin"], ttl=-5)
    expect_error(
        svc.client.get(url, headers={"Authorization": f"Bearer {expired}", "X-Tenant-ID": "acme"}), 401, "unauthorized"
    )
    forged = mint_token("not-the-secret-" * 3, tenant="acme", roles=["admin"])
    expect_error(
        svc.client.get(url, headers={"Authorization": f"Bearer {forged}", "X-Tenant-ID": "acme"}), 401, "unauthorized"
    )
    expect_error(svc.api("globex").get(url), 404, "not_found")  # the cache key holds the tenant


def test_a_cache_miss_or_a_query_string_goes_through_the_app(svc: Service, acme: Api, finished: dict[str, Any]) -> None:
    _bypassed_app(svc)
    with pytest.raises(AssertionError, match="went through the app"):
        acme.get(f"{EXECUTIONS}/{finished['executionId']}?pretty=1")
    with pytest.raises(AssertionError, match="went through the app"):
        acme.get(f"{EXECUTIONS}/exec-not-cached")


def test_an_expired_entry_is_refreshed_by_one_caller_while_the_others_get_the_old_body() -> None:
    cache, key = StatusCache(), ("acme", "exec-1")
    assert cache.lookup(key) == (None, True)  # nothing stored: the caller reads it
    cache.put(key, b"old", ttl=-1)  # stored nothing (ttl <= 0), but the claim is settled
    cache._entries[key] = (0.0, b"old")  # an entry that has expired
    assert cache.lookup(key) == (None, True)  # the first caller claims the refresh
    assert cache.lookup(key) == (b"old", False)  # the others meanwhile get the expired body
    cache.put(key, b"new", ttl=60)
    assert cache.lookup(key) == (b"new", False)
    cache._entries[key] = (0.0, b"new")
    assert cache.lookup(key) == (None, True)
    cache.release(key)  # the refresh failed (e.g. the execution is gone): the next caller claims it
    assert cache.lookup(key) == (None, True)
    cache.drop(key)
    assert cache.lookup(key) == (None, True)
