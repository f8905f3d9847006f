"""Engine, session-per-request (the request boundary owns the transaction) and migrations."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sqlalchemy import JSON, DateTime, Select, create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from service.errors import ValidationFailed

log = logging.getLogger(__name__)

# Connections per process, and how many requests may hold a session (a connection) at once; the rest is for
# the background workers and the event streams. A request of a sync route keeps its connection while it waits
# for a thread to validate its response; without this bound, under load every thread of the pool waited for
# a connection held by a request waiting for a thread, until the pool's 30 s timeout: 500s, a deadlock
# (fastapi/fastapi#3205, #12066; found by bench/load.py).
POOL_SIZE, POOL_OVERFLOW = 10, 30
REQUEST_SESSIONS = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW} if path and path != ":memory:" else {}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    migrations = Path(__file__).parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


def run_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once this session's transaction has committed (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a failed side effect must not turn a committed request into an error
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("after_commit", None)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work outside a request (background loops): commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@asynccontextmanager
async def session_slot(request: Request) -> AsyncIterator[None]:
    """One of the REQUEST_SESSIONS places of requests that hold a session, waited for without a thread."""
    state = request.app.state
    if getattr(state, "session_slots", None) is None:  # made in the serving event loop, on first use
        state.session_slots = anyio.Semaphore(REQUEST_SESSIONS)
    async with state.session_slots:
        yield


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session: committed when the route succeeds, rolled back otherwise (the database calls in
    a worker thread; shielded, so a client that goes away cannot leave the transaction open)."""
    async with session_slot(request):
        session = request.app.state.sessions()
        try:
            yield session
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.commit)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.rollback)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)


# scope="function": the commit happens before the response is sent. With the default scope FastAPI sends
# the response first, so a client could act on a 201 whose transaction is not (or never) committed.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


# Beyond this an OFFSET overflows the database's integer (a 500); no real listing is anywhere near it.
MAX_OFFSET = 2**31 - 1


def page(session: Session, stmt: Select[Any], *, offset: int, limit: int) -> tuple[Sequence[Any], int]:
    """One page of `stmt` (already ordered) and the total number of its rows: two queries, both in SQL."""
    if not 0 <= offset <= MAX_OFFSET or not 0 < limit <= MAX_OFFSET:
        raise ValidationFailed("page: out of range", details=[{"path": "page", "message": "out of range"}])
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    return session.scalars(stmt.offset(offset).limit(limit)).all(), total
