"""Forwarding of accepted OpenLineage events to another OpenLineage backend (PIPELINE_OPENLINEAGE_FORWARD_URL,
e.g. Marquez): an outbox. The receiver marks each stored event `forward_pending` in the same transaction
that stores it, and a background loop (service/workers.py) delivers the bodies unchanged, oldest first, so
the receiver never waits on the backend and a restart loses nothing.

Safe on several replicas: the pending rows a loop takes are locked (SKIP LOCKED on PostgreSQL), another
replica takes the next ones. A failed delivery is retried with exponential back-off (2 s, 4 s, ... capped at
5 min); a rejection by the backend (a 4xx other than 408/429: it would reject it again) ends the event's
forwarding, its reason kept in `forward_error`. The API key is sent, never logged or stored.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import session_scope, utcnow
from service.lineage.models import LineageEvent

log = logging.getLogger(__name__)

BATCH = 100
MAX_BACKOFF_SECONDS = 300
RETRYABLE_4XX = frozenset({408, 425, 429})


def backoff(attempts: int) -> timedelta:
    """The wait before the next delivery after `attempts` failed ones."""
    return timedelta(seconds=min(2 ** min(attempts, 16), MAX_BACKOFF_SECONDS))


class Forwarder:
    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, transport: httpx.BaseTransport | None = None
    ):
        self.sessions, self.settings = sessions, settings
        self.client = httpx.Client(timeout=10, transport=transport)

    def close(self) -> None:
        self.client.close()

    def _target(self) -> tuple[str, dict[str, str]] | None:
        url = self.settings.openlineage_forward_url
        if not url:
            return None
        headers = {"Content-Type": "application/json"}
        if self.settings.openlineage_forward_api_key:
            headers["Authorization"] = f"Bearer {self.settings.openlineage_forward_api_key}"
        return url.rstrip("/") + "/api/v1/lineage", headers

    def step(self) -> int:
        """Deliver what is due, batch after batch, until nothing is or the backend fails; how many were."""
        target = self._target()
        if target is None:
            return 0
        delivered = 0
        while True:
            sent, complete = self._batch(*target)
            delivered += sent
            if not complete:
                return delivered

    def _batch(self, url: str, headers: dict[str, str]) -> tuple[int, bool]:
        """(delivered, whether the whole full batch went through: then there may be more)."""
        with session_scope(self.sessions) as s:
            due = list(
                s.scalars(
                    select(LineageEvent)
                    .where(
                        LineageEvent.forward_pending.is_(True),
                        or_(LineageEvent.forward_after.is_(None), LineageEvent.forward_after <= utcnow()),
                    )
                    .order_by(LineageEvent.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            sent = 0
            for event in due:
                if not self._deliver(event, url, headers):
                    return sent, False  # the backend is down or slow: the rest waits for the next tick
                sent += 1
            return sent, len(due) == BATCH

    def _deliver(self, event: LineageEvent, url: str, headers: dict[str, str]) -> bool:
        try:
            resp = self.client.post(url, content=event.payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
            self._failed(event, f"{type(exc).__name__}: {exc}")
            return False
        if resp.is_success:
            event.forward_pending, event.forward_error, event.forward_after = False, None, None
            return True
        reason = f"HTTP {resp.status_code}: {resp.text[:500]}"
        if 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX:
            log.warning("lineage event %s rejected by the forward target (%s): not retried", event.id, reason)
            event.forward_pending, event.forward_error = False, f"rejected: {reason}"
            event.forward_attempts += 1
            return True
        self._failed(event, reason)
        return False

    def _failed(self, event: LineageEvent, reason: str) -> None:
        event.forward_attempts += 1
        event.forward_after = utcnow() + backoff(event.forward_attempts)
        event.forward_error = reason[:2000]
        log.info("forwarding lineage event %s failed (attempt %d): %s", event.id, event.forward_attempts, reason)
