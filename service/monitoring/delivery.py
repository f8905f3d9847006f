"""Delivery of alert events to the tenants' webhooks: a durable queue (`alert_deliveries`) written in the
transaction that raised, acknowledged or resolved the alert, sent by the `alert-deliveries` worker.

Each delivery is one POST of the stored JSON body, unchanged, with the headers
- `X-Pipeline-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the webhook's secret>`,
- `X-Pipeline-Event: alert.raised | alert.acknowledged | alert.resolved`,
- `X-Pipeline-Delivery: <deliveryId>` (also in the body: a receiver can drop a repeat).
A 2xx answer delivers it. Anything else (another status, a timeout, a refused or unknown host) is retried
after 1, 2, 4, 8 ... seconds (doubling, capped at MAX_BACKOFF_SECONDS) until `max_attempts` attempts have
failed: then it is ABANDONED. The host is checked against the network policy of connections (the resolved
address, at each connect), so a webhook cannot make the service call its own endpoints or a private network
the operator has not opened.

Safe with several replicas: the due rows a worker sends are locked with SKIP LOCKED (PostgreSQL), another
replica takes the next ones. Requests never wait on a receiver: they only write rows and wake the worker
after their commit."""

from __future__ import annotations

import hashlib
import hmac
import logging
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from connections.pinned import policy_client
from service.db import run_after_commit, session_scope, utcnow
from service.monitoring import repository
from service.monitoring.models import AlertDelivery
from service.monitoring.repository import ABANDONED, DELIVERED
from service.secrets import Vault

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pipeline-Signature"
EVENT_HEADER = "X-Pipeline-Event"
DELIVERY_HEADER = "X-Pipeline-Delivery"
MAX_BACKOFF_SECONDS = 300
BATCH = 50


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, body), header)


def backoff(failed_attempts: int) -> timedelta:
    """The wait after the n-th failed attempt: 1 s, 2 s, 4 s, ... capped at MAX_BACKOFF_SECONDS."""
    return timedelta(seconds=min(2 ** max(failed_attempts - 1, 0), MAX_BACKOFF_SECONDS))


def seal_secret(vault: Vault, secret: str) -> str:
    return vault.seal_headers({"secret": secret})


def open_secret(vault: Vault, sealed: str) -> str:
    return vault.open_headers(sealed)["secret"]


# The wake-up of each app's delivery worker, by the app's engine: a hook runs in whichever app's session
# saw the execution finish (tests run several apps in one process).
_wakers: weakref.WeakKeyDictionary[Engine, Callable[[], None]] = weakref.WeakKeyDictionary()


def register_waker(engine: Engine, wake: Callable[[], None]) -> None:
    _wakers[engine] = wake


def wake_after_commit(session: Session) -> None:
    """Wake the delivery worker once this session's transaction has committed (the rows are then visible)."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    wake = _wakers.get(engine)
    if wake is not None:  # once per queued event at most: setting an Event twice costs nothing
        run_after_commit(session, wake)


class Deliverer:
    """One process's sender of due deliveries (the `alert-deliveries` worker's step)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        vault: Vault,
        metrics: Any,
        *,
        policy: Any = None,
        timeout_seconds: float = 5.0,
        max_attempts: int = 10,
        transport: httpx.BaseTransport | None = None,
    ):
        self.sessions, self.vault, self.metrics = sessions, vault, metrics
        self.max_attempts = max_attempts
        if transport is not None:  # tests: a mock transport
            self.client = httpx.Client(transport=transport, timeout=timeout_seconds, follow_redirects=False)
        else:
            self.client = policy_client(policy, timeout=timeout_seconds)

    def close(self) -> None:
        self.client.close()

    def step(self) -> int:
        """Send every due delivery, batch after batch; how many were delivered."""
        delivered = 0
        while True:
            with session_scope(self.sessions) as s:
                due = repository.due_deliveries(s, utcnow(), BATCH)
                for delivery in due:
                    delivered += self._send(s, delivery)
            if len(due) < BATCH:
                return delivered

    def _send(self, session: Session, delivery: AlertDelivery) -> int:
        hook = repository.get_webhook(session, delivery.tenant_id, delivery.webhook_id)
        body = delivery.body.encode()
        delivery.attempts += 1
        try:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "pipeline-service-alerts/1",
                SIGNATURE_HEADER: sign(open_secret(self.vault, hook.secret_encrypted), body),
                EVENT_HEADER: delivery.event,
                DELIVERY_HEADER: delivery.id,
            }
            resp = self.client.post(hook.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL, RuntimeError) as exc:
            # RuntimeError: the secret cannot be decrypted (the encryption key changed); the message says so
            # without the secret. One bad row must not stop the queue: it fails, the rest go on.
            self._failed(delivery, f"{type(exc).__name__}: {exc}"[:1000], None)
            return 0
        if resp.is_success:
            delivery.status, delivery.delivered_at = DELIVERED, utcnow()
            delivery.response_status, delivery.last_error = resp.status_code, None
            self.metrics.alert_delivered()
            return 1
        self._failed(delivery, f"HTTP {resp.status_code}", resp.status_code)
        return 0

    def _failed(self, delivery: AlertDelivery, reason: str, status: int | None) -> None:
        delivery.last_error, delivery.response_status = reason, status
        abandoned = delivery.attempts >= self.max_attempts
        if abandoned:
            delivery.status = ABANDONED
        else:
            delivery.next_attempt_at = utcnow() + backoff(delivery.attempts)
        self.metrics.alert_delivery_failed(abandoned=abandoned)
        log.info(
            "alert delivery %s to webhook %s failed (attempt %d%s): %s",
            delivery.id,
            delivery.webhook_id,
            delivery.attempts,
            ", abandoned" if abandoned else "",
            reason,
        )
