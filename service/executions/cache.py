"""Per-process state of status reads, held on app.state (service.main) and handed to whoever needs it: the
cache of serialised status bodies (StatusCache) and the batched refresh of active executions that status
reads and the reconciler share (StatusRefresh)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from service.airflow.client import AirflowClient
from service.db import session_scope, utcnow
from service.errors import ServiceError
from service.executions.models import TERMINAL, Execution
from service.executions.sync import refresh_active

log = logging.getLogger(__name__)


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
    """Keeps the rows of active executions fresh for status reads, in batches (sync.refresh_active): a read
    that finds its row older than the max age refreshes every active execution at once, unless a refresh
    is under way in this process (then it answers from the row). Fifty clients polling fifty executions
    cost Airflow two calls per max age, not a hundred. The reconciler's tick runs the same batch."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._lock = threading.Lock()
        self._last_batch = float("-inf")  # monotonic start of the last batch that completed

    def stale(self, ex: Execution, max_age_seconds: float) -> bool:
        """Whether a read of `ex` should refresh first: it is active, and neither its row nor this
        process's last batch (which skips runs Airflow still queues as before) is younger than the max age."""
        if ex.status in TERMINAL or not ex.submitted:
            return False
        stamp = (ex.progress or {}).get("refreshedAt")
        if not stamp:
            return True  # submitted after the last batch began
        if (utcnow() - datetime.fromisoformat(stamp)).total_seconds() <= max_age_seconds:
            return False
        return time.monotonic() - self._last_batch > max_age_seconds

    def refresh_active(self, airflow: AirflowClient) -> bool:
        """One batch, unless one is under way in this process. True when this call refreshed (re-read the row);
        False when it did not, or Airflow did not answer (the stored state is the best answer then)."""
        if not self._lock.acquire(blocking=False):
            return False
        started = time.monotonic()
        try:
            with session_scope(self.sessions) as s:
                refresh_active(s, airflow)
            self._last_batch = started
            return True
        except ServiceError as exc:  # unreachable, or an HTTP 5xx (its metadata database busy): next time
            log.info("status refresh: %s", exc.message)
            return False
        finally:
            self._lock.release()
