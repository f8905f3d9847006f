"""Admission of executions: the tenant's per-minute rate (PIPELINE_EXECUTE_RATE_PER_MINUTE) and the pipeline's
`orchestration.max_active_runs`, each checked and consumed atomically.

A check followed by an insert is a race: two requests both count N-1 and both insert. Each check therefore
first upserts its scope's row in `admission_locks`, and the write holds until the request's transaction ends:
- PostgreSQL: the upsert locks the row (a new key: the unique index makes the second inserter wait), so
  executes of one scope take turns across every replica; under READ COMMITTED the count that follows sees
  what the previous holder committed.
- SQLite: the upsert is the transaction's first write, so it takes the database's write lock (waiting up to
  the busy timeout); reads before it were outside any transaction, so the count reads the newest data.
Locks are always taken tenant first, then pipeline: two executes never wait on each other in a circle.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import utcnow
from service.errors import Conflict, RateLimited
from service.executions.models import AdmissionLock, Execution
from service.pipelines.models import Pipeline

ACTIVE_STATUSES = ("QUEUED", "RUNNING")  # service.QUEUED, service.RUNNING
WINDOW = timedelta(minutes=1)


def hold(session: Session, key: str) -> None:
    """Write the scope's lock row; the write lock lasts until the session's transaction commits or rolls back."""
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    now = utcnow()
    stmt = dialect.insert(AdmissionLock).values(key=key, locked_at=now)
    session.execute(stmt.on_conflict_do_update(index_elements=[AdmissionLock.key], set_={"locked_at": now}))


def admit_rate(session: Session, tenant_id: str, per_minute: int) -> None:
    """A rolling one-minute window over the tenant's own execution rows: every replica sees the same count."""
    hold(session, f"tenant:{tenant_id}")
    since = utcnow() - WINDOW
    count, oldest = session.execute(
        select(func.count(), func.min(Execution.submitted_at)).where(
            Execution.tenant_id == tenant_id, Execution.submitted_at >= since
        )
    ).one()
    if count < per_minute:
        return
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=since.tzinfo)
    wait = max(1, math.ceil((oldest - since).total_seconds()))
    raise RateLimited(
        f"tenant '{tenant_id}' may start {per_minute} executions per minute; retry in {wait} s",
        details={"limit": per_minute, "windowSeconds": 60, "retryAfterSeconds": wait},
        headers={"Retry-After": str(wait)},
    )


def admit_run(session: Session, pipeline: Pipeline, max_active_runs: int) -> None:
    """Conflict when the pipeline already has `max_active_runs` executions queued or running."""
    hold(session, f"pipeline:{pipeline.id}")
    active = session.scalar(
        select(func.count()).where(Execution.pipeline_id == pipeline.id, Execution.status.in_(ACTIVE_STATUSES))
    )
    if active and active >= max_active_runs:
        raise Conflict(
            f"pipeline '{pipeline.name}' already has {active} execution(s) in progress "
            f"and allows {max_active_runs} at a time (orchestration.max_active_runs)",
            details={"activeExecutions": active, "maxActiveRuns": max_active_runs},
        )
