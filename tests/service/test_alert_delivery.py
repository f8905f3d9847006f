"""Alert webhooks: CRUD (editor/admin, audit-logged, the secret encrypted and never shown), URL checks by the
network policy, and delivery from the durable queue: one signed POST per event and webhook, retried with
exponential back-off, abandoned after the last attempt, delivered after a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from service.audit.models import AuditEntry
from service.main import create_app
from service.monitoring import delivery
from service.monitoring.delivery import Deliverer, backoff, sign, verify
from service.monitoring.models import AlertDelivery, AlertWebhook
from tests.service.helpers import Api, Service, expect_error
from tests.service.test_alerts import fail, succeed

HOOKS = "/v1/pipelines/monitoring/webhooks"
ALERTS = "/v1/pipelines/monitoring/alerts"
SECRET = "whsec-Qm7-never-shown-0123456789"
URL = "https://hooks.example.com/alerts"


@pytest.fixture(autouse=True)
def clean(svc: Service) -> None:
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0
    with svc.app.state.engine.begin() as conn:
        for table in ("alert_deliveries", "alert_webhooks", "alerts", "budgets"):
            conn.execute(text(f"DELETE FROM {table}"))


class Receiver:
    """What the webhook's server got; answers `statuses` in turn (then 200)."""

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def deliverer(svc: Service, handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Deliverer:
    state = svc.app.state
    return Deliverer(state.sessions, state.vault, state.metrics, transport=httpx.MockTransport(handler), **kwargs)


def create_hook(api: Api, **fields: Any) -> dict[str, Any]:
    resp = api.post(HOOKS, json={"name": "ops", "url": URL, "secret": SECRET} | fields)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def deliveries(svc: Service) -> list[AlertDelivery]:
    with svc.app.state.sessions() as s:
        return list(s.scalars(select(AlertDelivery).order_by(AlertDelivery.created_at, AlertDelivery.id)))


def counter(svc: Service, outcome: str) -> float:
    value = svc.app.state.metrics.registry.get_sample_value("pipeline_alert_deliveries_total", {"outcome": outcome})
    return float(value or 0)


# -- CRUD -------------------------------------------------------------------------------------------------
def test_crud_never_shows_the_secret(svc: Service, acme: Api) -> None:
    hook = create_hook(acme, severities=["CRITICAL"])
    assert hook["secretSet"] is True and "secret" not in hook
    assert (hook["name"], hook["url"], hook["severities"], hook["enabled"]) == ("ops", URL, ["CRITICAL"], True)
    hook_id = hook["webhookId"]
    assert acme.get(f"{HOOKS}/{hook_id}").json() == hook
    assert [h["webhookId"] for h in acme.get(HOOKS).json()] == [hook_id]
    changed = acme.patch(
        f"{HOOKS}/{hook_id}", {"enabled": False, "severities": None, "secret": SECRET + "-2"}, "application/json"
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["enabled"], changed.json()["severities"]) == (False, None)
    with svc.app.state.sessions() as s:
        stored = s.get(AlertWebhook, hook_id)
        assert stored is not None and SECRET not in stored.secret_encrypted
        assert delivery.open_secret(svc.app.state.vault, stored.secret_encrypted) == SECRET + "-2"
        entries = s.scalars(select(AuditEntry).where(AuditEntry.resource_type == "webhook")).all()
    assert acme.delete(f"{HOOKS}/{hook_id}").status_code == 204
    expect_error(acme.get(f"{HOOKS}/{hook_id}"), 404, "not_found")
    with svc.app.state.sessions() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.resource_id == hook_id)).all()
    assert [e.action for e in entries] == ["create", "update", "delete"]
    assert SECRET not in json.dumps([[e.before, e.after, e.details] for e in entries])
    for resp in (acme.get(HOOKS), acme.get(f"{HOOKS}/{hook_id}")):
        assert SECRET not in resp.text


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "http://10.1.2.3:9000/x"}, "url"),  # private: outside PIPELINE_ALLOWED_NETWORKS
        ({"url": "http://169.254.169.254/latest"}, "url"),  # cloud metadata: never
        ({"url": "http://127.0.0.1:8000/x"}, "url"),  # the service's own endpoint
        ({"url": "https://hooks.example.com/\x00"}, "url"),
        ({"url": "http://[::1/x"}, "url"),
        ({"url": "http://hooks.example.com:99999/x"}, "url"),
        ({"secret": "short"}, "secret"),
        ({"secret": "sixteen-chars-and-a-NUL\x00"}, "secret"),
        ({"severities": ["LOUD"]}, "severities[0]"),
        ({"severities": []}, "severities"),
        ({"name": ""}, "name"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_webhooks_are_400_naming_the_field(acme: Api, body: dict[str, Any], path: str) -> None:
    resp = acme.post(HOOKS, json={"name": "ops", "url": URL, "secret": SECRET} | body)
    error = expect_error(resp, 400, "validation_error", path)
    assert SECRET not in json.dumps(error)


def test_patch_checks_fields_too(acme: Api) -> None:
    hook_id = create_hook(acme)["webhookId"]
    url = f"{HOOKS}/{hook_id}"
    expect_error(acme.patch(url, {"url": "http://10.0.0.1/x"}, "application/json"), 400, "validation_error", "url")
    expect_error(acme.patch(url, {"name": None}, "application/json"), 400, "validation_error", "name")


def test_viewers_read_but_cannot_manage_webhooks_and_tenants_are_apart(svc: Service, acme: Api) -> None:
    hook_id = create_hook(acme)["webhookId"]
    viewer = svc.api("acme", ("viewer",))
    assert [h["webhookId"] for h in viewer.get(HOOKS).json()] == [hook_id]
    expect_error(viewer.post(HOOKS, json={"name": "x", "url": URL, "secret": SECRET}), 403, "forbidden")
    expect_error(viewer.delete(f"{HOOKS}/{hook_id}"), 403, "forbidden")
    other = svc.api("globex")
    assert other.get(HOOKS).json() == []
    expect_error(other.get(f"{HOOKS}/{hook_id}"), 404, "not_found")
    expect_error(other.patch(f"{HOOKS}/{hook_id}", {"enabled": False}, "application/json"), 404, "not_found")
    expect_error(other.delete(f"{HOOKS}/{hook_id}"), 404, "not_found")
    expect_error(other.get(f"{HOOKS}/{hook_id}/deliveries"), 404, "not_found")
    assert acme.get(f"{HOOKS}/{hook_id}").status_code == 200


# -- delivery ---------------------------------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"event":"alert.raised"}'
    assert sign("k" * 16, body) == "sha256=" + __import__("hmac").new(b"k" * 16, body, "sha256").hexdigest()
    assert verify("k" * 16, body, sign("k" * 16, body))
    assert not verify("k" * 16, body + b" ", sign("k" * 16, body))


def test_backoff_doubles_from_one_second_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_raise_acknowledge_resolve_are_each_delivered_signed(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    create_hook(acme)
    create_hook(acme, name="warnings-only", severities=["WARNING"])  # takes none of these CRITICAL events
    create_hook(acme, name="off", enabled=False)
    svc.api("globex").post(HOOKS, json={"name": "theirs", "url": URL, "secret": SECRET})
    receiver = Receiver()
    sender = deliverer(svc, receiver)
    fail(svc, acme, active)
    alert = acme.get(ALERTS).json()["items"][0]
    assert acme.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={"note": "mine"}).status_code == 200
    succeed(svc, acme, active)
    assert sender.step() == 3
    assert [b["event"] for b in receiver.bodies()] == ["alert.raised", "alert.acknowledged", "alert.resolved"]
    for request, body in zip(receiver.requests, receiver.bodies(), strict=True):
        assert str(request.url) == URL
        assert verify(SECRET, request.content, request.headers["X-Pipeline-Signature"])
        assert request.headers["X-Pipeline-Event"] == body["event"]
        assert request.headers["X-Pipeline-Delivery"] == body["deliveryId"]
        assert body["tenantId"] == "acme" and body["alert"]["alertId"] == alert["alertId"]
        assert SECRET not in request.content.decode()
    assert [b["alert"]["status"] for b in receiver.bodies()] == ["OPEN", "ACKNOWLEDGED", "RESOLVED"]
    assert receiver.bodies()[1]["alert"]["acknowledgedNote"] == "mine"
    assert sender.step() == 0  # delivered once
    assert counter(svc, "delivered") == 3
    assert {d.status for d in deliveries(svc)} == {"DELIVERED"}


def test_failures_are_retried_with_backoff_then_abandoned(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    create_hook(acme)
    receiver = Receiver(500, 503)
    sender = deliverer(svc, receiver, max_attempts=3)
    fail(svc, acme, active)
    assert sender.step() == 0
    [queued] = deliveries(svc)
    assert (queued.status, queued.attempts, queued.last_error, queued.response_status) == (
        "PENDING",
        1,
        "HTTP 500",
        500,
    )
    assert timedelta(seconds=0.5) < queued.next_attempt_at - queued.created_at < timedelta(seconds=3)
    assert sender.step() == 0  # not due yet: no attempt
    assert len(receiver.requests) == 1
    due_now(svc)
    assert sender.step() == 0
    [queued] = deliveries(svc)
    assert (queued.attempts, queued.response_status) == (2, 503)
    due_now(svc)
    assert sender.step() == 1  # third attempt: 200
    assert (counter(svc, "failed"), counter(svc, "delivered")) == (2, 1)
    # A receiver that never answers well: abandoned after max_attempts, counted once as abandoned.
    receiver.statuses = [500] * 10
    succeed(svc, acme, active)
    for _ in range(3):
        due_now(svc)
        sender.step()
    last = deliveries(svc)[-1]
    assert (last.status, last.attempts) == ("ABANDONED", 3)
    assert counter(svc, "abandoned") == 1
    due_now(svc)
    assert sender.step() == 0 and len(receiver.requests) == 6


def test_an_unreachable_host_is_a_failed_attempt_not_an_error(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    create_hook(acme)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("hooks.example.com:443 is refused by the network policy", request=request)

    sender = deliverer(svc, refuse)
    fail(svc, acme, active)
    assert sender.step() == 0
    [queued] = deliveries(svc)
    assert queued.status == "PENDING" and "refused by the network policy" in (queued.last_error or "")
    listing = acme.get(f"{HOOKS}/{queued.webhook_id}/deliveries").json()
    assert [(d["status"], d["attempts"]) for d in listing] == [("PENDING", 1)]


def test_the_real_sender_refuses_private_hosts_by_the_network_policy(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    hook_id = create_hook(acme)["webhookId"]
    with svc.app.state.engine.begin() as conn:  # stored before the policy changed, say
        conn.execute(text("UPDATE alert_webhooks SET url = 'http://10.1.2.3:9/x' WHERE id = :id"), {"id": hook_id})
    fail(svc, acme, active)
    svc.app.state.alert_deliverer.step()
    [queued] = deliveries(svc)
    assert queued.attempts == 1 and "network policy" in (queued.last_error or ""), queued.last_error


def test_a_delivery_queued_before_a_restart_is_delivered_after_it(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    create_hook(acme)
    fail(svc, acme, active)
    assert [d.status for d in deliveries(svc)] == ["PENDING"]
    # A new process on the same database (and key): the queue is in the database.
    app = create_app(svc.settings)
    with TestClient(app):
        receiver = Receiver()
        state = app.state
        sender = Deliverer(state.sessions, state.vault, state.metrics, transport=httpx.MockTransport(receiver))
        assert sender.step() == 1
    assert receiver.bodies()[0]["event"] == "alert.raised"
    assert verify(SECRET, receiver.requests[0].content, receiver.requests[0].headers["X-Pipeline-Signature"])


def test_a_commit_that_queues_a_delivery_wakes_the_worker(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    create_hook(acme)
    woken: list[int] = []
    delivery.register_waker(svc.app.state.engine, lambda: woken.append(1))
    fail(svc, acme, active)
    assert woken == [1]


def due_now(svc: Service) -> None:
    with svc.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE alert_deliveries SET next_attempt_at = created_at"))
