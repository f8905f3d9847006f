"""Per-process state of status reads, held on app.state (service.main) and handed to whoever needs it: the
cache of serialised status bodies (StatusCache) and the single-flight inline refresh (StatusRefresh)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from service.airflow.client import AirflowClient
from service.db import utcnow
from service.errors import AirflowUnavailable
from service.executions.models import TERMINAL, Execution
from service.executions.sync import refresh


class StatusCache:
    """Serialised status bodies per (tenant, execution) for a short time: polls of a finished execution, or
    of a running one within the status max age, cost no database read. Bounded; per process (a retry or
    reopen by another replica shows after at most `status_cache_seconds`).

    When an entry expires, the first poller to see it claims the refresh (`lookup`), and until it stores
    the new body the other pollers get the expired one: fifty clients polling one execution cause one
    database read per expiry, not fifty at the same instant."""

    MAX_ENTRIES = 10_000
    CLAIM_SECONDS = 5.0  # a refresh that has not finished by then is presumed lost: the next poller claims it

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._claims: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def lookup(self, key: tuple[str, str]) -> tuple[bytes | None, bool]:
        """(body, claimed): a fresh body; or an expired one while another caller refreshes it; or
        (None, True) when this caller must refresh it (then put() or release())."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1], False
        with self._lock:
            claimed_at = self._claims.get(key)
            if entry is not None and claimed_at is not None and now - claimed_at < self.CLAIM_SECONDS:
                return entry[1], False
            self._claims[key] = now
        return None, True

    def put(self, key: tuple[str, str], body: bytes, ttl: float) -> None:
        with self._lock:
            self._claims.pop(key, None)
            if ttl <= 0:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
                self._claims.clear()
            self._entries[key] = (time.monotonic() + ttl, body)

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._claims.pop(key, None)


class StatusRefresh:
    """Serve the stored row while it is fresh (the reconciler keeps it so); refresh it inline when stale.
    Single-flight per process: while one request refreshes an execution, the others answer from the row."""

    def __init__(self) -> None:
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def read_status(self, ex: Execution, airflow: AirflowClient, max_age_seconds: float) -> None:
        if ex.status in TERMINAL or not ex.submitted or not _stale(ex, max_age_seconds):
            return
        with self._lock:
            if ex.id in self._refreshing:
                return
            self._refreshing.add(ex.id)
        try:
            refresh(ex, airflow)
        except AirflowUnavailable:
            pass  # the stored state is still the best answer; the reconciler catches up later
        finally:
            with self._lock:
                self._refreshing.discard(ex.id)


def _stale(ex: Execution, max_age_seconds: float) -> bool:
    stamp = (ex.progress or {}).get("refreshedAt")
    if not stamp:
        return True
    return (utcnow() - datetime.fromisoformat(stamp)).total_seconds() > max_age_seconds
